"""The vectorized offline builders equal their per-user definitions and the naive oracles."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from tests.conftest import T0, naive_dedup, naive_sequence, random_events

from features import labels, offline, sequence, stats
from features.labels import LabelPolicy
from features.negatives import ItemPool
from features.schema import BEHAVIOR_TYPES, Event, events_to_table
from features.sequence import SequencePolicy
from tests.features.test_sequence import CAPPED, naive_capped_sequence

USERS = (11, 22, 33, 44)


def by_user(events):
    out = {}
    for e in events:
        out.setdefault(e.user_id, []).append(e)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_dedup_keeps_the_greatest_copy(seed):
    events = random_events(random.Random(seed), 300, users=USERS)
    table, dropped = offline.dedup(events_to_table(events))
    expected = naive_dedup(events)
    assert dropped == len(events) - len(expected)
    got = {r["event_id"]: (r["timestamp"], r["item_id"], r["event_type"]) for r in table.to_pylist()}
    assert got == {e.event_id: (e.timestamp, e.item_id, e.event_type) for e in expected}


def test_the_same_event_id_of_two_users_is_two_events():
    a = Event("e1", user_id=1, item_id=5, event_type="click", timestamp=T0)
    table, dropped = offline.dedup(events_to_table([a, a._replace(user_id=2), a]))
    assert dropped == 1 and sorted(table.column("user_id").to_pylist()) == [1, 2]


@pytest.mark.parametrize("seed", range(6))
def test_latest_sequences_equal_the_oracle(seed):
    rng = random.Random(seed)
    events = random_events(rng, 400, users=USERS)
    max_len = rng.choice([1, 5, 30])
    policy = SequencePolicy(max_len=max_len)
    log = offline.behavior_log(events_to_table(events), policy)
    rows = {r["user_id"]: r for r in offline.latest_sequences(log, max_len).to_pylist()}
    for user, evs in by_user(events).items():
        expected = naive_sequence(evs, max_len)
        if expected["seq_length"] == 0:
            assert user not in rows
            continue
        assert {k: rows[user][k] for k in expected} == expected
        state = sequence.add_all(sequence.empty(), evs, policy)
        assert sequence.finalize(state, policy) == expected


@pytest.mark.parametrize("seed", range(8))
def test_capped_lifelong_sequences_equal_the_oracle_and_the_algebra(seed):
    rng = random.Random(seed)
    events = random_events(rng, 500, users=USERS, span_ms=rng.choice([30, 300]))
    policy = CAPPED[seed % len(CAPPED)]
    table = events_to_table(events)
    rows = {r["user_id"]: r for r in offline.lifelong_sequences(table, offline.behavior_log(table, policy),
                                                                 policy).to_pylist()}
    for user, evs in by_user(events).items():
        expected = naive_capped_sequence(evs, policy)
        assert sequence.finalize(sequence.add_all(sequence.empty(), evs, policy), policy) == expected
        if expected["seq_length"] == 0:
            assert user not in rows
        else:
            assert {k: rows[user][k] for k in expected} == expected, (seed, user)


def test_lifelong_sequences_without_caps_are_the_log_slices():
    events = events_to_table(random_events(random.Random(1), 300, users=USERS))
    policy = SequencePolicy(max_len=7)
    log = offline.behavior_log(events, policy)
    assert offline.lifelong_sequences(events, log, policy) == offline.latest_sequences(log, 7)


@pytest.mark.parametrize("seed", range(6))
def test_impression_click_equals_the_per_user_labels(seed):
    rng = random.Random(seed)
    events = naive_dedup(random_events(rng, 400, users=USERS, items=5, span_ms=200,
                                        types=("impression", "click", "view")))
    window = rng.choice([0, 10, 60])
    got = Counter(tuple(r.values()) for r in offline.impression_click(events_to_table(events), window).to_pylist())
    expected = Counter()
    for evs in by_user(events).values():
        expected.update(labels.impression_click(sorted(evs, key=lambda e: (e.timestamp, e.event_id)), window))
    assert got == expected and sum(expected.values()) > 0


def test_impressions_whose_window_passes_the_data_end_get_no_label():
    imp = Event("i", user_id=1, item_id=5, event_type="impression", timestamp=T0)
    late = imp._replace(event_id="j", timestamp=T0 + 50)
    got = offline.examples(events_to_table([imp, late]), LabelPolicy(window_ms=30), until_ms=T0 + 60)
    assert got.column("timestamp").to_pylist() == [T0]  # T0 + 50 + 30 is past the end: not labeled yet
    assert offline.examples(events_to_table([imp, late]), LabelPolicy(window_ms=30)).num_rows == 2


def test_next_item_examples_match_build_examples():
    events = naive_dedup(random_events(random.Random(3), 200, users=USERS, types=("click", "view", "buy")))
    policy = LabelPolicy(kind="next_item", negatives=2, seed=9)
    got = Counter(tuple(r.values()) for r in offline.examples(events_to_table(events), policy).to_pylist())
    pool = ItemPool.from_events(events)  # without a pool, examples() draws from its events' own behaviors
    expected = Counter()
    for evs in by_user(events).values():
        expected.update(labels.build_examples(evs, policy, pool))
    assert got == expected and Counter(r[-1] for r in expected.elements())[0] > 0


@pytest.mark.parametrize("seed", range(4))
def test_latest_stats_equal_the_state_algebra(seed):
    rng = random.Random(seed)
    events = naive_dedup(random_events(rng, 300, users=USERS, span_ms=9 * 86_400_000))
    as_of = T0 + 9 * 86_400_000 + rng.randrange(3_600_000)
    for key in ("user_id", "item_id"):
        rows = {r[key]: r for r in offline.latest_stats(events_to_table(events), key, as_of).to_pylist()}
        groups = {}
        for e in events:
            groups.setdefault(getattr(e, key), []).append(e)
        for k, evs in groups.items():
            s = stats.empty()
            for e in evs:
                stats.add(s, e.timestamp, stats.kind_index(e.event_type, BEHAVIOR_TYPES))
            assert {n: rows[k][n] for n in stats.feature_names()} == pytest.approx(stats.at(s, as_of))


@pytest.mark.parametrize("seed", range(4))
def test_latest_stats_as_of_a_time_inside_the_data_count_by_the_definition(seed):
    """As of a time with events after it (and some on tile and window edges): a window w counts the
    events before t whose one-minute tile starts at or after t - w; lifetime, every event before t."""
    rng = random.Random(seed)
    as_of = T0 + 8 * 86_400_000 + rng.randrange(stats.TILE_MS)
    events = random_events(rng, 300, users=USERS, span_ms=9 * 86_400_000)
    edges = [as_of - 1, as_of, as_of + 1] + [as_of - w + d for w in stats.WINDOWS.values() for d in (-61_000, 0, 1)]
    events = naive_dedup(events + [Event(f"edge{i}", USERS[i % 4], 7, "click", t) for i, t in enumerate(edges)])
    tile = lambda t: t - t % stats.TILE_MS  # noqa: E731
    for key in ("user_id", "item_id"):
        rows = {r[key]: r for r in offline.latest_stats(events_to_table(events), key, as_of).to_pylist()}
        assert set(rows) == {getattr(e, key) for e in events}
        for k, row in rows.items():
            mine = [e for e in events if getattr(e, key) == k and e.timestamp < as_of]
            for window, length in [*stats.WINDOWS.items(), (stats.LIFETIME, None)]:
                inside = [e for e in mine if length is None or tile(e.timestamp) >= as_of - length]
                assert row[f"impressions_{window}"] == sum(e.event_type == "impression" for e in inside)
                assert row[f"clicks_{window}"] == sum(e.event_type == "click" for e in inside)
                assert row[f"behaviors_{window}"] == sum(e.event_type in BEHAVIOR_TYPES for e in inside)


def test_dedup_and_the_logs_do_not_depend_on_the_input_order():
    """Row for row, not only as multisets: copies are told apart by the event_id's text."""
    rng = random.Random(5)
    events = random_events(rng, 400, users=USERS)
    events += [e._replace(item_id=e.item_id + 1) for e in rng.sample(events, 40)]  # altered copies
    shuffled = rng.sample(events, len(events))
    for build in (lambda t: offline.dedup(t)[0], lambda t: offline.event_log(offline.dedup(t)[0]),
                  lambda t: offline.behavior_log(t, SequencePolicy()),
                  lambda t: offline.examples(offline.dedup(t)[0], LabelPolicy(window_ms=90_000))):
        assert build(events_to_table(events)).to_pylist() == build(events_to_table(shuffled)).to_pylist()


def test_empty_batches():
    empty = events_to_table([])
    assert offline.dedup(empty)[1] == 0
    log = offline.behavior_log(empty, SequencePolicy())
    assert log.num_rows == 0 and offline.latest_sequences(log, 5).num_rows == 0
    assert offline.lifelong_sequences(empty, log, CAPPED[0]).num_rows == 0
    assert offline.impression_click(empty, 10).num_rows == 0
