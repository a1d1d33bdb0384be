"""Sequence state algebra: order independence, merge laws, the naive oracle, bounded memory."""
from __future__ import annotations

import random

import pytest

from tests.conftest import T0, naive_sequence, random_events
from features import sequence
from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, Event
from features.sequence import SequencePolicy

POLICIES = [SequencePolicy(max_len=1), SequencePolicy(max_len=3), SequencePolicy(max_len=7),
            SequencePolicy(max_len=500), SequencePolicy(max_len=4, event_types=frozenset({"click", "buy"})),
            SequencePolicy(max_len=5, event_types=frozenset({"impression", "click"}))]


def state_of(events, policy):
    return sequence.add_all(sequence.empty(), events, policy)


def final(events, policy):
    return sequence.finalize(state_of(events, policy), policy)


def cases(n_cases=40):
    """(rng, events, policy) triples: seeded, with duplicates of both kinds and colliding timestamps."""
    for seed in range(n_cases):
        rng = random.Random(seed)
        events = random_events(rng, rng.randrange(0, 160), span_ms=rng.choice([5, 40, 400]))
        yield rng, events, POLICIES[seed % len(POLICIES)]


def test_cases_exercise_the_hard_parts():
    dup_ids = differing_copies = same_time = 0
    for _, events, _ in cases():
        ids = [e.event_id for e in events]
        dup_ids += len(ids) - len(set(ids))
        differing_copies += len(set(events)) - len(set(ids))
        same_time += len(events) - len({e.timestamp for e in events})
    assert dup_ids > 300 and differing_copies > 150 and same_time > 1000


def test_finalize_equals_naive_oracle():
    for _, events, policy in cases():
        assert final(events, policy) == naive_sequence(events, policy.max_len, policy.event_types)


def test_add_order_does_not_matter():
    for rng, events, policy in cases():
        expected = final(events, policy)
        for _ in range(5):
            shuffled = events[:]
            rng.shuffle(shuffled)
            assert final(shuffled, policy) == expected


def test_merge_of_split_states_equals_state_of_all():
    for rng, events, policy in cases():
        expected = final(events, policy)
        for _ in range(5):
            shuffled = events[:]
            rng.shuffle(shuffled)
            cuts = sorted(rng.randrange(len(events) + 1) for _ in range(rng.randrange(1, 5)))
            parts = [shuffled[a:b] for a, b in zip([0] + cuts, cuts + [len(events)])]
            merged = sequence.merge([state_of(p, policy) for p in parts], policy)
            assert sequence.finalize(merged, policy) == expected
            assert len(merged) <= 2 * policy.max_len


def test_merge_is_associative_and_commutative():
    for rng, events, policy in cases():
        a, b, c = (events[i::3] for i in range(3))
        st = lambda evs: state_of(evs, policy)  # noqa: E731 — fresh states: merge reuses its first argument
        left = sequence.merge([sequence.merge([st(a), st(b)], policy), st(c)], policy)
        right = sequence.merge([st(a), sequence.merge([st(b), st(c)], policy)], policy)
        swapped = sequence.merge([st(c), st(a), st(b)], policy)
        assert sequence.finalize(left, policy) == sequence.finalize(right, policy) == sequence.finalize(swapped, policy)


def test_merge_identity_and_empty():
    policy = SequencePolicy(max_len=3)
    events = random_events(random.Random(9), 50)
    expected = final(events, policy)
    assert sequence.finalize(sequence.merge([sequence.empty(), state_of(events, policy)], policy), policy) == expected
    assert sequence.finalize(sequence.merge([state_of(events, policy), sequence.empty()], policy), policy) == expected
    assert sequence.merge([], policy) == {}
    empty = sequence.finalize(sequence.empty(), policy)
    assert empty == {"seq_item_ids": [], "seq_category_ids": [], "seq_event_types": [], "seq_timestamps": [],
                     "seq_length": 0, "last_event_ms": 0}


def test_cap_holds_and_memory_is_bounded():
    rng = random.Random(5)
    policy = SequencePolicy(max_len=10)
    state = sequence.empty()
    events = random_events(rng, 5_000, items=1_000, span_ms=100_000)
    for e in events:
        sequence.add(state, e, policy)
        assert len(state) <= 2 * policy.max_len
    out = sequence.finalize(state, policy)
    assert out["seq_length"] == policy.max_len == len(out["seq_item_ids"]) == len(out["seq_timestamps"])
    assert out == naive_sequence(events, policy.max_len)
    merged = sequence.merge([state_of(events[:2500], policy), state_of(events[2500:], policy)], policy)
    assert len(merged) <= 2 * policy.max_len


