"""Point-in-time slices of the sorted behavior log, held to a nested-loop oracle and to sequence.finalize."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import T0, random_events
from features import pit, sequence
from features.ids import stable_id
from features.schema import EVENT_TYPE_CODE, Event
from features.sequence import SequencePolicy
from features.tables import BEHAVIOR_LOG_SCHEMA

USERS = tuple(stable_id(f"user-{k}") for k in range(6))  # real hashed IDs: large int64 values
UNKNOWN = stable_id("nobody")
POLICY_TYPES = SequencePolicy().event_types


def log_rows(events) -> list[tuple]:
    """The behavior log by its definition: policy types only, one row per event_id (the greatest copy)."""
    best: dict[str, tuple] = {}
    for e in events:
        if e.event_type in POLICY_TYPES:
            row = (e.user_id, e.timestamp, e.event_id, e.item_id, e.category_id or 0, EVENT_TYPE_CODE[e.event_type])
            key = e.event_id
            if key not in best or row[1:] > best[key][1:]:
                best[key] = row
    return list(best.values())


def log_table(rows, rng) -> pa.Table:
    rows = rows[:]
    rng.shuffle(rows)  # sort_log must put them in order
    columns = list(zip(*rows)) if rows else [[] for _ in BEHAVIOR_LOG_SCHEMA]
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, BEHAVIOR_LOG_SCHEMA)],
                                 schema=BEHAVIOR_LOG_SCHEMA)
    return pit.sort_log(table)


def oracle(rows, user, t, max_len) -> dict:
    """Nested loop: the user's rows strictly before t, by (time, event_id), the last max_len."""
    before = sorted((r for r in rows if r[0] == user and r[1] < t), key=lambda r: (r[1], r[2]))[-max_len:]
    return {"seq_item_ids": [r[3] for r in before], "seq_category_ids": [r[4] for r in before],
            "seq_event_types": [r[5] for r in before], "seq_timestamps": [r[1] for r in before],
            "seq_length": len(before)}


def queries(rng, events):
    """Before anyone's first event, exactly at event times (equal-time events excluded), just after,
    random times, far future; for known and unknown users."""
    times = [T0 - 1, T0, T0 + 10**9] + [e.timestamp + d for e in events for d in (0, 1)]
    times += [T0 + rng.randrange(-5, 500) for _ in range(50)]
    return [(u, t) for u in USERS + (UNKNOWN,) for t in times if rng.random() < 0.5 or t in (T0 - 1, T0 + 10**9)]


def test_sequences_as_of_equals_nested_loop_oracle():
    for seed in range(12):
        rng = random.Random(seed)
        events = random_events(rng, rng.randrange(0, 200), users=USERS[:5], span_ms=rng.choice([10, 300]))
        rows = log_rows(events)
        table = log_table(rows, rng)
        qs = queries(rng, events)
        for max_len in (1, 4, 1000):
            got = pit.sequences_as_of(table, [u for u, _ in qs], [t for _, t in qs], max_len).to_pylist()
            assert len(got) == len(qs)
            for (u, t), row in zip(qs, got):
                assert row == oracle(rows, u, t, max_len), (seed, max_len, u, t)


def test_agrees_with_finalize_of_events_strictly_before():
    """The point-in-time promise: a slice of the log is exactly what sequence.finalize gave at time t.
    It holds when an event's copies share its timestamp (redeliveries; content may still differ)."""
    for seed in range(12):
        rng = random.Random(100 + seed)
        events = random_events(rng, 150, users=USERS[:4], span_ms=60, retime_copies=False)
        table = log_table(log_rows(events), rng)
        qs = queries(rng, events)
        for max_len in (2, 50):
            policy = SequencePolicy(max_len=max_len)
            got = pit.sequences_as_of(table, np.array([u for u, _ in qs]), np.array([t for _, t in qs]), max_len)
            for (u, t), row in zip(qs, got.to_pylist()):
                state = sequence.add_all(sequence.empty(), [e for e in events if e.user_id == u and e.timestamp < t],
                                         policy)
                expected = sequence.finalize(state, policy)
                expected.pop("last_event_ms")
                assert row == expected, (seed, u, t)


def test_equal_timestamps_are_strictly_before():
    rows = [(1, T0, "a", 10, 0, 2), (1, T0, "b", 11, 0, 2), (1, T0 + 1, "c", 12, 0, 2), (2, T0 - 5, "z", 99, 0, 2)]
    table = log_table(rows, random.Random(0))
    got = pit.sequences_as_of(table, [1, 1, 1, 1, 2, 3], [T0 - 1, T0, T0 + 1, T0 + 2, T0, T0], 10)
    assert got.column("seq_item_ids").to_pylist() == [[], [], [10, 11], [10, 11, 12], [99], []]
    assert got.column("seq_length").to_pylist() == [0, 0, 2, 3, 1, 0]


