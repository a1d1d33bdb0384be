"""Time-based splits: train on the past, validate on the next slice, test on the last.

Cuts are row quantiles of time: the test slice is the latest ``test_fraction``
of the rows, validation the ``valid_fraction`` before them, whatever the time
range (on 14 years of data with most rows in the last two, a cut on the range
would train on the first twelve). Rows that share the cut's timestamp all go to
the later slice, so every validation row is later than every training row and
every test row later than every validation row. Model selection reads the
validation slice only.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Splits(NamedTuple):
    train: pa.Table
    valid: pa.Table
    test: pa.Table
    valid_from: int  # first timestamp (ms) of the validation slice
    test_from: int  # first timestamp (ms) of the test slice


def time_splits(table: pa.Table, valid_fraction: float, test_fraction: float) -> Splits:
    """Split rows by ``timestamp`` into [.., valid_from), [valid_from, test_from), [test_from, ..],
    the cuts at the row quantiles 1 - test_fraction - valid_fraction and 1 - test_fraction."""
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction + test_fraction must be < 1, got {valid_fraction} + {test_fraction}")
    if table.num_rows == 0:
        raise ValueError("cannot split an empty table by time: the training set has no rows")
    ts = table.column("timestamp")
    ordered = np.sort(ts.to_numpy())
    n = len(ordered)
    n_test, n_valid = round(n * test_fraction), round(n * valid_fraction)
    test_from = int(ordered[n - n_test]) if n_test else int(ordered[-1]) + 1
    valid_from = int(ordered[max(n - n_test - n_valid, 0)]) if n_valid else test_from
    return Splits(
        train=table.filter(pc.less(ts, valid_from)),
        valid=table.filter(pc.and_(pc.greater_equal(ts, valid_from), pc.less(ts, test_from))),
        test=table.filter(pc.greater_equal(ts, test_from)),
        valid_from=valid_from, test_from=test_from)
