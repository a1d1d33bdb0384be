"""The data gate of every feature table: a Great Expectations suite per table, checked before
the table is materialized online (pipelines.store.publish) or trained on (the demo)."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa

from features.errors import InputError
from features import stats
from features.validate import MIN_TIMESTAMP_MS
from pipelines.gates.gx import run_suite
from pipelines.gates.result import GateResult

# Sequence tables and the keys that make a row unique.
SEQUENCE_TABLES = {"user_sequence": ("user_id",), "user_recent": ("user_id",),
                   "user_category_sequence": ("user_id", "category_id")}


def _suite(name: str, table: str, max_len: int):
    """The expectations of each table, in one place."""
    import great_expectations as gx

    e = gx.expectations
    suite = gx.ExpectationSuite(name=name)
    rows = [e.ExpectTableRowCountToBeBetween(min_value=1)]
    if table == "examples":
        rows += [
            e.ExpectColumnValuesToNotBeNull(column="user_id"),
            e.ExpectColumnValuesToNotBeNull(column="item_id"),
            e.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
            e.ExpectColumnValuesToBeBetween(column="timestamp", min_value=MIN_TIMESTAMP_MS),
            e.ExpectColumnMeanToBeBetween(column="label", min_value=0.001, max_value=0.999),
        ]
    elif table in SEQUENCE_TABLES:
        keys = SEQUENCE_TABLES[table]
        rows += [e.ExpectColumnValuesToNotBeNull(column=k) for k in keys]
        rows += [
            e.ExpectCompoundColumnsToBeUnique(column_list=list(keys)) if len(keys) > 1
            else e.ExpectColumnValuesToBeUnique(column=keys[0]),
            e.ExpectColumnValuesToBeBetween(column="seq_length", min_value=1, max_value=max_len),
            e.ExpectColumnValuesToBeBetween(column="last_event_ms", min_value=MIN_TIMESTAMP_MS),
        ]
    elif table in ("user_stats", "item_stats"):
        key = f"{table.split('_')[0]}_id"
        rows += [e.ExpectColumnValuesToNotBeNull(column=key), e.ExpectColumnValuesToBeUnique(column=key)]
        rows += [e.ExpectColumnValuesToBeBetween(column=f"{k}_life", min_value=0) for k in stats.KINDS]
        rows += [e.ExpectColumnValuesToBeBetween(column=f"ctr_{w}", min_value=0) for w in (*stats.WINDOWS, "life")]
        windows = [*stats.WINDOWS, "life"]
        rows += [e.ExpectColumnPairValuesAToBeGreaterThanB(column_A=f"{k}_{long}", column_B=f"{k}_{short}",
                                                           or_equal=True)
                 for k in stats.KINDS for short, long in zip(windows, windows[1:])]
    else:
        raise InputError(f"table {table!r}", "has no expectation suite",
                         f"known: examples, {', '.join(SEQUENCE_TABLES)}, user_stats, item_stats")
    for expectation in rows:
        suite.add_expectation(expectation)
    return suite


def validate_table(table: pa.Table | pd.DataFrame, kind: str, max_len: int = 10**6) -> GateResult:
    """Run the suite for ``kind`` on a table; the result names every failed expectation."""
    return run_suite(table, lambda: _suite(f"{kind}_suite", kind, max_len), f"data gate [{kind}]")
