"""Time-based splits: train on the past, validate on the next slice, test on the last.

Cuts are taken on the time range (not on row counts), so every row of the
validation slice is later than every training row, and every test row later
than every validation row. Model selection reads the validation slice only.
"""
from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc


class Splits(NamedTuple):
    train: pa.Table
    valid: pa.Table
    test: pa.Table
    valid_from: int  # first timestamp (ms) of the validation slice
    test_from: int  # first timestamp (ms) of the test slice


def time_splits(table: pa.Table, valid_fraction: float, test_fraction: float) -> Splits:
    """Split rows by ``timestamp`` into [.., valid_from), [valid_from, test_from), [test_from, ..]."""
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction + test_fraction must be < 1, got {valid_fraction} + {test_fraction}")
    if table.num_rows == 0:
        raise ValueError("cannot split an empty table by time: the training set has no rows")
    ts = table.column("timestamp")
    lo, hi = (v.as_py() for v in pc.min_max(ts).values())
    span = hi - lo
    test_from = hi - int(span * test_fraction) if test_fraction else hi + 1
    valid_from = test_from - int(span * valid_fraction) if valid_fraction else test_from
    return Splits(
        train=table.filter(pc.less(ts, valid_from)),
        valid=table.filter(pc.and_(pc.greater_equal(ts, valid_from), pc.less(ts, test_from))),
        test=table.filter(pc.greater_equal(ts, test_from)),
        valid_from=valid_from, test_from=test_from)
