"""The plain Feast CLI in feature_repo/ writes through the project's online store class too:
`feast materialize` loads the backfill's rows but does not roll back a user the stream moved
forward (feature_store.yaml names feature_repo.online_stores.MonotonicSqliteOnlineStore)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feature_repo.definitions import SEQUENCE_FIELDS
from pipelines.store.feature_store import open_store, read_user_sequences, write_user_sequences
from tests.helpers import backfilled_run, sequence_row

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[3]


def feast(args: list[str], repo: Path) -> str:
    done = subprocess.run([str(Path(sys.executable).with_name("feast")), *args], cwd=repo, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_feast_materialize_never_rolls_a_streamed_user_back(tmp_path):
    demo = tmp_path / "runs" / "demo"  # where feature_store.yaml keeps the registry, relative to feature_repo/
    backfilled_run(demo, users=30, days=3)
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo")
    feast(["apply"], tmp_path / "feature_repo")
    rows = pq.read_table(demo / "offline" / "user_sequence").to_pylist()
    streamed, other = rows[0], rows[1]
    store = open_store(demo)
    fresher = sequence_row(streamed["user_id"], [42, 43], streamed["last_event_ms"] + 60_000)
    assert write_user_sequences(store, [fresher]) == 1  # the stream moved this user forward

    feast(["materialize", "2000-01-01T00:00:00", "2100-01-01T00:00:00", "--views", "user_sequence"],
          tmp_path / "feature_repo")
    got = read_user_sequences(store, [streamed["user_id"], other["user_id"]])
    assert got[streamed["user_id"]]["seq_item_ids"] == [42, 43]
    assert got[other["user_id"]] == {k: other[k] for k in SEQUENCE_FIELDS}  # the others were loaded
