"""What `recstream online` prints: a compact block per user for people (raw IDs, ISO times), or
JSON for machines (every feature, with the raw IDs beside the hashed ones)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from features.id_dictionary import IdDictionary
from features.schema import EVENT_TYPES

RECENT_SHOWN = 5
WINDOWS = ("1h", "1d", "7d", "life")


@dataclass
class UserRead:
    given: str  # the ID as the user typed it
    user_id: int  # hashed
    raw: str | None  # the run's raw ID for it (None where the run has no dictionary entry)
    given_hashed: bool
    features: dict  # read_user_features' value for the user


def iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def as_json(reads: list[UserRead], items: IdDictionary) -> dict:
    out = {}
    for r in reads:
        features = {}
        for view, row in r.features.items():
            if row is not None and "seq_item_ids" in row:
                row = {**row, "seq_raw_item_ids": items.raw(row["seq_item_ids"]).to_pylist()}
            features[view] = row
        out[r.given] = {"user_id": r.user_id, "raw_user_id": r.raw, "given_hashed": r.given_hashed, **features}
    return out


def as_text(reads: list[UserRead], items: IdDictionary, now_ms: int) -> str:
    return "\n".join(line for r in reads for line in _block(r, items, now_ms))


def _block(r: UserRead, items: IdDictionary, now_ms: int) -> list[str]:
    name = r.raw if r.raw is not None else r.given
    head = f"user {name}" + (f" (given as hashed ID {r.user_id})" if r.given_hashed else f"  [id {r.user_id}]")
    lifelong, recent, stats = (r.features.get(v) for v in ("user_sequence", "user_recent", "user_stats"))
    if lifelong is None and recent is None and stats is None:
        return [f"{head}: not in the online store"]
    lines = [head]
    if lifelong is not None:
        lines.append(f"  lifelong: {lifelong['seq_length']:,} behaviors, last {iso(lifelong.get('last_event_ms'))}")
    if recent is not None:
        shown = list(zip(recent["seq_item_ids"], recent["seq_event_types"], recent["seq_timestamps"]))
        shown = shown[::-1][:RECENT_SHOWN]  # newest first
        raws = items.raw([i for i, _, _ in shown]).to_pylist()
        lines.append("  recent (newest first): " + ", ".join(
            f"{raw if raw is not None else item} {_type(kind)} {iso(ts)}"
            for (item, kind, ts), raw in zip(shown, raws)))
    if stats is not None:
        lines.append(f"  as of {iso(now_ms)}: " + "; ".join(
            f"{what} " + " ".join(f"{w} {stats[f'{what}_{w}']:,}" for w in WINDOWS)
            for what in ("behaviors", "clicks", "impressions")) + f"; ctr 7d {stats['ctr_7d']:.3f}")
    return lines


def _type(code: int) -> str:
    return EVENT_TYPES[code - 1] if 1 <= code <= len(EVENT_TYPES) else f"type {code}"
