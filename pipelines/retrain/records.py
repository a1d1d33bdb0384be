"""The loop's two inputs as tables: labeled examples and accepted behaviors, with repeats dropped.

The stream job's topics are at-least-once: after a restore it sends some records again, byte for
byte. Each example is known by a digest of its bytes, remembered for ``horizon_ms`` of event time;
a record seen before is a repeat and dropped (and counted, so a window made mostly of repeats is
caught as a replay). Behaviors are known by their event_id, as in the backfill's log.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, UNKNOWN_CATEGORY, Event
from features.tables import BEHAVIOR_LOG_SCHEMA
from features.validate import parse_event

EXAMPLE_FIELDS = ("user_id", "item_id", "category_id", "timestamp", "label", "label_ms")
WINDOW_SCHEMA = pa.schema([pa.field(name, pa.int64()) for name in EXAMPLE_FIELDS])


@dataclass
class Seen:
    """Digests of the examples already taken (hex -> event time), forgotten after the horizon."""

    horizon_ms: int
    digests: dict[str, int] = field(default_factory=dict)

    def forget_before(self, newest_ms: int) -> None:
        cut = newest_ms - self.horizon_ms
        self.digests = {d: t for d, t in self.digests.items() if t >= cut}


@dataclass
class Parsed:
    """One window's records as a table, with its counts."""

    table: pa.Table
    raw: int = 0
    duplicates: int = 0
    unreadable: int = 0
    digests: dict[str, int] = field(default_factory=dict)  # the new records' digests (kept once trained)


def parse_examples(values: list[bytes], seen: Seen) -> Parsed:
    """Example records (JSON objects with EXAMPLE_FIELDS) -> WINDOW_SCHEMA rows, nulls where a field
    is missing or not an integer; malformed records are counted as unreadable, repeats (already
    seen, or twice in this window) as duplicates."""
    columns: dict[str, list] = {name: [] for name in EXAMPLE_FIELDS}
    out = Parsed(pa.table({}), raw=len(values))
    for value in values:
        digest = hashlib.blake2b(value or b"", digest_size=16).hexdigest()
        if digest in seen.digests or digest in out.digests:
            out.duplicates += 1
            continue
        try:
            record = json.loads(value)
        except (ValueError, TypeError):
            out.unreadable += 1
            continue
        if not isinstance(record, dict):
            out.unreadable += 1
            continue
        for name in EXAMPLE_FIELDS:
            v = record.get(name)
            columns[name].append(v if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63 else None)
        out.digests[digest] = columns["timestamp"][-1] or 0
    out.table = pa.table({name: pa.array(columns[name], pa.int64()) for name in EXAMPLE_FIELDS}, schema=WINDOW_SCHEMA)
    return out


def parse_behaviors(values: list[bytes], known: set[str],
                    event_types: frozenset[str] = BEHAVIOR_TYPES) -> tuple[pa.Table, int, int]:
    """Accepted records (raw events as the stream job passed them) -> behavior-log rows of the
    given types, one per event_id not in ``known`` (which it extends). Returns (rows, repeats,
    unreadable); every accepted record validated once, so an unreadable one is a bug upstream."""
    rows: list[Event] = []
    repeats = unreadable = 0
    for value in values:
        got = parse_event(value)
        if not isinstance(got, Event):
            unreadable += 1
            continue
        if got.event_id in known:
            repeats += 1
            continue
        known.add(got.event_id)
        if got.event_type in event_types:
            rows.append(got)
    table = pa.table({
        "user_id": pa.array([e.user_id for e in rows], pa.int64()),
        "timestamp": pa.array([e.timestamp for e in rows], pa.int64()),
        "event_id": pa.array([e.event_id for e in rows], pa.string()),
        "item_id": pa.array([e.item_id for e in rows], pa.int64()),
        "category_id": pa.array([UNKNOWN_CATEGORY if e.category_id is None else e.category_id for e in rows],
                                pa.int64()),
        "event_type_code": pa.array([EVENT_TYPE_CODE[e.event_type] for e in rows], pa.int32()),
    }, schema=BEHAVIOR_LOG_SCHEMA)
    return table, repeats, unreadable


def trainable(table: pa.Table) -> pa.Table:
    """The rows a model can learn from: every example field present, label 0 or 1."""
    if table.num_rows == 0:
        return table
    ok = np.ones(table.num_rows, bool)
    for name in ("user_id", "item_id", "timestamp", "label"):
        ok &= ~np.asarray(table.column(name).is_null().to_numpy(zero_copy_only=False), bool)
    labels = table.column("label").fill_null(-1).to_numpy()
    ok &= (labels == 0) | (labels == 1)
    out = table.filter(pa.array(ok))
    return out.set_column(out.schema.get_field_index("category_id"), "category_id",
                          out.column("category_id").fill_null(UNKNOWN_CATEGORY))