def test_evicted_event_is_not_revived_by_an_older_copy():
    """max_len=2: X is pruned by newer events; an older copy of X arriving later must stay out."""
    policy = SequencePolicy(max_len=2)
    mk = lambda eid, ts, item: Event(eid, 1, item, "click", T0 + ts)  # noqa: E731
    events = [mk("x", 100, 1), mk("a", 200, 2), mk("b", 300, 3), mk("c", 400, 4), mk("d", 500, 5), mk("x", 5, 9)]
    assert final(events, policy)["seq_item_ids"] == [4, 5]
    # ...but a newer copy of an evicted event does come back, as the canonical one.
    events.append(mk("x", 600, 7))
    assert final(events, policy)["seq_item_ids"] == [5, 7]


def test_sequence_is_time_ordered_with_event_id_tiebreak():
    policy = SequencePolicy(max_len=10)
    events = [Event("b", 1, 20, "view", T0 + 5), Event("a", 1, 10, "buy", T0 + 5), Event("c", 1, 30, "cart", T0 + 1),
              Event("d", 1, 40, "impression", T0 + 2)]
    out = final(events, policy)
    assert out["seq_item_ids"] == [30, 10, 20]
    assert out["seq_timestamps"] == [T0 + 1, T0 + 5, T0 + 5]
    assert out["seq_event_types"] == [4, 6, 3]  # codes of cart, buy, view (impression is not a behavior)
    assert out["seq_category_ids"] == [0, 0, 0] and out["last_event_ms"] == T0 + 5


def test_from_features_round_trip_and_continue():
    """A state rebuilt from finalized features (a stream restart) continues like the original."""
    rng = random.Random(11)
    policy = SequencePolicy(max_len=6)
    old = random_events(rng, 80, span_ms=1_000)
    new = [e._replace(event_id=f"n{i}", timestamp=e.timestamp + 10_000) for i, e in enumerate(random_events(rng, 30))]
    features = final(old, policy)
    rebuilt = sequence.from_features(features)
    assert sequence.finalize(rebuilt, policy) == features
    assert sequence.finalize(sequence.add_all(rebuilt, new, policy), policy) == final(old + new, policy)


def test_policy_validation():
    with pytest.raises(ValueError, match="max_len"):
        SequencePolicy(max_len=0)
    with pytest.raises(ValueError, match="teleport"):
        SequencePolicy(event_types=frozenset({"click", "teleport"}))
    assert SequencePolicy().event_types == BEHAVIOR_TYPES


# --- per-type caps ----------------------------------------------------------------------------

CAPPED = [SequencePolicy(max_len=6, type_caps={"click": 2}),
          SequencePolicy(max_len=4, type_caps={"click": 1, "buy": 3, "view": 9}),
          SequencePolicy(max_len=30, type_caps={"view": 2, "cart": 1, "fav": 1, "buy": 1, "rate": 1, "click": 3}),
          SequencePolicy(max_len=3, event_types=frozenset({"click", "buy"}), type_caps={"buy": 1})]


def naive_capped_sequence(events, policy: SequencePolicy) -> dict:
    """The slow obvious capped sequence: each capped type's copies, and the uncapped types' copies,
    form a pool; in each pool one copy per event_id (the greatest tuple), its most recent
    min(cap, max_len); then one copy per event_id across pools (the greatest), the last max_len."""
    caps = dict(policy.type_caps)
    pools: dict = {}
    for e in events:
        if e.event_type in policy.event_types:
            t = (e.timestamp, e.event_id, e.item_id, e.category_id or 0, EVENT_TYPE_CODE[e.event_type])
            pool = pools.setdefault(e.event_type if e.event_type in caps else None, {})
            if e.event_id not in pool or t > pool[e.event_id]:
                pool[e.event_id] = t
    best: dict = {}
    for name, pool in pools.items():
        limit = policy.max_len if name is None else min(caps[name], policy.max_len)
        for t in sorted(pool.values())[-limit:]:
            if t[1] not in best or t > best[t[1]]:
                best[t[1]] = t
    kept = sorted(best.values())[-policy.max_len:]
    return {"seq_item_ids": [t[2] for t in kept], "seq_category_ids": [t[3] for t in kept],
            "seq_event_types": [t[4] for t in kept], "seq_timestamps": [t[0] for t in kept],
            "seq_length": len(kept), "last_event_ms": kept[-1][0] if kept else 0}


