"""A real standalone Flink session cluster from the PyFlink wheel, on 127.0.0.1.

    with FlinkCluster(workdir) as cluster:      # JobManager + TaskManager JVMs on free localhost ports
        job = submit_python(cluster.address, script="job.py", args=["--in", "x"])  # bin/flink run -d -py
        cluster.wait_for_job(job, "RUNNING")    # REST: GET /jobs/<id>
        cancel_job(cluster.address, job)        # REST: PATCH /jobs/<id>?mode=cancel
    # stop(): SIGTERM to each JVM by its PID, then SIGKILL to whatever is left of its process group

The cluster gets a private conf dir, log dir, pid dir and tmp dirs under its workdir. Each JVM is
started with `jobmanager.sh|taskmanager.sh start-foreground`, which execs java: the Popen PID is
the JVM's. Each runs in a new session, so the Python workers a TaskManager starts share its
process group and are stopped with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from pipelines.processes import free_port, port_free, stop_process
from pipelines.stream.cluster.distribution import (FlinkClusterError, FlinkJobError, flink_home, java_home,
                                                   write_conf)
from pipelines.stream.cluster.rest import rest, wait_for_job


def process_group(pgid: int) -> list[int]:
    """PIDs of the live processes in a process group (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            pids.append(int(stat.parent.name))
    return pids


class FlinkCluster:
    """A standalone session cluster: one JobManager and one TaskManager JVM on 127.0.0.1."""

    def __init__(self, workdir: Path, slots: int = 2, jobmanager_memory: str = "1024m",
                 taskmanager_memory: str = "1728m", rest_port: int | None = None, rpc_port: int | None = None,
                 conf: dict | None = None, startup_timeout_s: float = 180.0):
        self.workdir = Path(workdir).resolve()  # its JVMs run in it: relative paths would mean something else there
        self.slots, self.startup_timeout_s = slots, startup_timeout_s
        self.rest_port, self.rpc_port = rest_port, rpc_port
        self.memory = {"jobmanager.memory.process.size": jobmanager_memory,
                       "taskmanager.memory.process.size": taskmanager_memory}
        self.extra = dict(conf or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf_dir, self.log_dir = self.workdir / "conf", self.workdir / "log"

    @property
    def address(self) -> str:
        """host:port of the REST endpoint (what `flink run -m` and --jobmanager take)."""
        return f"127.0.0.1:{self.rest_port}"

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def start(self) -> "FlinkCluster":
        if self.procs:
            raise FlinkClusterError(f"cluster already started (pids {self.pids})")
        self.java = java_home()
        for name, port in (("rest.port", self.rest_port), ("jobmanager.rpc.port", self.rpc_port)):
            if port is not None and not port_free(port):
                raise FlinkClusterError(f"port {port} ({name}) is busy on 127.0.0.1: stop what listens there or "
                                        "leave the port unset to pick a free one")
        self.rest_port = self.rest_port or free_port()
        self.rpc_port = self.rpc_port or next(p for p in iter(free_port, None) if p != self.rest_port)
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        settings = {
            "env.java.home": str(self.java), "env.log.dir": str(self.log_dir), "env.pid.dir": str(self.workdir / "pid"),
            "jobmanager.rpc.address": "127.0.0.1", "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.port": self.rpc_port, "rest.address": "127.0.0.1", "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port, "rest.bind-port": self.rest_port,
            "taskmanager.host": "127.0.0.1", "taskmanager.bind-host": "127.0.0.1",
            "blob.server.port": "0", "taskmanager.rpc.port": "0", "taskmanager.data.port": "0",  # 0: the OS picks
            "taskmanager.numberOfTaskSlots": self.slots, "io.tmp.dirs": str(tmp), "web.tmpdir": str(tmp),
            # checkpoints in files, not the JobManager's heap (5 MiB of state a task at most)
            "execution.checkpointing.dir": (self.workdir / "checkpoints").resolve().as_uri(),
            "python.executable": sys.executable, "python.client.executable": sys.executable,
            **self.memory, **self.extra}
        write_conf(self.conf_dir, settings)
        try:
            self._launch("jobmanager")
            self._launch("taskmanager")  # at once: it retries until the JobManager answers
            self._wait_overview(lambda o: o.get("taskmanagers", 0) >= 1 and o.get("slots-total", 0) >= self.slots,
                                "a TaskManager to register its slots")
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, role: str) -> None:
        env = {**os.environ, "FLINK_CONF_DIR": str(self.conf_dir), "FLINK_LOG_DIR": str(self.log_dir),
               "JAVA_HOME": str(self.extra.get("env.java.home", self.java))}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{role}.out", "ab") as out:
            self.procs[role] = subprocess.Popen([str(flink_home() / "bin" / f"{role}.sh"), "start-foreground"],
                                                env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_overview(self, ready: Callable[[dict], bool], what: str) -> dict:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            for role, proc in self.procs.items():
                if proc.poll() is not None:
                    raise FlinkClusterError(f"the {role} (pid {proc.pid}) exited with code {proc.returncode} while "
                                            f"waiting for {what}:\n{self.log_tail(role)}")
            try:
                overview = rest(self.address, "/overview")
                if ready(overview):
                    return overview
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise FlinkClusterError(f"timed out after {self.startup_timeout_s:.0f}s waiting for {what}:\n"
                                f"{self.log_tail('jobmanager')}\n{self.log_tail('taskmanager')}")

    def log_tail(self, role: str = "jobmanager", chars: int = 4000) -> str:
        """The end of a JVM's log file and console output (role: jobmanager | taskmanager)."""
        kind = "standalonesession" if role == "jobmanager" else "taskexecutor"
        files = sorted(self.log_dir.glob(f"flink-*-{kind}-*.log")) or [self.log_dir / f"{role}.out"]
        parts = [f"--- {f} ---\n{f.read_text(errors='replace')[-chars:]}" for f in files if f.is_file()]
        return "\n".join(parts) or f"(no {role} log under {self.log_dir})"

    def wait_for_job(self, job_id: str, state: str = "RUNNING", timeout_s: float = 120.0) -> dict:
        """wait_for_job on this cluster; a failure also carries the JobManager's log tail."""
        try:
            return wait_for_job(self.address, job_id, state, timeout_s)
        except FlinkJobError as err:
            raise FlinkJobError(f"{err}\nJobManager log:\n{self.log_tail('jobmanager')}") from None

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to both JVMs by PID, wait for them, then SIGKILL whatever is left of their process groups."""
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()  # both at once: each JVM's shutdown takes seconds
        for proc in procs.values():  # then each by PID, its Python workers with its process group
            stop_process(proc, grace_s, group=True)

    def __enter__(self) -> "FlinkCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
