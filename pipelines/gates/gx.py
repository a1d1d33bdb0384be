"""Great Expectations, run the one way every gate runs it: an ephemeral context, a pandas frame,
a suite, and a GateResult naming each failed expectation with what it observed."""
from __future__ import annotations

import functools
import itertools
import logging
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from pipelines.gates.result import GateResult

_ASSETS = itertools.count()


@functools.cache
def _context():
    """One ephemeral GX context per process (each new one makes a temporary folder)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx, ctx.data_sources.add_pandas("recstream")


def run_suite(table: pa.Table | pd.DataFrame, make_suite: Callable, name: str) -> GateResult:
    """Validate ``table`` against the GX ExpectationSuite ``make_suite()`` builds (a suite needs the
    context first); the result names every failed expectation."""
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    _, source = _context()
    suite = make_suite()
    asset = f"{suite.name}-{next(_ASSETS)}"
    batch = (source.add_dataframe_asset(asset)
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df}))
    result = batch.validate(suite)
    failures, reasons = [], []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            kw = cfg.kwargs
            where = kw.get("column") or (f"{kw['column_A']}, {kw['column_B']}" if "column_A" in kw else None) \
                or ", ".join(kw.get("column_list") or []) or "table"
            observed = r.result.get("observed_value", r.result.get("partial_unexpected_list"))
            failures.append(f"{cfg.type}({where}) observed {observed!r}")
            reason = (cfg.meta or {}).get("reason")
            if reason and reason not in reasons:
                reasons.append(reason)
    return GateResult(name, result.success, failures, len(result.results), reasons)


def load_suite(path) -> object:
    """A GX ExpectationSuite from its JSON (name, expectations, meta), as GX writes it."""
    import json

    import great_expectations as gx

    data = json.loads(Path(path).read_text())
    return gx.ExpectationSuite(name=data["name"], expectations=data["expectations"], meta=data.get("meta") or {})
