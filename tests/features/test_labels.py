"""Example builders: the click attribution window's edges, and next-item negatives."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from tests.conftest import T0, random_events
from features.labels import LabelPolicy, build_examples, next_item_point_in_time
from features.negatives import ItemPool
from features.offline import behavior_log
from features.offline import examples as offline_examples
from features.schema import BEHAVIOR_TYPES, Event, events_to_table
from features.sequence import SequencePolicy

W = 30 * 60 * 1000  # the default window
POLICY = LabelPolicy(kind="impression_click", window_ms=W)


def imp(eid, item, ts, cat=None):
    return Event(eid, 1, item, "impression", ts, category_id=cat)


def click(eid, item, ts):
    return Event(eid, 1, item, "click", ts)


def label_of(events, item=5, ts=T0):
    rows = [r for r in build_examples(events, POLICY) if r[1] == item and r[3] == ts]
    assert len(rows) == 1
    return rows[0][4]


@pytest.mark.parametrize("click_offset,label", [
    (0, 1),           # same millisecond as the impression
    (1, 1),
    (W, 1),           # exactly at +window: still inside
    (W + 1, 0),       # one ms past the window
    (-1, 0),          # before the impression: does not count
    (-W, 0),
])
def test_click_window_edges(click_offset, label):
    assert label_of([imp("i", 5, T0), click("c", 5, T0 + click_offset)]) == label


def test_click_must_be_on_the_same_item():
    assert label_of([imp("i", 5, T0), click("c", 6, T0 + 10)]) == 0


def test_each_impression_is_labeled_on_its_own():
    events = [imp("i1", 5, T0), imp("i2", 5, T0 + 2 * W), click("c", 5, T0 + 2 * W + 7), imp("i3", 9, T0 + 1, cat=4)]
    random.Random(0).shuffle(events)  # input order does not matter
    got = build_examples(events, POLICY)
    assert sorted(got) == sorted([(1, 5, 0, T0, 0), (1, 5, 0, T0 + 2 * W, 1), (1, 9, 4, T0 + 1, 0)])


def test_only_impressions_become_impression_click_examples():
    rng = random.Random(1)
    events = random_events(rng, 300, items=8, span_ms=5 * W)
    got = build_examples(events, POLICY)
    assert len(got) == sum(e.event_type == "impression" for e in events)
    for (user, item, cat, ts, label), e in zip(got, sorted((e for e in events if e.event_type == "impression"),
                                                             key=lambda e: (e.timestamp, e.event_id))):
        assert (user, item, cat, ts) == (e.user_id, e.item_id, e.category_id or 0, e.timestamp)
        clicked = any(c.event_type == "click" and c.item_id == item and ts <= c.timestamp <= ts + W for c in events)
        assert label == int(clicked)


# --- next_item ------------------------------------------------------------------------------

CATALOG = np.arange(1000, 1400, dtype=np.int64)


def next_item_policy(**kw):
    return LabelPolicy(**{"kind": "next_item", "negatives": 3, "min_history": 1, "seed": 0, **kw})


def pool_of(events, births=CATALOG):
    """The pool of ``events`` plus one earlier behavior (another user, T0 - 1) with every item of ``births``."""
    early = [Event(f"born-{i}", 99, int(i), "view", T0 - 1, category_id=int(i) % 7) for i in births]
    return ItemPool.from_events(early + list(events))


def user_events(seed, n=60):
    """One user's deduplicated events (the builders' input) on the first 40 catalog items."""
    rng = random.Random(seed)
    unique = {e.event_id: e for e in random_events(rng, n, span_ms=30)}
    return [e._replace(item_id=int(rng.choice(CATALOG[:40]))) for e in unique.values()]


def split(rows):
    """Group the output as (positive, [negatives]) in order."""
    groups = []
    for row in rows:
        if row[4] == 1:
            groups.append((row, []))
        else:
            groups[-1][1].append(row)
    return groups


def test_next_item_positives_negatives_and_count():
    for seed in range(10):
        events = user_events(seed)
        pool = pool_of(events)
        for policy in (next_item_policy(), next_item_policy(negatives=1, min_history=3), next_item_policy(negatives=0),
                       next_item_policy(sampling="popularity")):
            rows = build_examples(events, policy, pool)
            behaviors = sorted({(e.timestamp, e.event_id): e for e in events if e.event_type in BEHAVIOR_TYPES}.items())
            groups = split(rows)
            # Positives: every behavior after the first min_history, in time order.
            assert [pos[1:4] for pos, _ in groups] == [(e.item_id, e.category_id or 0, e.timestamp)
                                                       for _, e in behaviors[policy.min_history:]]
            for pos, negs in groups:
                assert len(negs) == policy.negatives
                interacted = {e.item_id for e in events if e.event_type in BEHAVIOR_TYPES and e.timestamp <= pos[3]}
                for user, item, cat, ts, label in negs:
                    assert item not in interacted, "a negative the user had already interacted with"
                    assert (user, ts) == (pos[0], pos[3])
                    assert cat == item % 7


def test_no_negative_is_an_item_first_seen_after_its_example():
    """Items come into existence over time (their first behavior, by any user): a negative is
    always an item some behavior took strictly before the example, under either sampling."""
    rng = random.Random(4)
    events = [Event(f"e{i}", rng.randrange(6), rng.randrange(300), "view", T0 + rng.randrange(1000), category_id=3)
              for i in range(400)]
    pool = ItemPool.from_events(events)
    first = {}
    for e in sorted(events, key=lambda e: e.timestamp):
        first.setdefault(e.item_id, e.timestamp)
    for sampling in ("uniform", "popularity"):
        negatives = 0
        for user in range(6):
            mine = [e for e in events if e.user_id == user]
            for _, item, _, ts, label in build_examples(mine, next_item_policy(sampling=sampling, seed=2), pool):
                if label == 0:
                    negatives += 1
                    assert first[item] < ts, f"{sampling}: item {item} first seen at {first[item]}, example at {ts}"
        assert negatives > 500
    # The end-of-data catalog, which the draws used before, breaks this on the same events.
    late = [e for e in events if first[e.item_id] > T0 + 500]
    assert late and any(first[e.item_id] > T0 + 100 for e in late)


def test_the_first_behavior_of_all_gets_no_negative():
    events = [Event("a", 1, 5, "view", T0), Event("b", 1, 6, "view", T0 + 1)]
    rows = build_examples(events, next_item_policy(min_history=0), ItemPool.from_events(events))
    assert [r for r in rows if r[4] == 0] == []  # at T0 nothing exists; at T0 + 1 only item 5, which the user took


def test_popularity_sampling_follows_counts_before_the_example():
    """popularity draws an item in proportion to its behaviors before the example: 90 behaviors
    with item 1 and 10 with item 2 by other users; later events must not count."""
    events = [Event(f"a{i}", 50 + i, 1, "view", T0 + i) for i in range(90)]
    events += [Event(f"b{i}", 200 + i, 2, "view", T0 + 100 + i) for i in range(10)]
    events += [Event(f"c{i}", 300 + i, 3, "view", T0 + 10_000 + i) for i in range(1000)]  # after the examples
    pool = ItemPool.from_events(events)
    user = [Event(f"u{i}", 1, 100 + i, "view", T0 + 5_000 + i) for i in range(400)]
    draws = Counter(r[1] for r in build_examples(user, next_item_policy(sampling="popularity", negatives=1,
                                                                         min_history=0), pool) if r[4] == 0)
    uniform = Counter(r[1] for r in build_examples(user, next_item_policy(negatives=1, min_history=0), pool)
                      if r[4] == 0)
    assert set(draws) <= {1, 2} and set(uniform) <= {1, 2}
    assert 0.83 < draws[1] / sum(draws.values()) < 0.97
    assert 0.35 < uniform[1] / sum(uniform.values()) < 0.65


def test_batch_and_point_in_time_draw_the_same_negatives():
    """The backfill's builder and the retrain loop's point-in-time builder give the same examples
    for the same behaviors and seed."""
    rng = random.Random(9)
    events = [Event(f"e{i}", rng.randrange(5), rng.randrange(80), "view", T0 + rng.randrange(500), category_id=2)
              for i in range(300)]
    table = events_to_table(events)
    log = behavior_log(table, SequencePolicy(max_len=10_000))
    for sampling, min_history in (("uniform", 0), ("popularity", 1), ("uniform", 3)):
        policy = next_item_policy(min_history=min_history, sampling=sampling, seed=5)
        batch = sorted(offline_examples(table, policy).to_pylist(), key=lambda r: tuple(r.values()))
        pit = sorted(next_item_point_in_time(log, log.select(["user_id", "item_id", "category_id", "timestamp",
                                                               "event_id"]), policy).to_pylist(),
                     key=lambda r: tuple(r.values()))
        assert batch == pit and len(batch) > 500


def test_a_positive_never_gets_the_same_negative_twice():
    events = [Event(f"o{i}", 9, i % 3, "view", T0) for i in range(300)]  # three items, item 0 most popular
    user = [Event("u", 1, 7, "view", T0 + 10)]
    for sampling in ("uniform", "popularity"):
        rows = build_examples(user, next_item_policy(negatives=3, min_history=0, sampling=sampling),
                              ItemPool.from_events(events + user))
        assert sorted(r[1] for r in rows if r[4] == 0) == [0, 1, 2]


def test_the_pool_dedups_copies_of_an_event_as_the_backfill_does():
    """A click and an impression with one (user, event_id): the backfill keeps the greatest copy
    (here the later impression), so the item is neither a positive nor taken, nor in the pool."""
    copies = [Event("x", 1, 5, "click", T0), Event("x", 1, 5, "impression", T0 + 1)]
    other = [Event("y", 2, 6, "view", T0 - 5)]
    table = events_to_table(copies + other)
    assert ItemPool.from_table(table).born_items.tolist() == [6]
    parts = [ItemPool.part(table.slice(0, 1)), ItemPool.part(table.slice(1))]  # copies in two chunks
    assert ItemPool.from_parts(parts).born_items.tolist() == [6]


def test_negatives_never_contradict_a_positive_at_the_same_time():
    """Two behaviors in one millisecond: neither item may be the other's negative."""
    events = [Event("a", 1, 0, "view", T0), Event("b", 1, 1, "view", T0), Event("c", 1, 2, "view", T0 + 5)]
    pool = pool_of(events, births=np.arange(4))
    for seed in range(30):
        rows = build_examples(events, next_item_policy(min_history=0, negatives=2, seed=seed), pool)
        positives = {(r[1], r[3]) for r in rows if r[4] == 1}
        negatives = {(r[1], r[3]) for r in rows if r[4] == 0}
        assert not positives & negatives
        assert {item for item, ts in negatives if ts == T0} <= {2, 3}


