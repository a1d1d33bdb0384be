"""Gate every feature table, then put the ones that pass online. A table that fails its
suite is not materialized; its failures are returned (and printed by the callers)."""
from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
from feast import FeatureStore

from feature_repo.definitions import VIEW_ENTITIES
from pipelines.store.feature_store import apply, materialize
from pipelines.gates.result import GateResult
from pipelines.gates.tables import validate_table


def publish(store: FeatureStore, workdir: Path, caps: dict[str, int]) -> tuple[list[GateResult], dict[str, int]]:
    """Gate each view's table (sequence caps by table name), apply, materialize the passing ones.

    Args:
        store: the run folder's FeatureStore (pipelines.store.feature_store.open_store).
        workdir: the run folder the backfill wrote.
        caps: each sequence table's length cap, e.g. {"user_sequence": 200, "user_recent": 50, ...}.

    Returns:
        (one GateResult per table, {view: rows written online} for the tables that passed)
    """
    apply(store, workdir)
    gates, passed = [], []
    for name in VIEW_ENTITIES:
        folder = Path(workdir) / "offline" / name
        if not folder.is_dir():
            continue
        gate = validate_table(ds.dataset(folder, format="parquet").to_table(), name, caps.get(name, 10**9))
        gates.append(gate)
        if gate.passed:
            passed.append(name)
    return gates, materialize(store, workdir, passed)
