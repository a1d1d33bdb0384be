"""Example builders: the click attribution window's edges, and next-item negatives."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from tests.conftest import T0, random_events
from features.labels import LabelPolicy, build_examples
from features.schema import BEHAVIOR_TYPES, Event

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
CATEGORIES = CATALOG % 7


def next_item_policy(**kw):
    return LabelPolicy(**{"kind": "next_item", "negatives": 3, "min_history": 1, "seed": 0, **kw})


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
        for policy in (next_item_policy(), next_item_policy(negatives=1, min_history=3), next_item_policy(negatives=0)):
            rows = build_examples(events, policy, CATALOG, CATEGORIES)
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
                    assert cat == CATEGORIES[item - 1000]


def test_negatives_never_contradict_a_positive_at_the_same_time():
    """Two behaviors in one millisecond: neither item may be the other's negative."""
    events = [Event("a", 1, 0, "view", T0), Event("b", 1, 1, "view", T0), Event("c", 1, 2, "view", T0 + 5)]
    catalog = np.arange(4, dtype=np.int64)
    for seed in range(30):
        rows = build_examples(events, next_item_policy(min_history=0, negatives=2, seed=seed), catalog, catalog)
        positives = {(r[1], r[3]) for r in rows if r[4] == 1}
        negatives = {(r[1], r[3]) for r in rows if r[4] == 0}
        assert not positives & negatives
        assert {item for item, ts in negatives if ts == T0} <= {2, 3}


def test_negatives_are_seeded_and_deterministic():
    events = user_events(3)
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    a = build_examples(events, next_item_policy(seed=7), CATALOG, CATEGORIES)
    assert build_examples(shuffled, next_item_policy(seed=7), CATALOG, CATEGORIES) == a
    b = build_examples(events, next_item_policy(seed=8), CATALOG, CATEGORIES)
    assert [r for r in a if r[4] == 1] == [r for r in b if r[4] == 1]
    assert [r for r in a if r[4] == 0] != [r for r in b if r[4] == 0]
    # Seeds are per event: later events never change the examples of earlier ones.
    earlier = [e for e in events if e.timestamp < T0 + 15]
    prefix = build_examples(earlier, next_item_policy(seed=7), CATALOG, CATEGORIES)
    assert 0 < len(prefix) < len(a) and a[:len(prefix)] == prefix
    negs = Counter(r[1] for r in a if r[4] == 0)
    assert len(negs) > 20  # spread over the catalog, not one repeated item


def test_user_who_has_seen_everything_gets_no_negatives():
    catalog = np.array([10, 11], dtype=np.int64)
    events = [Event("a", 1, 10, "view", T0), Event("b", 1, 11, "view", T0 + 1), Event("c", 1, 10, "buy", T0 + 2)]
    rows = build_examples(events, next_item_policy(negatives=5), catalog, catalog)
    assert [r[4] for r in rows] == [1, 1]


def test_next_item_needs_a_catalog_and_policies_validate():
    with pytest.raises(ValueError, match="catalog"):
        build_examples([Event("a", 1, 1, "view", T0)], next_item_policy())
    with pytest.raises(ValueError):
        LabelPolicy(kind="clicks")
    with pytest.raises(ValueError):
        LabelPolicy(window_ms=0)
    with pytest.raises(ValueError):
        LabelPolicy(negatives=-1)
