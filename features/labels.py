"""Training-example builders over one user's time-sorted events.

Two labelings:
- impression_click: an impression is positive if the same user clicks the same
  item within ``window_ms`` after it (the attribution window).
- next_item: every behavior is a positive for its item, with ``negatives``
  drawn (seeded, per event) point in time (features/negatives.py): among the
  items that exist by then (uniformly, or by their popularity by then) that the
  user had not interacted with by then.
An example carries (user_id, item_id, category_id, timestamp, label); its
sequence is a slice of the behavior log as of ``timestamp`` (see pit.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pyarrow as pa

from features.negatives import SAMPLINGS, ItemPool
from features.schema import BEHAVIOR_TYPES, UNKNOWN_CATEGORY, Event

EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category_id", pa.int64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
    ]
)

Example = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class LabelPolicy:
    kind: Literal["impression_click", "next_item"] = "impression_click"
    window_ms: int = 30 * 60 * 1000
    negatives: int = 1
    min_history: int = 1
    seed: int = 0
    sampling: Literal["uniform", "popularity"] = "uniform"  # next_item negatives (features/negatives.py)

    def __post_init__(self) -> None:
        if self.kind not in ("impression_click", "next_item"):
            raise ValueError(f"LabelPolicy.kind must be impression_click or next_item, got {self.kind!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"LabelPolicy.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.window_ms <= 0 or self.negatives < 0 or self.min_history < 0:
            raise ValueError(f"LabelPolicy has a negative or zero setting: {self}")


def _category(event: Event) -> int:
    return UNKNOWN_CATEGORY if event.category_id is None else event.category_id


def impression_click(events: Sequence[Event], window_ms: int) -> list[Example]:
    """Label each impression by a click on the same item within the window after it."""
    clicks: dict[int, list[int]] = {}
    for e in events:
        if e.event_type == "click":
            clicks.setdefault(e.item_id, []).append(e.timestamp)
    out = []
    for e in events:
        if e.event_type != "impression":
            continue
        times = clicks.get(e.item_id, ())
        label = int(any(e.timestamp <= t <= e.timestamp + window_ms for t in times))
        out.append((e.user_id, e.item_id, _category(e), e.timestamp, label))
    return out


def next_item(events: Sequence[Event], pool: ItemPool, policy: LabelPolicy) -> list[Example]:
    """Each behavior after the first ``min_history`` is a positive; each gets ``policy.negatives``
    drawn from ``pool`` as of its timestamp among items the user had no behavior with at or before it."""
    behaviors = sorted((e for e in events if e.event_type in BEHAVIOR_TYPES), key=lambda e: (e.timestamp, e.event_id))
    seen: set[int] = set()  # items of every behavior at or before the current one's time
    n_seen = 0
    out = []
    for i, e in enumerate(behaviors):
        # Equal timestamps count as "by then": a negative must never contradict a positive
        # (same user, item and time) of another behavior in the same millisecond.
        while n_seen < len(behaviors) and behaviors[n_seen].timestamp <= e.timestamp:
            seen.add(behaviors[n_seen].item_id)
            n_seen += 1
        if i >= policy.min_history:
            out.append((e.user_id, e.item_id, _category(e), e.timestamp, 1))
            rng = np.random.default_rng(_event_seed(policy.seed, e.event_id))
            for item, cat in pool.draw(e.timestamp, seen, policy.negatives, rng, policy.sampling, e.item_id):
                out.append((e.user_id, item, cat, e.timestamp, 0))
    return out


def build_examples(events: Sequence[Event], policy: LabelPolicy, pool: ItemPool | None = None) -> list[Example]:
    """One user's examples under the policy; events may come in any order. next_item labels need
    the ``pool`` of every user's behaviors (ItemPool.from_table): an item exists once anyone took it."""
    events = sorted(events, key=lambda e: (e.timestamp, e.event_id))
    if policy.kind == "impression_click":
        return impression_click(events, policy.window_ms)
    if pool is None:
        raise ValueError("next_item labels draw negatives from an ItemPool of every user's behaviors: pass one")
    return next_item(events, pool, policy)


def _event_seed(seed: int, event_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def next_item_point_in_time(log: "pa.Table", rows: "pa.Table", policy: LabelPolicy) -> "pa.Table":
    """Next-item examples for behaviors ``rows`` (log columns), point in time: the examples
    ``next_item`` gives these behaviors with the pool of ``log`` (sorted by user, time and event
    ID, as features.pit.sort_log leaves it). A row is a positive when its user has at least
    ``policy.min_history`` behaviors before it in the log (by time, then event ID); it gets
    ``policy.negatives`` drawn (features/negatives.py, ``policy.sampling``) among the items that
    exist at its time and that its user has not taken at or before it. Deterministic by
    (policy.seed, event_id). Returns EXAMPLE_SCHEMA rows, positives and negatives sorted by time."""
    pool = ItemPool.from_table(log)
    log_items, log_times = log.column("item_id").to_numpy(), log.column("timestamp").to_numpy()
    log_users, log_ids = log.column("user_id").to_numpy(), log.column("event_id").to_numpy(zero_copy_only=False)
    out: list[Example] = []
    users, r_items, r_times = (rows.column(n).to_numpy() for n in ("user_id", "item_id", "timestamp"))
    r_cats, r_ids = rows.column("category_id").to_numpy(), rows.column("event_id").to_pylist()
    for u, item, ts, cat, event_id in zip(users, r_items, r_times, r_cats, r_ids):
        lo, hi = np.searchsorted(log_users, u, "left"), np.searchsorted(log_users, u, "right")
        times = log_times[lo:hi]
        earlier = int(np.searchsorted(times, ts, "left"))
        earlier += sum(1 for e in log_ids[lo + earlier:lo + int(np.searchsorted(times, ts, "right"))] if e < event_id)
        if earlier < policy.min_history:
            continue
        out.append((int(u), int(item), int(cat), int(ts), 1))
        taken = set(log_items[lo:hi][times <= ts].tolist())
        rng = np.random.default_rng(_event_seed(policy.seed, event_id))
        for neg, neg_cat in pool.draw(int(ts), taken, policy.negatives, rng, policy.sampling, int(item)):
            out.append((int(u), neg, neg_cat, int(ts), 0))
    out.sort(key=lambda e: (e[3], e[0], -e[4]))
    return pa.table([pa.array(col, f.type) for col, f in zip(zip(*out), EXAMPLE_SCHEMA)] if out
                    else [pa.array([], f.type) for f in EXAMPLE_SCHEMA], schema=EXAMPLE_SCHEMA)
