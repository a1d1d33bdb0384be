"""Feast on a temporary run folder: apply, gate, materialize, read back, never back in time."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from features.tables import USER_SEQUENCE_SCHEMA
from feature_repo.definitions import SEQUENCE_FIELDS
from pipelines.store.feature_store import (OnlineStore, apply, materialize_user_sequences, open_store,
                                     read_user_sequences, write_user_sequences)
from tests.helpers import backfilled_run, sequence_row

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("store")
    backfilled_run(work)
    store = open_store(work)
    apply(store, work)
    return work, store


def test_materialized_features_equal_the_offline_table(run):
    work, store = run
    assert materialize_user_sequences(store, work) > 0
    offline = pq.read_table(work / "offline" / "user_sequence").to_pylist()
    online = read_user_sequences(store, [r["user_id"] for r in offline])
    assert len(online) == len(offline)
    for row in offline:
        got = online[row["user_id"]]
        assert {k: list(got[k]) if isinstance(got[k], list) else got[k] for k in SEQUENCE_FIELDS} == \
               {k: row[k] for k in SEQUENCE_FIELDS}


def test_unknown_user_reads_as_none(run):
    _, store = run
    assert read_user_sequences(store, [123456789]) == {123456789: None}


def test_online_features_never_move_back_in_time(run):
    work, store = run
    materialize_user_sequences(store, work)
    row = pq.read_table(work / "offline" / "user_sequence").slice(0, 1).to_pylist()[0]
    older = sequence_row(row["user_id"], [7], row["last_event_ms"] - 1)
    assert write_user_sequences(store, [older]) == 0
    assert list(read_user_sequences(store, [row["user_id"]])[row["user_id"]]["seq_item_ids"]) == row["seq_item_ids"]
    newer = sequence_row(row["user_id"], [7, 8], row["last_event_ms"] + 1)
    assert write_user_sequences(store, [newer]) == 1
    assert list(read_user_sequences(store, [row["user_id"]])[row["user_id"]]["seq_item_ids"]) == [7, 8]


def test_materializing_again_does_not_undo_a_fresher_online_row(run):
    """After a stream moved a user forward, re-materializing the older backfill row is skipped."""
    work, store = run
    materialize_user_sequences(store, work)
    row = pq.read_table(work / "offline" / "user_sequence").slice(1, 1).to_pylist()[0]
    fresher = sequence_row(row["user_id"], [42], row["last_event_ms"] + 60_000)
    assert write_user_sequences(store, [fresher]) == 1
    materialize_user_sequences(store, work)
    assert read_user_sequences(store, [row["user_id"]])[row["user_id"]]["seq_item_ids"] == [42]


def test_empty_table_materializes_nothing(tmp_path):
    (tmp_path / "offline" / "user_sequence").mkdir(parents=True)
    pq.write_table(USER_SEQUENCE_SCHEMA.empty_table(), tmp_path / "offline" / "user_sequence" / "empty.parquet")
    store = open_store(tmp_path)
    apply(store, tmp_path)
    assert materialize_user_sequences(store, tmp_path) == 0


def test_redis_config_needs_an_address(monkeypatch):
    monkeypatch.delenv("RECSTREAM_REDIS_URL", raising=False)
    with pytest.raises(ValueError, match="RECSTREAM_REDIS_URL"):
        OnlineStore(kind="redis")
    with pytest.raises(ValueError, match="sqlite' or 'redis"):
        OnlineStore(kind="dynamo")


def test_feast_apply_works_from_the_feature_repo_folder(tmp_path):
    """The repository of record: `feast apply` run in (a copy of) feature_repo/ registers every object."""
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    feast = Path(sys.executable).with_name("feast")
    done = subprocess.run([str(feast), "apply"], cwd=tmp_path / "feature_repo", env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = subprocess.run([str(feast), "feature-views", "list"], cwd=tmp_path / "feature_repo", env=env,
                            capture_output=True, text=True, timeout=300)
    assert "user_sequence" in listed.stdout
    assert (tmp_path / "runs" / "demo" / "feast" / "registry.db").exists()
