"""The Feast store of a run folder: open, apply, materialize, read and write online."""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore, RepoConfig

from feature_repo.definitions import (
    ITEM_CONTENT,
    ITEM_CONTENT_FIELDS,
    USER_SEQUENCE,
    definitions,
    view_fields,
)
from feature_repo.online_stores import MonotonicRedisOnlineStoreConfig, MonotonicSqliteOnlineStoreConfig
from features.tables import PACKED_KIND
from pipelines.store.online_config import OnlineStore
from pipelines.store.online_rows import OnlineTable, join_keys
from pipelines.store.outages import with_timeouts
from features.item_vectors import (
    DEFAULT_VERSION,
    EmbeddingVersionMismatch,
    serving_version,
    version_dir,
)


def open_store(workdir: Path, online: OnlineStore = OnlineStore()) -> FeatureStore:
    """A FeatureStore over workdir: offline tables in workdir/offline, registry in workdir/feast."""
    workdir = Path(workdir).resolve()
    (workdir / "feast").mkdir(parents=True, exist_ok=True)
    # Both stores never go back in time, atomically, whoever writes (feature_repo/online_stores.py).
    if online.kind == "redis":
        online_cfg = MonotonicRedisOnlineStoreConfig(connection_string=with_timeouts(online.connection_string()))
    else:
        online_cfg = MonotonicSqliteOnlineStoreConfig(path=str(workdir / "feast" / "online.db"))
    config = RepoConfig(
        project="recstream",
        provider="local",
        registry=str(workdir / "feast" / "registry.db"),
        online_store=online_cfg,
        # by name: Feast imports Dask (and with it SciPy) only when the offline store is used.
        # The stream's operators use the online store only, inside the TaskManager's JVM, where
        # loading SciPy's native FFT module has hung the job's start (docs/reliability.md).
        offline_store="dask",
        entity_key_serialization_version=3,
        repo_path=workdir,
    )
    return FeatureStore(config=config)


def apply(store: FeatureStore, workdir: Path) -> list[str]:
    """Register every definition (idempotent); returns the names applied."""
    objects = definitions(str(Path(workdir).resolve() / "offline"))
    store.apply(list(objects.values()))
    return sorted(objects)


def materialize(store: FeatureStore, workdir: Path, views: list[str]) -> dict[str, int]:
    """Load each view's offline rows online; returns rows per view. Every view goes through
    write_rows, which never moves a key back in time: the stream writes these views too, and
    Feast's own materialize would overwrite a fresher streamed row with an older batch one."""
    rows = {}
    for name in views:
        table = ds.dataset(Path(workdir) / "offline" / name, format="parquet").to_table()
        rows[name] = table.num_rows
        for batch in table.to_batches(max_chunksize=5_000):
            write_rows(store, name, batch.to_pylist())
    return rows


def materialize_user_sequences(store: FeatureStore, workdir: Path) -> int:
    """Load the latest user_sequence rows into the online store; returns the row count."""
    return materialize(store, workdir, [USER_SEQUENCE])[USER_SEQUENCE]


def read_rows(store: FeatureStore, view: str, keys: list, fields: list[str] | None = None,
              arrays: bool = False) -> list[dict | None]:
    """A view's online rows for keys (an int per key, or a tuple for (user_id, category_id)), None
    where the store holds none. fields: all of the view's (default) or these. ``arrays``: a packed
    view's lists as numpy arrays (what a model takes; no copy into Python lists)."""
    fields = list(fields or view_fields(view))
    if view in PACKED_KIND:
        return _packed_reader(store, view).read(keys, fields, arrays) if keys else []
    names = join_keys(view)
    return read_online(store, view, fields, [dict(zip(names, k if isinstance(k, tuple) else (k,))) for k in keys])


def read_user_features(store: FeatureStore, user_ids: list[int], now_ms: int | None = None) -> dict[int, dict]:
    """What serving reads for users: the lifelong and recent sequences, and the statistics as of
    now_ms (default: the clock), computed exactly from the stats row's tiles (features.stats.read_at),
    so they do not go stale between events."""
    import time

    from features import stats

    now = int(time.time() * 1000) if now_ms is None else now_ms
    views = {view: read_rows(store, view, user_ids) for view in ("user_sequence", "user_recent", "user_stats")}
    out = {}
    for i, user in enumerate(user_ids):
        row = views["user_stats"][i]
        values = None if row is None else stats.read_at(row, max(now, int(row["newest_ms"]) + 1))
        out[user] = {"user_sequence": views["user_sequence"][i], "user_recent": views["user_recent"][i],
                     "user_stats": values}
    return out


