"""bench/state_pickle.py: the states it times are the job's, and they come back equal from their pickles."""
import pickle

from bench.state_pickle import cost, states
from bench.stream_bench import synthetic_lines
from features.user_state import FeaturePolicy


def test_the_states_the_bench_pickles_load_back_equal():
    users, items = states(synthetic_lines(5_000), FeaturePolicy(), behind_ms=300_000)
    assert len(users) > 100 and len(items) > 100
    assert [pickle.loads(pickle.dumps(u)) for u in users] == users
    assert [pickle.loads(pickle.dumps(i)) for i in items] == items
    assert sum(len(u.copies) for u in users) > 0 and any(len(i.starts) for i in items)
    figures = cost(items, rounds=1)
    assert figures["keys"] == len(items) and figures["bytes_per_key"] > 0
