"""Outputs replaced whole or not at all (pipelines/staged.py): a real kill -9 of
`recstream backfill` leaves the previous run's tables and counts; a swap cut short at each of
its steps is finished or undone by the next run; what other jobs wrote beside the outputs stays."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.staged import SUCCESS, recover, staged
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

OWNED = {"a", "b", "counts.json"}


def write_run(out: Path, tag: str) -> None:
    for name in ("a", "b"):
        (out / name).mkdir()
        (out / name / "part-0").write_text(tag)
    (out / "counts.json").write_text(tag)


def tags(out: Path) -> set[str]:
    return {(out / name / "part-0").read_text() for name in ("a", "b")} | {(out / "counts.json").read_text()}


def test_a_finished_run_replaces_the_outputs_and_keeps_what_others_wrote(tmp_path):
    out = tmp_path / "offline"
    with staged(out, OWNED) as stage:
        write_run(stage, "one")
    (out / "user_interests").mkdir()  # another job's table beside the outputs
    (out / "user_interests" / "p").write_text("kept")
    with staged(out, OWNED) as stage:
        write_run(stage, "two")
    assert tags(out) == {"two"} and (out / "user_interests" / "p").read_text() == "kept"
    assert json.loads((out / SUCCESS).read_text()) == sorted(OWNED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offline"]


def test_a_failed_run_leaves_the_previous_outputs(tmp_path):
    out = tmp_path / "offline"
    with staged(out, OWNED) as stage:
        write_run(stage, "one")
    with pytest.raises(RuntimeError):
        with staged(out, OWNED) as stage:
            (stage / "a").mkdir()
            raise RuntimeError("the job failed")
    assert tags(out) == {"one"} and sorted(p.name for p in tmp_path.iterdir()) == ["offline"]


@pytest.mark.parametrize("cut", ["writing", "after old moved", "after new moved", "carrying over"])
def test_a_swap_cut_short_is_finished_or_undone(tmp_path, cut):
    out, stage, old = tmp_path / "offline", tmp_path / "offline.partial", tmp_path / "offline.previous"
    with staged(out, OWNED) as s:
        write_run(s, "one")
    (out / "user_interests").mkdir()
    stage.mkdir()
    write_run(stage, "two")
    if cut != "writing":
        (stage / SUCCESS).write_text(json.dumps(sorted(OWNED)))
        out.rename(old)
    if cut in ("after new moved", "carrying over"):
        stage.rename(out)
    if cut == "carrying over":
        (old / "user_interests").rename(out / "user_interests")
    recover(out)
    assert tags(out) == ({"one"} if cut == "writing" else {"two"})
    assert (out / "user_interests").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offline"]


@pytest.mark.engine
def test_kill_9_of_a_backfill_leaves_the_previous_run(tmp_path):
    raw = tmp_path / "raw"
    stream = SyntheticStream(SyntheticConfig(users=600, days=8, seed=4))  # seconds of pipeline
    write_json_lines((line for lines, _ in stream.windows() for line in lines), raw)
    out = tmp_path / "offline"
    cmd = [str(Path(sys.executable).parent / "recstream"), "backfill", "--input", str(raw / "*.jsonl"),
           "--output", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    before = {name: pq.read_table(out / name).num_rows for name in ("behavior_log", "user_sequence", "examples")}
    counts = (out / "counts.json").read_text()
    (raw / "more.jsonl").write_text((raw / next(iter(sorted(os.listdir(raw))))).read_text())  # a second run differs

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "offline.partial"
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the backfill ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists()  # killed before its swap

    assert {name: pq.read_table(out / name).num_rows for name in before} == before
    assert (out / "counts.json").read_text() == counts
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)  # the next run cleans up and completes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offline", "raw"]
    assert json.loads((out / "counts.json").read_text())["read"] > json.loads(counts)["read"]