def test_query_order_and_repeats_do_not_matter():
    rng = random.Random(3)
    events = random_events(rng, 120, users=USERS[:3], span_ms=50)
    table = log_table(log_rows(events), rng)
    qs = queries(rng, events)
    qs = qs + qs[:10]
    order = list(range(len(qs)))
    rng.shuffle(order)
    a = pit.sequences_as_of(table, [qs[i][0] for i in order], [qs[i][1] for i in order], 3).to_pylist()
    b = pit.sequences_as_of(table, [u for u, _ in qs], [t for _, t in qs], 3).to_pylist()
    assert a == [b[i] for i in order]


def test_empty_log_and_empty_queries():
    empty = BEHAVIOR_LOG_SCHEMA.empty_table()
    got = pit.sequences_as_of(empty, [1, 2], [T0, T0], 5)
    assert got.column("seq_length").to_pylist() == [0, 0]
    assert got.column("seq_item_ids").to_pylist() == [[], []]
    table = log_table([(1, T0, "a", 10, 0, 2)], random.Random(0))
    assert pit.sequences_as_of(table, [], [], 5).num_rows == 0


def test_slices_are_jagged_arrow_lists_of_the_log_types():
    table = log_table([(1, T0, "a", 10, 3, 2), (1, T0 + 1, "b", 11, 4, 6)], random.Random(0))
    got = pit.sequences_as_of(table, [1], [T0 + 5], 5)
    assert got.schema.field("seq_item_ids").type == pa.list_(pa.int64())
    assert got.schema.field("seq_event_types").type == pa.list_(pa.int32())
    assert got.to_pylist() == [{"seq_item_ids": [10, 11], "seq_category_ids": [3, 4], "seq_event_types": [2, 6],
                                "seq_timestamps": [T0, T0 + 1], "seq_length": 2}]


def test_a_retimed_copy_moves_the_event_to_its_greatest_time():
    """The documented limit of the promise: copies of one event_id at different times are one
    behavior, placed in the log at the greatest copy's time; before that time it is absent."""
    rows = log_rows([Event("x", 1, 5, "click", T0 + 10), Event("x", 1, 6, "click", T0 + 20),
                     Event("y", 1, 7, "view", T0 + 15)])
    table = log_table(rows, random.Random(0))
    got = pit.sequences_as_of(table, [1, 1], [T0 + 16, T0 + 21], 10).column("seq_item_ids").to_pylist()
    assert got == [[7], [7, 6]]


def test_rows_before_equals_counting():
    rng = np.random.default_rng(4)
    keys = np.sort(rng.integers(0, 30, 2_000))
    times = np.concatenate([np.sort(rng.integers(0, 50, (keys == k).sum())) for k in np.unique(keys)])
    qk, qt = rng.integers(-2, 33, 3_000), rng.integers(-5, 55, 3_000)
    expected = [int(((keys < k) | ((keys == k) & (times < t))).sum()) for k, t in zip(qk, qt)]
    assert pit.rows_before(keys, times, qk, qt).tolist() == expected


def test_slices_past_two_to_the_31_values_use_large_lists(monkeypatch):
    rng = random.Random(6)
    events = random_events(rng, 150, users=USERS[:3], span_ms=40)
    table = log_table(log_rows(events), rng)
    qs = queries(rng, events)
    small = pit.sequences_as_of(table, [u for u, _ in qs], [t for _, t in qs], 5)
    monkeypatch.setattr(pit, "LARGE_LIST_VALUES", 3)
    large = pit.sequences_as_of(table, [u for u, _ in qs], [t for _, t in qs], 5)
    assert large.schema.field("seq_item_ids").type == pa.large_list(pa.int64())
    assert large.to_pylist() == small.to_pylist() and small.schema.field("seq_item_ids").type == pa.list_(pa.int64())


@pytest.mark.parametrize("seed", range(6))
def test_key_time_order_is_the_stable_lexsort(seed):
    """Grouped runs (the event log's layout) take the cheap path, anything else the full sort;
    both give np.lexsort((times, keys)) exactly, ties in time included."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 6, 200)
    times = rng.integers(0, 20, 200)
    grouped = np.lexsort((times, rng.permutation(6)[keys]))  # runs by key, not in key order
    for k, t in ((keys, times), (keys[grouped], times[grouped]), (keys[:1], times[:1]), (keys[:0], times[:0])):
        assert np.array_equal(pit.key_time_order(k, t), np.lexsort((t, k)))
