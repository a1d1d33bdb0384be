"""Shared test helpers: a seeded random-event maker, the naive sequence oracle, the data folder."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from features.schema import EVENT_TYPE_CODE, EVENT_TYPES, Event

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in ms
NOW_MS = T0 + 365 * 24 * 3600 * 1000  # a fixed validation clock, a year later
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repo root


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the project; tests that need them skip on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not present: {SHARED_DATA} is absent (a fresh clone elsewhere)")
    return SHARED_DATA


def random_events(rng: random.Random, n: int, users: tuple[int, ...] = (1,), items: int = 15,
                  span_ms: int = 40, types: tuple[str, ...] = EVENT_TYPES, retime_copies: bool = True) -> list[Event]:
    """n events over few users, items and timestamps (so times collide), every event type, and
    duplicates: exact copies and copies of an event_id with other content (item, type and, if
    retime_copies, time)."""
    events: list[Event] = []
    for i in range(n):
        roll = rng.random()
        if events and roll < 0.12:
            events.append(rng.choice(events))  # an exact duplicate
        elif events and roll < 0.25:
            old = rng.choice(events)  # same event_id (and user), different content
            ts = T0 + rng.randrange(span_ms) if retime_copies else old.timestamp
            events.append(old._replace(timestamp=ts, item_id=rng.randrange(items), event_type=rng.choice(types)))
        else:
            events.append(Event(event_id=f"e{i}", user_id=rng.choice(users), item_id=rng.randrange(items),
                                event_type=rng.choice(types), timestamp=T0 + rng.randrange(span_ms),
                                category_id=rng.choice([None, 1, 2, 3])))
    return events


def naive_sequence(events: list[Event], max_len: int, event_types=frozenset(EVENT_TYPES) - {"impression"}) -> dict:
    """The slow obvious sequence: keep the policy's types, one copy per event_id (the greatest
    (timestamp, event_id, item, category, type code) tuple), sort by (timestamp, event_id), keep
    the last max_len. Types are filtered before dedup: a copy of another type does not compete."""
    best: dict[str, tuple] = {}
    for e in events:
        if e.event_type not in event_types:
            continue
        t = (e.timestamp, e.event_id, e.item_id, e.category_id or 0, EVENT_TYPE_CODE[e.event_type])
        if e.event_id not in best or t > best[e.event_id]:
            best[e.event_id] = t
    kept = sorted(best.values(), key=lambda t: (t[0], t[1]))[-max_len:] if max_len else []
    return {
        "seq_item_ids": [t[2] for t in kept],
        "seq_category_ids": [t[3] for t in kept],
        "seq_event_types": [t[4] for t in kept],
        "seq_timestamps": [t[0] for t in kept],
        "seq_length": len(kept),
        "last_event_ms": kept[-1][0] if kept else 0,
    }


def naive_dedup(events: list[Event]) -> list[Event]:
    """One copy per event_id: the greatest (timestamp, event_id, item, category, type code) tuple."""
    best: dict[str, tuple[tuple, Event]] = {}
    for e in events:
        key = (e.timestamp, e.event_id, e.item_id, e.category_id or 0, EVENT_TYPE_CODE[e.event_type])
        if e.event_id not in best or key > best[e.event_id][0]:
            best[e.event_id] = (key, e)
    return [e for _, e in best.values()]


def naive_views(events: list[Event], max_len: int, recent_len: int, category_len: int,
                event_types=frozenset(EVENT_TYPES) - {"impression"}) -> dict[str, dict]:
    """Every online view by the slow obvious definitions: {view: {key: row}}. Sequences as
    naive_sequence; categories over the behaviors deduplicated among the behavior types (the
    greatest copy's category); statistics over naive_dedup, as the stats state's row just after
    the key's newest event (features.stats.to_row, itself held to a naive oracle in test_stats)."""
    from features import stats

    by_user, by_item = {}, {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    out: dict[str, dict] = {"user_sequence": {}, "user_recent": {}, "user_category_sequence": {}, "user_stats": {},
                            "item_stats": {}}
    behavior_names = frozenset(event_types)
    for user, evs in by_user.items():
        lifelong = naive_sequence(evs, max_len, event_types)
        if lifelong["seq_length"]:
            out["user_sequence"][user] = lifelong
            out["user_recent"][user] = naive_sequence(evs, recent_len, event_types)
        by_cat: dict[int, list[Event]] = {}
        for e in naive_dedup([e for e in evs if e.event_type in behavior_names]):
            by_cat.setdefault(e.category_id or 0, []).append(e)
        for cat, ces in by_cat.items():
            out["user_category_sequence"][(user, cat)] = naive_sequence(ces, category_len, event_types)
        deduped = naive_dedup(evs)
        out["user_stats"][user] = _stats_row(deduped)
        for e in deduped:
            by_item.setdefault(e.item_id, []).append(e)
    out["item_stats"] = {item: _stats_row(evs) for item, evs in by_item.items()}
    return out


def _stats_row(events: list[Event]) -> dict:
    from features import stats
    from features.schema import BEHAVIOR_TYPES

    state = stats.empty()
    for e in events:
        stats.add(state, e.timestamp, stats.kind_index(e.event_type, BEHAVIOR_TYPES))
    return stats.to_row(state, state.newest_ms + 1)
