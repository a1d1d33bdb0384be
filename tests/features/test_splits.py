import numpy as np
import pyarrow as pa
import pytest

from features.splits import time_splits


def _table(ts):
    return pa.table({"timestamp": pa.array(ts, pa.int64()), "row": pa.array(np.arange(len(ts)))})


def test_slices_are_ordered_in_time_and_cover_every_row():
    rng = np.random.default_rng(0)
    ts = rng.integers(0, 1_000_000, 5_000)
    s = time_splits(_table(ts), 0.1, 0.2)
    assert s.train.num_rows + s.valid.num_rows + s.test.num_rows == len(ts)
    assert set(s.train["row"].to_pylist()) | set(s.valid["row"].to_pylist()) | set(s.test["row"].to_pylist()) \
        == set(range(len(ts)))
    assert max(s.train["timestamp"].to_pylist()) < min(s.valid["timestamp"].to_pylist())
    assert max(s.valid["timestamp"].to_pylist()) < min(s.test["timestamp"].to_pylist())
    # Cuts on the time range: the test slice is the last 20% of [min, max].
    lo, hi = ts.min(), ts.max()
    assert s.test_from == hi - int((hi - lo) * 0.2)
    assert s.valid_from == s.test_from - int((hi - lo) * 0.1)


def test_equal_timestamps_never_straddle_a_cut():
    ts = [0, 10, 10, 10, 20, 20, 30]
    s = time_splits(_table(ts), 0.34, 0.34)
    for part in (s.train, s.valid, s.test):
        others = [p for p in (s.train, s.valid, s.test) if p is not part]
        mine = set(part["timestamp"].to_pylist())
        assert not any(mine & set(o["timestamp"].to_pylist()) for o in others)


def test_zero_fractions_leave_slices_empty():
    s = time_splits(_table([1, 2, 3]), 0.0, 0.0)
    assert (s.train.num_rows, s.valid.num_rows, s.test.num_rows) == (3, 0, 0)


@pytest.mark.parametrize("valid, test, match", [(-0.1, 0.1, "valid_fraction"), (0.1, 1.0, "test_fraction"),
                                                (0.5, 0.5, "< 1")])
def test_bad_fractions_are_refused(valid, test, match):
    with pytest.raises(ValueError, match=match):
        time_splits(_table([1, 2]), valid, test)


def test_empty_table_is_refused():
    with pytest.raises(ValueError, match="empty"):
        time_splits(_table([]), 0.1, 0.1)
