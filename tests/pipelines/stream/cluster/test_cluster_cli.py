"""The stream's lifecycle as a user runs it, each step its own `recstream` process: a cluster and
a broker left running, the job submitted detached, events produced, the job stopped with a
savepoint and started again from it, everything stopped by PID."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from features.ids import stable_id
from pipelines import daemons
from pipelines.store.feature_store import apply, open_store, read_user_sequences
from pipelines.stream.cluster.rest import rest, wait_for_job
from pipelines.stream.cluster.standalone import process_group

pytestmark = pytest.mark.engine
T0 = 1_704_067_200_000


def recstream(*args, cwd, timeout=300):
    run = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert run.returncode == 0, f"recstream {' '.join(args)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def events(path, users, first, count):
    rows = [{"event_id": f"u{u}-{i}", "user_id": u, "item_id": 10 * u + i, "event_type": "click",
             "timestamp": T0 + 1000 * i + u, "category_id": i % 3} for u in users for i in range(first, first + count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def wait_for_lengths(store, want: dict[int, int], what: str) -> None:
    deadline, got = time.monotonic() + 120, {}
    while time.monotonic() < deadline:
        online = read_user_sequences(store, list(want))
        got = {u: online[u] and online[u]["seq_length"] for u in want}
        if got == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: online lengths {got}, want {want}")


def test_cluster_broker_detached_job_savepoint_and_restore(tmp_path):
    work = tmp_path / "w"
    store = open_store(work)
    apply(store, work)
    users = [stable_id(u) for u in (1, 2, 3)]
    out = recstream("cluster", "start", cwd=tmp_path)
    cluster = daemons.load(tmp_path / "runs" / "flink")
    try:
        assert f"cluster up at {cluster.address}" in out
        assert "1 TaskManager, 2 slots (2 free)" in recstream("cluster", "status", cwd=tmp_path)
        recstream("broker", "start", cwd=tmp_path)
        recstream("topics", "create", cwd=tmp_path)
        kafka = recstream("broker", "address", cwd=tmp_path).strip()
        assert kafka == daemons.load(tmp_path / "runs" / "broker").address
        job_flags = ["--target", "cluster", "--detached", "--workdir", str(work), "--kafka", kafka, "--follow",
                     "--checkpoints", str(work / "chk"), "--checkpoint-interval-ms", "1000", "--no-examples"]
        job = recstream("stream", *job_flags, cwd=tmp_path).strip()  # the job ID alone on stdout
        assert re.fullmatch(r"[0-9a-f]{32}", job), job
        wait_for_job(cluster.address, job, "RUNNING")
        events(tmp_path / "first.jsonl", (1, 2, 3), 0, 5)
        recstream("produce", "--file", str(tmp_path / "first.jsonl"), cwd=tmp_path)
        wait_for_lengths(store, {u: 5 for u in users}, "the detached job")
        lag = recstream("topics", "lag", "--wait", "60", cwd=tmp_path)  # offsets commit with each checkpoint
        assert lag.strip() == "events: lag 0 (group recstream-stream committed 15 of 15)", lag
        assert re.search(rf"job {job}\s+RUNNING", recstream("cluster", "status", cwd=tmp_path))

        savepoint = recstream("stream", "stop", job, "--savepoint", str(work / "savepoints"), cwd=tmp_path).strip()
        assert os.path.isfile(f"{savepoint}/_metadata")
        assert rest(cluster.address, f"/jobs/{job}")["state"] == "FINISHED"

        events(tmp_path / "second.jsonl", (1, 2, 3), 5, 3)  # sent while no job runs
        recstream("produce", "--file", str(tmp_path / "second.jsonl"), cwd=tmp_path)
        again = recstream("stream", *job_flags, "--restore", savepoint, cwd=tmp_path).strip()
        wait_for_job(cluster.address, again, "RUNNING")
        restored = rest(cluster.address, f"/jobs/{again}/checkpoints")["latest"]["restored"]
        assert restored["is_savepoint"] and restored["external_path"].endswith(os.path.basename(savepoint))
        wait_for_lengths(store, {u: 8 for u in users}, "the job restarted from its savepoint")
        recstream("stream", "stop", again, cwd=tmp_path)
        assert rest(cluster.address, f"/jobs/{again}")["state"] == "CANCELED"
    finally:
        subprocess.run([sys.executable, "-m", "pipelines.cli", "broker", "stop"], cwd=tmp_path, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
        out = recstream("cluster", "stop", cwd=tmp_path)
    assert f"cluster at {cluster.address} stopped" in out
    for role, pid in cluster.pids.items():
        assert process_group(pid) == [], f"{role} (pid {pid}) left processes behind"
    assert daemons.load(tmp_path / "runs" / "flink") is None
