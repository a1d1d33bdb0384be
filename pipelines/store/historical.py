"""Point-in-time training sets from a run folder, for an entity table the user supplies.

Sequences and statistics come from the offline logs (features.historical), exact on
every row. Other views (e.g. item_content vectors) come from Feast's
get_historical_features; Feast's file store drops rows whose key has only newer data,
so its result is joined back onto every input row (missing values are null)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from features.errors import InputError, MissingInput
from features.historical import point_in_time
from features.pit import sort_log
from pipelines.store.feature_store import open_store

REQUIRED = ("user_id", "timestamp")


def historical_features(workdir: Path, entities: pa.Table, caps: dict[str, int],
                        feast_refs: list[str] | None = None) -> pa.Table:
    """Point-in-time features for every entity row, in the rows' order.

    Args:
        workdir: a run folder the backfill wrote (offline/behavior_log and event_log).
        entities: user_id, timestamp (ms) and optionally item_id, category_id.
        caps: each sequence view's length cap.
        feast_refs: more Feast features to join, e.g. ["item_content:vector"].

    Returns:
        the entity columns plus every sequence and statistics feature as of each row's time
        (strictly before it), and the Feast features (null where none is older).
    """
    missing = [c for c in REQUIRED if c not in entities.column_names]
    if missing:
        raise InputError("the entity table", f"lacks {missing}; it needs user_id, timestamp (ms) "
                         f"and optionally item_id, category_id; it has {entities.column_names}")
    offline = Path(workdir) / "offline"
    for name in ("behavior_log", "event_log"):
        if not (offline / name).is_dir():
            raise MissingInput(offline / name, f"run the backfill into {workdir} first")
    behavior_log = sort_log(ds.dataset(offline / "behavior_log", format="parquet").to_table())
    event_log = ds.dataset(offline / "event_log", format="parquet").to_table()
    out = point_in_time(entities, behavior_log, event_log, caps)
    if feast_refs:
        out = _join_feast(out, entities, workdir, feast_refs)
    return out


def _join_feast(out: pa.Table, entities: pa.Table, workdir: Path, refs: list[str]) -> pa.Table:
    keys = [c for c in ("user_id", "item_id", "category_id") if c in entities.column_names]
    df = entities.select(keys).to_pandas()
    df["event_timestamp"] = pd.to_datetime(entities.column("timestamp").to_numpy(), unit="ms", utc=True)
    df["_row"] = np.arange(len(df))
    store = open_store(workdir)
    got = store.get_historical_features(entity_df=df, features=refs).to_df()
    names = [ref.split(":", 1)[1] for ref in refs]
    joined = df[["_row"]].merge(got[["_row", *names]], on="_row", how="left").sort_values("_row")
    for ref, name in zip(refs, names):
        column = pa.Array.from_pandas(joined[name])  # NaN -> null
        declared = _declared_type(store, ref)
        out = out.append_column(name, column.cast(declared) if declared is not None else column)
    return out


def _declared_type(store, ref: str):
    """The Arrow type a view declares for a feature: Feast's file store turns ints with gaps into floats."""
    view, name = ref.split(":", 1)
    for field in store.get_feature_view(view).schema:
        if field.name == name:
            return {"Int64": pa.int64(), "Int32": pa.int32(), "Float64": pa.float64(),
                    "Float32": pa.float32(), "String": pa.string()}.get(str(field.dtype))
    return None


def read_entities(path: Path) -> pa.Table:
    """An entity table from Parquet, or from JSON lines (``.jsonl``/``.json``: e.g. the stream's examples)."""
    if Path(path).suffix in (".jsonl", ".json"):
        return pa_json.read_json(path)
    return pq.read_table(path)


def write_historical(workdir: Path, entities_path: Path, out_path: Path, caps: dict[str, int],
                     feast_refs: list[str] | None = None) -> int:
    table = historical_features(workdir, read_entities(entities_path), caps, feast_refs)
    pq.write_table(table, out_path)
    return table.num_rows
