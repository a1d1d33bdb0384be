"""The JobManager's REST API: one call, a setting, a job's failure, waiting for a state, cancel, stop with a savepoint."""
from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from features.errors import ConfigError
from pipelines.stream.cluster.distribution import FlinkJobError

TERMINAL = ("FINISHED", "FAILED", "CANCELED")
PYTHON_ERROR = "Traceback (most recent call last)"


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' of a JobManager's REST endpoint."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"JobManager address {address!r} must be host:port (the REST port, e.g. localhost:8081)")
    return host, int(port)


def rest(address: str, path: str, method: str = "GET", timeout_s: float = 10.0, body: dict | None = None) -> dict | list:
    """One call to the JobManager's REST API (body: sent as JSON); the JSON answer ({} when empty)."""
    host, port = parse_address(address)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method, data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        body = answer.read()
    return json.loads(body) if body else {}


def cluster_setting(address: str, key: str) -> str | None:
    """One setting of a running cluster's configuration (GET /jobmanager/config), or None."""
    try:
        entries = rest(address, "/jobmanager/config")
    except (OSError, ValueError) as err:
        raise FlinkJobError(f"cannot reach the JobManager's REST API at {address}: {err}") from None
    return next((e["value"] for e in entries if e.get("key") == key), None)


def job_failure(address: str, job_id: str) -> str:
    """The job's most recent exception as Flink reports it (GET /jobs/<id>/exceptions)."""
    try:
        got = rest(address, f"/jobs/{job_id}/exceptions")
    except (OSError, ValueError) as err:
        return f"(no exception history: {err})"
    trace = failure_trace(got)
    if PYTHON_ERROR not in trace:  # the task's own failure can lose the race to a secondary one
        trace = "\n".join(t for t in (trace, taskmanager_failure(address, job_id, failed_on(got))) if t)
    if not trace:
        return "(no exception recorded)"
    lines = trace.splitlines()
    causes = [line for line in lines if line.startswith("Caused by:")][-1:]
    python = re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*(\S.*)", trace)[-1:]
    summary = list(dict.fromkeys(lines[:1] + causes + python))  # Flink's error, its root, the Python error
    return "\n".join(summary) + "\n--- stack trace (start) ---\n" + trace[:3000]


def failure_trace(exceptions: dict) -> str:
    """The stack trace that explains a failure, from /jobs/<id>/exceptions: the first one, newest
    first and with each entry's concurrent failures, that holds a Python error (a task cancelled
    because another failed, TaskNotRunningException, may come first); else the newest one."""
    traces = []
    for entry in exceptions.get("exceptionHistory", {}).get("entries") or []:
        traces.append(entry.get("stacktrace") or "")
        traces += [c.get("stacktrace") or "" for c in entry.get("concurrentExceptions") or []]
    traces.append(exceptions.get("root-exception") or "")
    return next((t for t in traces if PYTHON_ERROR in t), next((t for t in traces if t), ""))


def failed_on(exceptions: dict) -> list[str]:
    """The ids of the TaskManagers that /jobs/<id>/exceptions names."""
    found = []
    for entry in exceptions.get("exceptionHistory", {}).get("entries") or []:
        for e in [entry, *(entry.get("concurrentExceptions") or [])]:
            found.append(e.get("taskManagerId"))
    return list(dict.fromkeys(t for t in found if t))


def taskmanager_failure(address: str, job_id: str, first: list[str] | tuple[str, ...] = ()) -> str:
    """The last "switched from ... to FAILED with failure cause" entry with a Python error of one of
    the job's tasks in a TaskManager's log (GET /taskmanagers/<id>/log), or "": the TaskManagers
    in ``first`` (those the exception history names) are read first, then the others. Flink keeps
    one failure per task: when a secondary one (a coordinator's event to the failed task,
    TaskNotRunningException) is handled first, only the log holds the cause. Reads whole logs
    (Flink rolls them at 100 MB by default), and only for a failure without a Python error."""
    try:
        running = [t["id"] for t in rest(address, "/taskmanagers").get("taskmanagers", [])]
    except (OSError, ValueError):
        return ""
    host, port = parse_address(address)
    for tm in dict.fromkeys([*first, *running]):
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/taskmanagers/{urllib.parse.quote(tm)}/log",
                                        timeout=30) as log:
                found = last_failure((line.decode(errors="replace") for line in log), job_id)
        except (OSError, http.client.HTTPException):
            continue  # no log file (logging to the console only), or the TaskManager went
        if found:
            return found
    return ""


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
SLOT = re.compile(r" - Receive slot request (\w+) for job (\w+)")
TASK = re.compile(r" - Received task .* \((\w+)\), deploy into slot with allocation id (\w+)")
FAILED_TASK = re.compile(r" - .* \((\w+)\) switched from \w+ to FAILED with failure cause:")