def test_negatives_are_seeded_and_deterministic():
    events = user_events(3)
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    pool = pool_of(events)
    a = build_examples(events, next_item_policy(seed=7), pool)
    assert build_examples(shuffled, next_item_policy(seed=7), pool_of(shuffled)) == a
    b = build_examples(events, next_item_policy(seed=8), pool)
    assert [r for r in a if r[4] == 1] == [r for r in b if r[4] == 1]
    assert [r for r in a if r[4] == 0] != [r for r in b if r[4] == 0]
    # Seeds are per event: later events never change the examples of earlier ones.
    earlier = [e for e in events if e.timestamp < T0 + 15]
    prefix = build_examples(earlier, next_item_policy(seed=7), pool_of(earlier))
    assert 0 < len(prefix) < len(a) and a[:len(prefix)] == prefix
    negs = Counter(r[1] for r in a if r[4] == 0)
    assert len(negs) > 20  # spread over the catalog, not one repeated item


def test_user_who_has_seen_everything_gets_no_negatives():
    events = [Event("a", 1, 10, "view", T0), Event("b", 1, 11, "view", T0 + 1), Event("c", 1, 10, "buy", T0 + 2)]
    rows = build_examples(events, next_item_policy(negatives=5), pool_of(events, births=[10, 11]))
    assert [r[4] for r in rows] == [1, 1]


def test_next_item_needs_a_pool_and_policies_validate():
    with pytest.raises(ValueError, match="ItemPool"):
        build_examples([Event("a", 1, 1, "view", T0)], next_item_policy())
    with pytest.raises(ValueError):
        LabelPolicy(kind="clicks")
    with pytest.raises(ValueError):
        LabelPolicy(window_ms=0)
    with pytest.raises(ValueError):
        LabelPolicy(negatives=-1)
    with pytest.raises(ValueError, match="sampling"):
        LabelPolicy(sampling="zipf")