def read_user_sequences(store: FeatureStore, user_ids: list[int]) -> dict[int, dict | None]:
    """Online user_sequence features by user; None for users the store does not hold."""
    return {int(u): row for u, row in zip(user_ids, read_rows(store, USER_SEQUENCE, [int(u) for u in user_ids]))}


def read_online(store: FeatureStore, view: str, fields: list[str], entity_rows: list[dict],
                arrays: bool = False) -> list[dict | None]:
    """Any view's online features for entity rows (join keys -> values), None where absent, through
    Feast. A view in PACKED_KIND is read as its one packed value and unpacked, through Feast's online
    store interface (the provider's online_read, as get_online_features reads it, without its
    per-request response building: pipelines/store/online_rows.py); other views through
    get_online_features."""
    if not entity_rows:
        return []
    if view in PACKED_KIND:
        names = join_keys(view)
        keys = [tuple(r[n] for n in names) if len(names) > 1 else r[names[0]] for r in entity_rows]
        return read_rows(store, view, keys, fields, arrays)
    got = store.get_online_features(features=[f"{view}:{f}" for f in fields], entity_rows=entity_rows).to_dict()
    out = []
    for i in range(len(entity_rows)):
        row = {f: got[f][i] for f in fields}
        out.append(None if all(v is None for v in row.values()) else row)
    return out


def _packed_reader(store: FeatureStore, view: str) -> OnlineTable:
    """The store's reader of a packed view, kept on the store (so it goes when the store goes); a
    store's readers share one provider and its connections. The packed views' definitions never
    change (feature_repo/definitions.py), so a reader stays valid as long as its store."""
    readers = store.__dict__.setdefault("_recstream_readers", {})
    if view not in readers:
        provider = next(iter(readers.values())).provider if readers else None
        readers[view] = OnlineTable(store, view, provider)
    return readers[view]


def write_rows(store: FeatureStore, view: str, rows: list[dict]) -> int:
    """Write a view's rows online, never moving a key back in time (online_rows.OnlineTable.write);
    returns the number written."""
    return OnlineTable(store, view).write(rows)


def write_user_sequences(store: FeatureStore, rows: list[dict]) -> int:
    """write_rows for user_sequence (user_id + its fields)."""
    return write_rows(store, USER_SEQUENCE, rows)


def materialize_item_vectors(store: FeatureStore, workdir: Path) -> int:
    """Load the serving encoder version's item vectors online (after ``apply``, which points
    the item_content view at that version); returns the number of vector rows read."""
    offline = Path(workdir) / "offline"
    version = serving_version(offline) or DEFAULT_VERSION
    folder = version_dir(offline, version)
    if not folder.is_dir():
        return 0
    table = ds.dataset(folder, format="parquet").to_table(columns=["valid_from_ts"])
    if table.num_rows == 0:
        return 0
    # Another version's vectors are replaced whole, whatever their times: the online store keeps
    # the newest row of a key, and a new version's first vectors are valid since 1990.
    marker = Path(workdir) / "feast" / "item_content_version"
    if not marker.is_file() or marker.read_text() != version:
        _clear_online(store, ITEM_CONTENT)
    lo, hi = pc.min_max(table.column("valid_from_ts")).values()
    # Feast prints a coloured banner and a progress bar of its own: the command says what it did instead.
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        store.materialize(lo.as_py() - timedelta(seconds=1), hi.as_py() + timedelta(seconds=1),
                          feature_views=[ITEM_CONTENT])
    marker.write_text(version)
    return table.num_rows


def _clear_online(store: FeatureStore, view_name: str) -> None:
    """Remove a view's online rows (feature_repo/online_stores.py: SQLite or Redis)."""
    store._get_provider().online_store.clear(store.config, store.get_feature_view(view_name))


def read_item_vectors(store: FeatureStore, item_ids: list[int],
                      expected_version: str | None = None) -> dict[int, dict | None]:
    """Online item_content features by item (vector as a list of floats, encoder_version,
    modalities); None for items the store does not hold. With ``expected_version`` (the
    version a model was trained with), a vector of any other version raises
    EmbeddingVersionMismatch instead of reaching the model."""
    rows = read_online(store, ITEM_CONTENT, list(ITEM_CONTENT_FIELDS), [{"item_id": int(i)} for i in item_ids])
    for row in rows:
        if row is not None and expected_version is not None and row["encoder_version"] != expected_version:
            raise EmbeddingVersionMismatch(expected_version, row["encoder_version"])
    return {int(i): row for i, row in zip(item_ids, rows)}
