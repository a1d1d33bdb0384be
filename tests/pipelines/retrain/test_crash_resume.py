"""kill -9 anywhere: the loop resumes from its last checkpoint, with no example skipped and none
trained twice, against a real broker (Tansu) and real kills of the `recstream retrain` process."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import toml
import torch

from pipelines.embedded.broker import running_broker
from pipelines.embedded.kafka import Record
from pipelines.retrain.state import read_records
from tests.pipelines.retrain.runs import register_champions
from trainers.checkpoint import load_unsharded
from trainers.registry import Registry

pytestmark = pytest.mark.e2e
EXAMPLES = 1_800
# Windows close by size only (never on a pause, which a loaded machine can make at any time), and
# every gate passes, so each kill below finds its failpoint whatever order the partitions are read in.
WINDOW = {"size": 300, "min_records": 100, "idle_s": 3600.0, "max_wait_s": 3600.0}
OPEN_GATES = {"max_auc_drop": 1.0, "max_gauc_drop": 1.0, "max_slice_drop": 1.0, "max_calibration_gap": 1.0,
              "max_flip_rate": 1.0, "max_auc_gain": 1.0, "max_auc": 1.0, "max_recall_drop": 1.0,
              "max_hit_rate_drop": 1.0}
OPEN_BOUNDS = {"drift": {"max_js": 1.0, "max_ks": 1.0, "max_label_rate_change": 10.0}}
# Where each interrupted run kills itself (RECSTREAM_FAILPOINT), in order; then one kill from outside.
FAILPOINTS = ["after_train_ranker:1", "after_register_ranker:2", "mid_checkpoint:3", "after_train_retriever:4",
              "after_checkpoint:4"]


def _settings(work, bootstrap: str, tag: str) -> dict:
    return {"workdir": str(work), "window": WINDOW, "gate": OPEN_GATES, "bounds": OPEN_BOUNDS,
            "kafka": {"bootstrap_servers": bootstrap, "examples_topic": f"examples-{tag}",
                      "accepted_topic": f"accepted-{tag}", "group_id": f"loop-{tag}"}}


def _produce(broker, tag: str, accepted: list[bytes], examples: list[bytes]) -> None:
    client = broker.client()
    try:
        for topic, values, parts in ((f"accepted-{tag}", accepted, 2), (f"examples-{tag}", examples, 2)):
            client.create_topic(topic, parts)
            client.produce(topic, [Record(value=v, key=str(i % 7).encode()) for i, v in enumerate(values)])
    finally:
        client.close()


def _loop(config, env: dict | None = None) -> subprocess.Popen:
    """The loop in a process of its own; its stderr goes to a file beside the config (a pipe nobody
    reads until the end would fill up and block the loop)."""
    log = open(Path(config).with_suffix(".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "retrain", "--config", str(config), "--follow"],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log)
    log.close()  # the child holds its own copy
    proc.log = Path(log.name)
    return proc


def _tail(proc) -> str:
    return proc.log.read_text(errors="replace")[-2000:]


def _exit_code(proc: subprocess.Popen, timeout_s: float) -> int:
    """The loop's exit status; one that is still running after ``timeout_s`` is killed and its log shown."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the loop ran past {timeout_s} s; its log ends: {_tail(proc)}") from None


def _windows(work) -> int:
    return len(read_records(work / "retrain"))


def _wait(predicate, what: str, proc: subprocess.Popen | None = None, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None and not predicate():
            raise AssertionError(f"the loop exited ({proc.returncode}) before {what}: {_tail(proc)}")
        if time.monotonic() >= deadline:
            if proc is not None:
                proc.kill()
            raise AssertionError(f"timed out waiting for {what}" + (f": {_tail(proc)}" if proc else ""))
        time.sleep(0.2)


def test_kill_9_anywhere_resumes_with_every_example_once(base_run, tmp_path):
    work, champions, accepted, examples = base_run
    examples = examples[:EXAMPLES]
    run = tmp_path / "run"
    shutil.copytree(work, run)
    register_champions(run, champions)
    with running_broker() as broker:
        _produce(broker, "k", accepted, examples)
        config = tmp_path / "retrain.toml"
        config.write_text(toml.dumps(_settings(run, broker.bootstrap_servers, "k")))
        for point in FAILPOINTS:  # each run dies by its own kill -9 at the named point
            proc = _loop(config, {"RECSTREAM_FAILPOINT": point})
            assert _exit_code(proc, 300) == -signal.SIGKILL, (point, _tail(proc))
        proc = _loop(config)  # killed from outside, as soon as it has committed one more window
        done = _windows(run)
        _wait(lambda: _windows(run) > done, "one more window", proc)
        proc.kill()
        proc.wait(timeout=60)
        proc = _loop(config)  # the last run goes to the end and stops cleanly on SIGTERM
        _wait(lambda: _windows(run) == EXAMPLES // WINDOW["size"], "every window", proc)
        proc.send_signal(signal.SIGTERM)
        assert _exit_code(proc, 120) == 0, _tail(proc)
        client = broker.client()
        ends = {k: {str(p): o for p, o in client.end_offsets(f"{k}-k").items()} for k in ("examples",)}
        client.close()

    records = read_records(run / "retrain")
    assert [r["window"] for r in records] == list(range(1, EXAMPLES // WINDOW["size"] + 1))
    assert records[0]["start"]["examples"] == {} and records[-1]["end"]["examples"] == ends["examples"]
    for before, after in zip(records, records[1:]):
        assert after["start"] == before["end"]  # nothing skipped, nothing read twice
    assert sum(r["records"] for r in records) == EXAMPLES and all(r["duplicates"] == 0 for r in records)
    registry = Registry(run / "registry")
    latest = sorted((run / "retrain" / "checkpoints").glob("window-*"))[-1]
    for kind in ("ranker", "retriever"):
        promoted = [r["models"][kind]["version"] for r in records if r["models"][kind]["decision"] == "promoted"]
        assert len(promoted) == len(set(promoted))
        champion = registry.champion(kind)
        assert champion == (promoted[-1] if promoted else "1")
        line, _ = load_unsharded(latest / kind)  # what the loop goes on training from
        for key, value in registry.load(kind)[0].items():  # is exactly the champion that serves
            assert torch.equal(value, line[key]), (kind, key)