def last_failure(lines, job_id: str) -> str:
    """In a TaskManager log's lines, the stack trace of the job's last FAILED task that holds a
    Python error. A task is the job's when the slot it was deployed into was requested for the job
    (job id -> allocation ids -> attempt ids): one job's resubmission shares its vertex ids."""
    slots, attempts, blocks, block = set(), set(), [], None
    for line in lines:
        if not LOG_LINE.match(line):
            if block is not None:
                block.append(line)
            continue
        block = None
        if (slot := SLOT.search(line)) and slot.group(2) == job_id:
            slots.add(slot.group(1))
        elif (task := TASK.search(line)) and task.group(2) in slots:
            attempts.add(task.group(1))
        elif (failed := FAILED_TASK.search(line)) and failed.group(1) in attempts:
            blocks.append(block := [])
    return next((t for t in map("".join, reversed(blocks)) if PYTHON_ERROR in t), "")


def wait_for_job(address: str, job_id: str, state: str = "RUNNING", timeout_s: float = 120.0) -> dict:
    """Poll until the job is in ``state``; RUNNING means every task runs (not only the job).

    Raises FlinkJobError if the job ends in another state (with its exception) or on timeout."""
    deadline, job = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        try:
            job = rest(address, f"/jobs/{job_id}")
        except urllib.error.HTTPError as err:
            if err.code != 404:  # 404: not yet known right after a detached submit
                raise
        now = job.get("state")
        tasks_running = all(v.get("status") == "RUNNING" for v in job.get("vertices", []))
        if now == state and (state != "RUNNING" or tasks_running):
            return job
        if now in TERMINAL:
            raise FlinkJobError(f"job {job_id} ended {now}, not {state}:\n{job_failure(address, job_id)}")
        time.sleep(0.25)
    now = job.get("state", "unknown")
    why = f":\n{job_failure(address, job_id)}" if now in ("RESTARTING", "FAILING") else ""
    raise FlinkJobError(f"job {job_id} is {now} after {timeout_s:.0f}s, not {state}{why}")


def cancel_job(address: str, job_id: str, timeout_s: float = 60.0) -> dict:
    """Cancel (PATCH /jobs/<id>?mode=cancel) and wait until the job is CANCELED."""
    rest(address, f"/jobs/{job_id}?mode=cancel", method="PATCH")
    return wait_for_job(address, job_id, "CANCELED", timeout_s)


def stop_with_savepoint(address: str, job_id: str, directory: str, timeout_s: float = 180.0) -> str:
    """Stop the job with a savepoint in directory (POST /jobs/<id>/stop); returns the savepoint's
    location once the job has FINISHED. A failed savepoint leaves the job running: FlinkJobError."""
    trigger = rest(address, f"/jobs/{job_id}/stop", method="POST",
                   body={"targetDirectory": directory, "drain": False})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = rest(address, f"/jobs/{job_id}/savepoints/{trigger['request-id']}")
        if got.get("status", {}).get("id") == "COMPLETED":
            operation = got.get("operation") or {}
            if "failure-cause" in operation:
                cause = operation["failure-cause"].get("stack-trace", "")
                raise FlinkJobError(f"the savepoint of job {job_id} failed; the job goes on:\n{cause[-3000:]}")
            wait_for_job(address, job_id, "FINISHED", timeout_s=max(1.0, deadline - time.monotonic()))
            return operation["location"]
        time.sleep(0.25)
    raise FlinkJobError(f"job {job_id}: no savepoint after {timeout_s:.0f}s; the job may still run "
                        f"(recstream cluster status)")
