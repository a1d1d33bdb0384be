"""Per-user behavior sequence state: empty / add / merge / finalize.

The state keeps, for each event_id, one canonical copy of the behavior (the
greatest tuple when copies differ), and only the most recent ``max_len``
behaviors by (timestamp, event_id). Both rules are order-independent, so a Beam
combiner (any merge tree), a Flink keyed state (one add at a time) and a naive
sort of all events give the same finalized sequence.

Why "greatest copy wins": an evicted event can only be re-added by a copy that
is also older than everything retained, so forgetting it loses nothing.

Per-type caps (``SequencePolicy(type_caps={"click": 100, "buy": 20})``): each capped
type has its own pool, where the copies of that type compete by event_id and the
most recent min(cap, max_len) are kept; the uncapped types share the main pool. The
sequence is the union of the pools, one copy per event_id (the greatest), its last
max_len. Pools keep the argument above exact: within a pool every copy has the
pool's types, so an evicted event's later copies are older than the pool's retained
behaviors. (Counting a copy in the pool of its own type is what makes this
mergeable: if one event's copies carried different types and a cap counted only
each event's greatest copy, a change of type would need behaviors already evicted.)
When the copies of an event share its type, as redeliveries do, a cap simply keeps
the most recent ``cap`` behaviors of that type.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Iterable, Mapping

from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, UNKNOWN_CATEGORY, Event

# (timestamp, event_id, item_id, category_id, event_type_code): ordered by time, then id.
Behavior = tuple[int, str, int, int, int]
# Main pool: event_id -> behavior; a capped type's pool: (type code, event_id) -> behavior.
SequenceState = dict[str | tuple[int, str], Behavior]


@dataclass(frozen=True)
class SequencePolicy:
    """Which events enter a sequence and how many are kept (the most recent): at most max_len
    in all, and at most type_caps[t] of event type t (a mapping, stored as sorted pairs)."""

    max_len: int = 200
    event_types: frozenset[str] = BEHAVIOR_TYPES
    type_caps: Mapping[str, int] | tuple[tuple[str, int], ...] = ()  # stored as sorted pairs

    def __post_init__(self) -> None:
        if self.max_len < 1:
            raise ValueError(f"SequencePolicy.max_len must be >= 1, got {self.max_len}")
        unknown = set(self.event_types) - set(EVENT_TYPE_CODE)
        if unknown:
            raise ValueError(f"SequencePolicy.event_types has unknown types {sorted(unknown)}")
        caps = dict(self.type_caps.items() if isinstance(self.type_caps, Mapping) else self.type_caps)
        for name, cap in caps.items():
            if name not in self.event_types:
                raise ValueError(f"SequencePolicy.type_caps names {name!r}, which is not one of the policy's "
                                 f"event_types {sorted(self.event_types)}: add it there or drop its cap")
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise ValueError(f"SequencePolicy.type_caps[{name!r}] must be an integer >= 1, got {cap!r}")
        object.__setattr__(self, "type_caps", tuple(sorted(caps.items())))
        limits: dict[int | None, int] = {None: self.max_len}
        limits.update({EVENT_TYPE_CODE[name]: min(cap, self.max_len) for name, cap in self.type_caps})
        object.__setattr__(self, "_limits", limits)  # derived once: add() runs per event
        object.__setattr__(self, "_state_limit", sum(limits.values()))

    def pool_limits(self) -> dict[int | None, int]:
        """How many behaviors each pool keeps: None is the main pool, a type code a capped type's pool."""
        return self._limits

    def state_limit(self) -> int:
        """The most behaviors a pruned state holds (it is pruned when it grows past twice this)."""
        return self._state_limit


def behavior(event: Event) -> Behavior:
    category = UNKNOWN_CATEGORY if event.category_id is None else event.category_id
    return (event.timestamp, event.event_id, event.item_id, category, EVENT_TYPE_CODE[event.event_type])


def empty() -> SequenceState:
    return {}


