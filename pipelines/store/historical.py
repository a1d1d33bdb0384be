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
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from feature_repo.definitions import PACKED, view_fields
from features.errors import InputError, MissingInput
from features.historical import point_in_time
from features.id_dictionary import ENTITIES, IdDictionary
from features.packed import unpack
from features.pit import sort_log
from features.tables import PACKED_KIND, TABLES
from pipelines.store.feature_store import open_store

REQUIRED = ("user_id", "timestamp")


def historical_features(workdir: Path, entities: pa.Table, caps: dict[str, int],
                        feast_refs: list[str] | None = None, notes: list[str] | None = None) -> pa.Table:
    """Point-in-time features for every entity row, in the rows' order.

    Args:
        workdir: a run folder the backfill wrote (offline/behavior_log and event_log).
        entities: user_id, timestamp (ms) and optionally item_id, category_id: raw IDs as in the
            data (hashed here with features.ids), or the run's hashed IDs (kept as they are).
        caps: each sequence view's length cap.
        feast_refs: more Feast features to join, e.g. ["item_content:vector"].
        notes: where given, gets a line per ID column that held hashed IDs.

    Returns:
        the entity columns (hashed IDs) with raw_<column> beside each (the run's raw ID, from its
        ID dictionary; null where it has none), every sequence and statistics feature as of each
        row's time (strictly before it), and the Feast features (null where none is older).
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
    entities, raw = _hashed_ids(workdir, entities, event_log, notes if notes is not None else [])
    out = point_in_time(entities, behavior_log, event_log, caps)
    if feast_refs:
        out = _join_feast(out, entities, workdir, feast_refs)
    for name, column in raw.items():
        out = out.add_column(out.column_names.index(name) + 1, f"raw_{name}", column)
    return out


def _hashed_ids(workdir: Path, entities: pa.Table, event_log: pa.Table,
                notes: list[str]) -> tuple[pa.Table, dict[str, pa.Array]]:
    """The entity table with hashed ID columns, and each column's raw IDs. A value that is one of
    the run's hashed IDs (in its event log or ID dictionary) is kept; any other is a raw ID."""
    raw = {}
    for name in [c for c in ENTITIES if c in entities.column_names]:
        column = entities.column(name)
        if column.null_count:
            raise InputError(f"the entity table's {name}", f"has {column.null_count:,} nulls; give every row an ID")
        ids = IdDictionary.load(workdir, name)
        known = set(pc.unique(event_log.column(name)).drop_null().to_pylist()) if name in event_log.column_names else set()
        hashed, given = ids.resolve(column, known)
        if given.any():
            notes.append(f"{int(given.sum()):,} of {len(given):,} {name} values are hashed IDs of this run; "
                         f"kept as they are")
        entities = entities.set_column(entities.column_names.index(name), name, pa.array(hashed, pa.int64()))
        raw[name] = ids.raw(hashed)
    return entities, raw


def _join_feast(out: pa.Table, entities: pa.Table, workdir: Path, refs: list[str]) -> pa.Table:
    """Join Feast features onto every row. A view in PACKED_KIND is fetched as its packed value
    (what its Feast schema holds) and the requested fields come out of it."""
    keys = [c for c in ("user_id", "item_id", "category_id") if c in entities.column_names]
    df = entities.select(keys).to_pandas()
    df["event_timestamp"] = pd.to_datetime(entities.column("timestamp").to_numpy(), unit="ms", utc=True)
    df["_row"] = np.arange(len(df))
    store = open_store(workdir)
    _check_refs(store, refs)
    fetch = sorted({f"{ref.split(':', 1)[0]}:{PACKED}" if ref.split(":", 1)[0] in PACKED_KIND else ref
                    for ref in refs})
    got = store.get_historical_features(entity_df=df, features=fetch, full_feature_names=True).to_df()
    got.columns = [c.replace("__", ":", 1) for c in got.columns]
    joined = df[["_row"]].merge(got[["_row", *fetch]], on="_row", how="left").sort_values("_row")
    for ref in refs:
        view, name = ref.split(":", 1)
        if view in PACKED_KIND:
            rows = [unpack(PACKED_KIND[view], v) if isinstance(v, bytes) else None for v in joined[f"{view}:{PACKED}"]]
            column = pa.array([None if r is None else r[name] for r in rows], _offline_type(view, name))
        else:
            column = pa.Array.from_pandas(joined[ref])  # NaN -> null
            declared = _declared_type(store, ref)
            column = column.cast(declared) if declared is not None else column
        out = out.append_column(name, column)
    return out


def _check_refs(store, refs: list[str]) -> None:
    """Every ref names a registered view and one of its features, before any work."""
    views = {v.name: v for v in store.list_feature_views()}
    for ref in refs:
        view, _, name = ref.partition(":")
        if view not in views:
            raise InputError(f"--feast {ref}", f"no view {view!r}; views: {sorted(views)}")
        names = view_fields(view) if view in PACKED_KIND else [f.name for f in views[view].schema]
        if name not in names:
            raise InputError(f"--feast {ref}", f"{view} has no feature {name!r}; it has {list(names)}")


def _declared_type(store, ref: str):
    """The Arrow type a view declares for a feature: Feast's file store turns ints with gaps into floats."""
    view, name = ref.split(":", 1)
    for field in store.get_feature_view(view).schema:
        if field.name == name:
            return {"Int64": pa.int64(), "Int32": pa.int32(), "Float64": pa.float64(),
                    "Float32": pa.float32(), "String": pa.string()}.get(str(field.dtype))
    return None


def _offline_type(view: str, name: str) -> pa.DataType:
    return TABLES[view].field(name).type


def read_entities(path: Path) -> pa.Table:
    """An entity table from Parquet, or from JSON lines (``.jsonl``/``.json``: e.g. the stream's examples)."""
    if Path(path).suffix in (".jsonl", ".json"):
        return pa_json.read_json(path)
    return pq.read_table(path)


def write_historical(workdir: Path, entities_path: Path, out_path: Path, caps: dict[str, int],
                     feast_refs: list[str] | None = None, notes: list[str] | None = None) -> int:
    table = historical_features(workdir, read_entities(entities_path), caps, feast_refs, notes)
    pq.write_table(table, out_path)
    return table.num_rows
