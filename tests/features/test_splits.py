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
    # Cuts at row quantiles: the test slice is the latest 20% of the rows (ties go to the later slice).
    ordered = np.sort(ts)
    assert s.test_from == ordered[4_000] and s.valid_from == ordered[3_500]
    assert 990 <= s.test.num_rows <= 1_000 + np.sum(ts == ordered[4_000]) and 490 <= s.valid.num_rows <= 510


def test_cuts_follow_the_rows_not_the_time_range():
    """Nine rows in the last day of a ten-year range: a cut on the range would put them all in the test
    slice and train on one row; a row-quantile cut trains on most of them."""
    ts = [0] + [3_650 * 86_400_000 + i for i in range(99)]
    s = time_splits(_table(ts), 0.1, 0.1)
    assert (s.train.num_rows, s.valid.num_rows, s.test.num_rows) == (80, 10, 10)


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