def add(state: SequenceState, event: Event, policy: SequencePolicy) -> SequenceState:
    """Add one event in place (ignored if its type is not in the policy); returns the state."""
    if event.event_type not in policy.event_types:
        return state
    return add_behavior(state, behavior(event), policy)


def add_behavior(state: SequenceState, b: Behavior, policy: SequencePolicy) -> SequenceState:
    """``add`` of an event already made a behavior (of a type in the policy): one tuple can then
    serve several sequences (one object, pickled once with them)."""
    _put(state, _key(b, policy), b)
    if len(state) > 2 * policy._state_limit:  # amortized pruning keeps add O(1)
        _prune(state, policy)
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
        for key, b in other.items():
            _put(out, key, b)
    if len(out) > 2 * policy.state_limit():
        _prune(out, policy)
    return out


def finalize(state: SequenceState, policy: SequencePolicy, arrays: bool = False) -> dict[str, list[int] | int]:
    """The feature values: parallel lists, oldest first, at most max_len long; with ``arrays``,
    int64 arrays (array.array; event types int32), which features.packed packs without a copy."""
    kept = _final(state, policy)
    times, _ids, items, categories, codes = zip(*kept) if kept else ((),) * 5  # columns, in C (the stream's flushes)
    if arrays:
        items, categories, codes, times = array("q", items), array("q", categories), array("i", codes), array("q", times)
    return {
        "seq_item_ids": items if arrays else list(items),
        "seq_category_ids": categories if arrays else list(categories),
        "seq_event_types": codes if arrays else list(codes),
        "seq_timestamps": times if arrays else list(times),
        "seq_length": len(kept),
        "last_event_ms": kept[-1][0] if kept else 0,
    }


def from_features(values: dict, policy: SequencePolicy | None = None) -> SequenceState:
    """Rebuild a state from finalized features (e.g. read back from the online store).

    Event ids are not stored online, so they are rebuilt from the behavior itself
    and its rank among equal timestamps (which keeps their stored order, so
    finalize(from_features(f)) == f); a rebuilt state dedups exactly only against
    events older than its newest one. Pass the policy when it has type caps, so
    each behavior goes back into its type's pool.
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
        event_id = f"~{ts}:{rank:04d}:{item}:{code}"
        b = (int(ts), event_id, int(item), int(cat), int(code))
        state[_key(b, policy) if policy is not None else event_id] = b
    return state


def _key(b: Behavior, policy: SequencePolicy) -> str | tuple[int, str]:
    """A behavior's key in the state: its event_id in the main pool, (type code, event_id) in a capped one."""
    return (b[4], b[1]) if b[4] in policy._limits else b[1]


def _put(state: SequenceState, key: str | tuple[int, str], b: Behavior) -> None:
    old = state.get(key)
    if old is None or b > old:
        state[key] = b


def _pools(state: SequenceState) -> dict[int | None, list[tuple]]:
    pools: dict[int | None, list[tuple]] = {}
    for key, b in state.items():
        pools.setdefault(key[0] if isinstance(key, tuple) else None, []).append((b, key))
    return pools


def _prune(state: SequenceState, policy: SequencePolicy) -> None:
    limits = policy.pool_limits()
    for pool, members in _pools(state).items():
        for _, key in sorted(members)[:-limits[pool]]:
            del state[key]


def _final(state: SequenceState, policy: SequencePolicy) -> list[Behavior]:
    """The sequence's behaviors, oldest first: each pool's most recent, one copy per event_id, the last max_len."""
    if not policy.type_caps:
        return sorted(state.values())[-policy.max_len:]
    limits = policy.pool_limits()
    best: dict[str, Behavior] = {}
    for pool, members in _pools(state).items():
        for b, _ in sorted(members)[-limits[pool]:]:
            if b[1] not in best or b > best[b[1]]:
                best[b[1]] = b
    return sorted(best.values())[-policy.max_len:]
