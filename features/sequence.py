"""Per-user behavior sequence state: empty / add / merge / finalize.

The state keeps, for each event_id, one canonical copy of the behavior (the
greatest tuple when copies differ), and only the most recent ``max_len``
behaviors by (timestamp, event_id). Both rules are order-independent, so a Beam
combiner (any merge tree), a Flink keyed state (one add at a time) and a naive
sort of all events give the same finalized sequence.

Why "greatest copy wins": an evicted event can only be re-added by a copy that
is also older than everything retained, so forgetting it loses nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, UNKNOWN_CATEGORY, Event

# (timestamp, event_id, item_id, category_id, event_type_code): ordered by time, then id.
Behavior = tuple[int, str, int, int, int]
SequenceState = dict[str, Behavior]


@dataclass(frozen=True)
class SequencePolicy:
    """Which events enter a sequence and how many are kept (the most recent)."""

    max_len: int = 200
    event_types: frozenset[str] = BEHAVIOR_TYPES

    def __post_init__(self) -> None:
        if self.max_len < 1:
            raise ValueError(f"SequencePolicy.max_len must be >= 1, got {self.max_len}")
        unknown = set(self.event_types) - set(EVENT_TYPE_CODE)
        if unknown:
            raise ValueError(f"SequencePolicy.event_types has unknown types {sorted(unknown)}")


def behavior(event: Event) -> Behavior:
    category = UNKNOWN_CATEGORY if event.category_id is None else event.category_id
    return (event.timestamp, event.event_id, event.item_id, category, EVENT_TYPE_CODE[event.event_type])


def empty() -> SequenceState:
    return {}


def add(state: SequenceState, event: Event, policy: SequencePolicy) -> SequenceState:
    """Add one event in place (ignored if its type is not in the policy); returns the state."""
    if event.event_type not in policy.event_types:
        return state
    _put(state, behavior(event))
    if len(state) > 2 * policy.max_len:  # amortized pruning keeps add O(1)
        _prune(state, policy.max_len)
    return state


def add_all(state: SequenceState, events: Iterable[Event], policy: SequencePolicy) -> SequenceState:
    for event in events:
        add(state, event, policy)
    return state


def merge(states: Iterable[SequenceState], policy: SequencePolicy) -> SequenceState:
    """Union of states; the first state is reused as the accumulator."""
    states = iter(states)
    out = next(states, None)
    if out is None:
        return empty()
    for other in states:
        for b in other.values():
            _put(out, b)
    if len(out) > 2 * policy.max_len:
        _prune(out, policy.max_len)
    return out


def finalize(state: SequenceState, policy: SequencePolicy) -> dict[str, list[int] | int]:
    """The feature values: parallel lists, oldest first, at most max_len long."""
    kept = sorted(state.values())[-policy.max_len:]
    return {
        "seq_item_ids": [b[2] for b in kept],
        "seq_category_ids": [b[3] for b in kept],
        "seq_event_types": [b[4] for b in kept],
        "seq_timestamps": [b[0] for b in kept],
        "seq_length": len(kept),
        "last_event_ms": kept[-1][0] if kept else 0,
    }


def from_features(values: dict) -> SequenceState:
    """Rebuild a state from finalized features (e.g. read back from the online store).

    Event ids are not stored online, so they are rebuilt from the behavior itself
    and its rank among equal timestamps (which keeps their stored order, so
    finalize(from_features(f)) == f); a rebuilt state dedups exactly only against
    events older than its newest one.
    """
    state: SequenceState = {}
    rank, last_ts = 0, None
    for ts, item, cat, code in zip(
        values.get("seq_timestamps") or [],
        values.get("seq_item_ids") or [],
        values.get("seq_category_ids") or [],
        values.get("seq_event_types") or [],
    ):
        rank, last_ts = (rank + 1 if ts == last_ts else 0), ts
        key = f"~{ts}:{rank:04d}:{item}:{code}"
        state[key] = (int(ts), key, int(item), int(cat), int(code))
    return state


def _put(state: SequenceState, b: Behavior) -> None:
    old = state.get(b[1])
    if old is None or b > old:
        state[b[1]] = b


def _prune(state: SequenceState, max_len: int) -> None:
    for b in sorted(state.values())[:-max_len]:
        del state[b[1]]
