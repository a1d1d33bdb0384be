"""Gates before every promotion: Great Expectations suites on tables, a metric gate on models."""
from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from features import stats
from features.validate import MIN_TIMESTAMP_MS

# Sequence tables and the keys that make a row unique.
SEQUENCE_TABLES = {"user_sequence": ("user_id",), "user_recent": ("user_id",),
                   "user_category_sequence": ("user_id", "category_id")}


_ASSETS = itertools.count()


@dataclass
class GateResult:
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    checked: int = 0

    def summary(self) -> str:
        if self.passed:
            return f"{self.name}: passed ({self.checked} checks)"
        return f"{self.name}: FAILED - " + "; ".join(self.failures)


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
        raise ValueError(f"no expectation suite for table {table!r}; known: examples, "
                         f"{', '.join(SEQUENCE_TABLES)}, user_stats, item_stats")
    for expectation in rows:
        suite.add_expectation(expectation)
    return suite


@functools.cache
def _context():
    """One ephemeral GX context per process (each new one makes a temporary folder)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx, ctx.data_sources.add_pandas("recstream")


def validate_table(table: pa.Table | pd.DataFrame, kind: str, max_len: int = 10**6) -> GateResult:
    """Run the suite for ``kind`` on a table; the result names every failed expectation."""
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    _, source = _context()
    asset = f"{kind}-{next(_ASSETS)}"
    batch = (source.add_dataframe_asset(asset)
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df}))
    result = batch.validate(_suite(f"{kind}_suite", kind, max_len))
    failures = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            kw = cfg.kwargs
            where = kw.get("column") or (f"{kw['column_A']}, {kw['column_B']}" if "column_A" in kw else None) \
                or ", ".join(kw.get("column_list") or []) or "table"
            observed = r.result.get("observed_value", r.result.get("partial_unexpected_list"))
            failures.append(f"{cfg.type}({where}) observed {observed!r}")
    return GateResult(f"data gate [{kind}]", result.success, failures, len(result.results))


def model_gate(metrics: dict, min_auc: float, min_lift: float) -> GateResult:
    """The candidate must reach min_auc and beat the popularity baseline by min_lift."""
    failures = []
    auc, base = metrics.get("auc", float("nan")), metrics.get("baseline_auc", float("nan"))
    if not auc >= min_auc:
        failures.append(f"AUC {auc:.4f} < required {min_auc:.4f}")
    if not auc - base >= min_lift:
        failures.append(f"AUC {auc:.4f} does not beat popularity {base:.4f} by {min_lift:.4f}")
    return GateResult("model gate", not failures, failures, 2)
