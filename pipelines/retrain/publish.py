"""A promoted retriever's users' interest vectors, written back into Feast as the user_interests view.

Serving reads them like any other feature (pipelines.store.feature_store.read_rows(store,
"user_interests", users)): K vectors of d floats per user, flattened, with the model version that
made them and the publication time (as_of_ms), which also orders a user's rows, so a later
publication (a rollback included) always replaces an earlier one and never the other way round.
Each publication also appends its rows to WORKDIR/offline/user_interests/ (Parquet), the view's
offline source, so point-in-time training sets can join the interests a user had at a time.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.definitions import USER_INTERESTS
from pipelines.store.feature_store import apply, open_store, write_rows
from trainers.retrieval.train import user_vectors

SCHEMA = pa.schema([pa.field("user_id", pa.int64()), pa.field("interests", pa.list_(pa.float32())),
                    pa.field("num_interests", pa.int64()), pa.field("dim", pa.int64()),
                    pa.field("model_version", pa.string()), pa.field("as_of_ms", pa.int64()),
                    pa.field("feature_ts", pa.timestamp("us", tz="UTC"))])


def publish_interests(workdir: Path, state, cfg, version: str, users: np.ndarray, log: pa.Table,
                      online=None, now_ms: int | None = None) -> int:
    """Compute ``users``' interest vectors from their whole history in ``log`` with a retriever
    state, and write them offline and online; returns the number of users written."""
    users = np.unique(np.asarray(users, np.int64))
    if not len(users):
        return 0
    now = int(time.time() * 1000) if now_ms is None else now_ms
    newest = int(log.column("timestamp").to_numpy().max()) + 1 if log.num_rows else now
    vectors = user_vectors(state, cfg, users, np.full(len(users), newest, np.int64), log)  # [U, K, d]
    _, k, d = vectors.shape
    flat = vectors.reshape(len(users), k * d).astype(np.float32)
    table = pa.table({"user_id": users, "interests": pa.array(list(flat), pa.list_(pa.float32())),
                      "num_interests": np.full(len(users), k, np.int64), "dim": np.full(len(users), d, np.int64),
                      "model_version": pa.array([str(version)] * len(users), pa.string()),
                      "as_of_ms": np.full(len(users), now, np.int64),
                      "feature_ts": pa.array([datetime.fromtimestamp(now / 1000, timezone.utc)] * len(users),
                                             pa.timestamp("us", tz="UTC"))}, schema=SCHEMA)
    folder = Path(workdir) / "offline" / USER_INTERESTS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-{now}-{version}.parquet"
    pq.write_table(table, tmp)
    tmp.rename(folder / f"part-{now}-{version}.parquet")
    store = open_store(Path(workdir), online) if online is not None else open_store(Path(workdir))
    if USER_INTERESTS not in {v.name for v in store.list_feature_views()}:
        apply(store, Path(workdir))
    rows = table.drop_columns(["feature_ts"]).to_pylist()
    for start in range(0, len(rows), 2_000):
        write_rows(store, USER_INTERESTS, rows[start:start + 2_000])
    return len(users)


def read_interests(workdir: Path, users, online=None) -> dict[int, np.ndarray | None]:
    """Users' published interest vectors, [K, d] each (None where none is online)."""
    from pipelines.store.feature_store import read_rows

    store = open_store(Path(workdir), online) if online is not None else open_store(Path(workdir))
    out = {}
    for user, row in zip(users, read_rows(store, USER_INTERESTS, [int(u) for u in users])):
        out[int(user)] = None if row is None else \
            np.asarray(row["interests"], np.float32).reshape(int(row["num_interests"]), int(row["dim"]))
    return out