def test_naive_capped_oracle_without_caps_is_the_plain_oracle():
    for _, events, policy in cases():
        assert naive_capped_sequence(events, policy) == naive_sequence(events, policy.max_len, policy.event_types)


def test_capped_finalize_equals_oracle_in_any_order_and_merge_tree():
    differs = 0
    for k, (rng, events, _) in enumerate(cases()):
        policy = CAPPED[k % len(CAPPED)]
        expected = naive_capped_sequence(events, policy)
        assert final(events, policy) == expected
        differs += expected != final(events, SequencePolicy(policy.max_len, policy.event_types))
        for _ in range(3):
            shuffled = events[:]
            rng.shuffle(shuffled)
            assert final(shuffled, policy) == expected
            cuts = sorted(rng.randrange(len(events) + 1) for _ in range(rng.randrange(1, 5)))
            parts = [shuffled[a:b] for a, b in zip([0] + cuts, cuts + [len(events)])]
            assert sequence.finalize(sequence.merge([state_of(p, policy) for p in parts], policy), policy) == expected
    assert differs > 10  # the caps change many of the sequences


def test_caps_keep_rare_types_from_further_back():
    """300 recent clicks would crowd out the 3 old purchases; a click cap keeps them."""
    buys = [Event(f"b{i}", 1, 100 + i, "buy", T0 + i) for i in range(3)]
    clicks = [Event(f"c{i}", 1, i, "click", T0 + 1_000 + i) for i in range(300)]
    plain = final(buys + clicks, SequencePolicy(max_len=10))
    capped = final(clicks + buys, SequencePolicy(max_len=10, type_caps={"click": 7}))
    assert plain["seq_item_ids"] == list(range(290, 300))
    assert capped["seq_item_ids"] == [100, 101, 102] + list(range(293, 300))
    assert capped["seq_event_types"] == [EVENT_TYPE_CODE["buy"]] * 3 + [EVENT_TYPE_CODE["click"]] * 7


def test_capped_state_stays_bounded():
    policy = SequencePolicy(max_len=10, type_caps={"click": 3, "view": 4})
    state = sequence.empty()
    events = random_events(random.Random(8), 5_000, items=1_000, span_ms=100_000)
    for e in events:
        sequence.add(state, e, policy)
        assert len(state) <= 2 * policy.state_limit() == 2 * (10 + 3 + 4)
    assert sequence.finalize(state, policy) == naive_capped_sequence(events, policy)


def test_capped_from_features_round_trip_and_continue():
    rng = random.Random(12)
    policy = SequencePolicy(max_len=6, type_caps={"click": 2, "view": 1})
    old = random_events(rng, 80, span_ms=1_000)
    new = [e._replace(event_id=f"n{i}", timestamp=e.timestamp + 10_000) for i, e in enumerate(random_events(rng, 30))]
    features = final(old, policy)
    rebuilt = sequence.from_features(features, policy)
    assert sequence.finalize(rebuilt, policy) == features
    assert sequence.finalize(sequence.add_all(rebuilt, new, policy), policy) == final(old + new, policy)


def test_type_caps_validation_and_config():
    from pipelines.config import ConfigError, from_dict, to_dict

    with pytest.raises(ValueError, match="impression"):
        SequencePolicy(type_caps={"impression": 3})  # not one of the policy's event types
    with pytest.raises(ValueError, match="'click'.*>= 1"):
        SequencePolicy(type_caps={"click": 0})
    with pytest.raises(ValueError, match="integer"):
        SequencePolicy(type_caps={"click": 2.5})
    policy = SequencePolicy(max_len=50, type_caps={"click": 20, "buy": 5})
    assert policy.type_caps == (("buy", 5), ("click", 20)) and policy == SequencePolicy(50, type_caps=policy.type_caps)
    assert from_dict(SequencePolicy, {"max_len": 50, "type_caps": {"click": 20, "buy": 5}}) == policy
    assert from_dict(SequencePolicy, to_dict(policy)) == policy
    with pytest.raises(ConfigError, match="teleport"):
        from_dict(SequencePolicy, {"type_caps": {"teleport": 1}})
