"""`recstream stream` as a user runs it: every listener of the running job is on the loopback
interface; a second job on the same input and online store is refused with one line; kill -9
of the first one's PID takes its whole job along (the driver's child, the Flink JVM, its
Python), which frees the input for the next start."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from features.ids import stable_id
from pipelines.store.feature_store import apply, open_store, read_rows
from pipelines.stream.config import StreamConfig
from pipelines.stream.lock import JobLock
from tests.helpers import tcp_listeners, terminal_popen

pytestmark = pytest.mark.engine


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                found = [int(p) for p in task.read_text().split()]
            except OSError:
                continue
            out += found
            todo += found
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.2)


def test_second_job_refused_and_kill_9_takes_the_job_along(tmp_path):
    apply(open_store(tmp_path), tmp_path)
    source = tmp_path / "in"
    source.mkdir()
    cmd = [str(Path(sys.executable).parent / "recstream"), "stream", "--workdir", str(tmp_path),
           "--source", str(source), "--follow"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: any("java" in cmdline(p) for p in descendants(first.pid)), "Flink JVM", 180)
        event = {"event_id": "e1", "user_id": 7, "item_id": 3, "event_type": "click", "timestamp": 1_700_000_000_000}
        (source / "part-0.jsonl").write_text(json.dumps(event) + "\n")
        store = open_store(tmp_path)
        wait_until(lambda: any(read_rows(store, "user_sequence", [stable_id(7)])), "the job's first row", 180)
        listeners = tcp_listeners([first.pid, *descendants(first.pid)])
        assert listeners and all(ipaddress.ip_address(addr).is_loopback for _, addr, _ in listeners), listeners
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "already runs" in lines[0] and str(source) in lines[0], lines
        assert f"pid {first.pid}" in lines[0]

        job = descendants(first.pid)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        wait_until(lambda: not any(alive(p) for p in job), "end of the job's processes after kill -9", 60)
        JobLock(StreamConfig(workdir=tmp_path, source=source)).acquire().release()  # the lock went too
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()


def test_process_mode_starts_no_python_worker_pool_on_every_interface(tmp_path):
    """Process mode: the JVM starts the Python workers; PyFlink's "loopback" worker pool, which
    listens on every interface, is not started in the driver. (The JVM itself still listens on
    every interface in process mode: docs/reliability.md.)"""
    apply(open_store(tmp_path), tmp_path)
    source = tmp_path / "in"
    source.mkdir()
    cmd = [str(Path(sys.executable).parent / "recstream"), "stream", "--workdir", str(tmp_path),
           "--source", str(source), "--follow", "--python-mode", "process"]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        event = {"event_id": "e1", "user_id": 7, "item_id": 3, "event_type": "click", "timestamp": 1_700_000_000_000}
        (source / "part-0.jsonl").write_text(json.dumps(event) + "\n")
        store = open_store(tmp_path)
        wait_until(lambda: any(read_rows(store, "user_sequence", [stable_id(7)])), "the job's first row", 240)
        python = [p for p in [job.pid, *descendants(job.pid)] if "java" not in cmdline(p)]
        listeners = tcp_listeners(python)
        assert all(ipaddress.ip_address(addr).is_loopback for _, addr, _ in listeners), [
            (pid, addr, port, cmdline(pid)[:80]) for pid, addr, port in listeners]
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)


def test_ctrl_c_prints_the_counts_so_far_and_ends_the_job(tmp_path):
    """Ctrl-C as a terminal sends it (SIGINT to the process group) to a following job: its counts
    so far on stdout, one line on stderr, exit 130, and the job's processes gone."""
    apply(open_store(tmp_path), tmp_path)
    source = tmp_path / "in"
    source.mkdir()
    cmd = [str(Path(sys.executable).parent / "recstream"), "stream", "--workdir", str(tmp_path),
           "--source", str(source), "--follow", "--report-every", "1"]
    job = terminal_popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        events = [{"event_id": f"e{i}", "user_id": 7, "item_id": i, "event_type": "click",
                   "timestamp": 1_700_000_000_000 + i} for i in range(5)]
        (source / "part-0.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + "{not json\n")
        store = open_store(tmp_path)
        wait_until(lambda: (read_rows(store, "user_sequence", [stable_id(7)])[0] or {}).get("seq_length") == 5,
                   "the job's rows", 180)
        processes = descendants(job.pid)
        os.killpg(job.pid, signal.SIGINT)
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 130, err[-2000:]
    counts = json.loads(out)
    assert counts["read"] == 6 and counts["accepted"] == 5 and counts["rejected"] == {"malformed_json": 1}
    assert err.strip().splitlines()[-1].startswith("recstream stream: interrupted (Ctrl-C)") and "Traceback" not in err
    wait_until(lambda: not any(alive(p) for p in processes), "the end of the job's processes", 60)
