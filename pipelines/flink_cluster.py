"""A real standalone Flink cluster from the PyFlink wheel, and Python job submission to any Flink cluster.

    with FlinkCluster(workdir) as cluster:      # JobManager + TaskManager JVMs on free localhost ports
        job = submit_python(cluster.address, script="job.py", args=["--in", "x"])  # bin/flink run -d -py
        cluster.wait_for_job(job, "RUNNING")    # REST: GET /jobs/<id>
        cancel_job(cluster.address, job)        # REST: PATCH /jobs/<id>?mode=cancel
    # stop(): SIGTERM to each JVM by its PID, then SIGKILL to whatever is left of its process group

The apache-flink wheel carries Flink's bin/, conf/, lib/ and opt/. The cluster gets a private conf
dir (config.yaml, Flink 2.x), log dir, pid dir and tmp dirs under its workdir, so nothing is written
into site-packages. Each JVM is started with `jobmanager.sh|taskmanager.sh start-foreground`, which
execs java: the Popen PID is the JVM's. Each runs in a new session, so the Python workers a
TaskManager starts share its process group and are stopped with it.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import toml
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("features", "pipelines", "trainers", "feature_repo")  # what --pyFiles ships
SKIP = ("feature_repo/data/",)  # local data, not code
TERMINAL = ("FINISHED", "FAILED", "CANCELED")
JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
CONF_FILES = ("log4j-console.properties", "log4j-cli.properties", "log4j.properties", "logback-console.xml",
              "logback.xml")


class FlinkClusterError(RuntimeError):
    """The cluster could not start or stop (Java missing, a port busy, a JVM exited); carries the log tail."""


class FlinkJobError(RuntimeError):
    """Submitting a job failed, or the job failed or timed out; carries Flink's own error text."""


def flink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel (the pyflink package folder)."""
    spec = importlib.util.find_spec("pyflink")
    home = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if home is None or not (home / "bin" / "flink").is_file():
        raise FlinkClusterError("no Flink distribution found: the apache-flink wheel (pyflink/bin/flink) is "
                                "missing; run `make setup`")
    return home


def flink_version() -> str:
    """The pinned Flink version, e.g. '2.3.0' (the apache-flink wheel's)."""
    return importlib.metadata.version("apache-flink")


def java_home() -> Path:
    """$JAVA_HOME if it holds bin/java, else the JDK behind `java` on PATH."""
    env = os.environ.get("JAVA_HOME")
    if env and (Path(env) / "bin" / "java").is_file():
        return Path(env)
    java = shutil.which("java")
    if java is None:
        raise FlinkClusterError("Java not found: no $JAVA_HOME/bin/java and no `java` on PATH; install a JDK 17 "
                                "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return Path(java).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' of a JobManager's REST endpoint."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"JobManager address {address!r} must be host:port (the REST port, e.g. localhost:8081)")
    return host, int(port)


def write_conf(conf_dir: Path, settings: dict) -> Path:
    """The wheel's conf/ (logging files, flattened config.yaml) with settings on top, into conf_dir."""
    src = flink_home() / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in CONF_FILES:
        shutil.copy(src / name, conf_dir / name)
    conf = _flatten(yaml.safe_load((src / "config.yaml").read_text()) or {})
    conf.update(settings)
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=True))
    return conf_dir


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
        self.workdir = Path(workdir)
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
            if port is not None and not _port_free(port):
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
                proc.terminate()
        deadline = time.monotonic() + grace_s
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # Python workers left behind, or a JVM that ignored SIGTERM
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=grace_s)

    def __enter__(self) -> "FlinkCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def rest(address: str, path: str, method: str = "GET", timeout_s: float = 10.0) -> dict | list:
    """One call to the JobManager's REST API; the JSON answer ({} when empty)."""
    host, port = parse_address(address)
    with urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}{path}", method=method),
                                timeout=timeout_s) as answer:
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
    entries = got.get("exceptionHistory", {}).get("entries") or []
    trace = (entries[0].get("stacktrace") if entries else got.get("root-exception")) or ""
    if not trace:
        return "(no exception recorded)"
    lines = trace.splitlines()
    causes = [line for line in lines if line.startswith("Caused by:")][-1:]
    python = re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*(\S.*)", trace)[-1:]
    summary = list(dict.fromkeys(lines[:1] + causes + python))  # Flink's error, its root, the Python error
    return "\n".join(summary) + "\n--- stack trace (start) ---\n" + trace[:3000]


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


def _flink_run(folder: Path, jobmanager: str, script: Path | None, module: str | None, py_files: Sequence[Path],
               jars: Sequence[Path], args: Sequence[str], conf: dict | None, python_executable: str | None,
               env: dict | None, detached: bool) -> tuple[list[str], dict]:
    """The `bin/flink run` command line and its environment (a private client conf dir in folder)."""
    if (script is None) == (module is None):
        raise ValueError("give exactly one of script (a .py file) or module (a dotted name in py_files)")
    host, port = parse_address(jobmanager)
    for path in [*py_files, *jars, *([script] if script else [])]:
        if not Path(path).exists():
            raise FileNotFoundError(f"job file {str(path)!r} does not exist")
    conf_dir = write_conf(folder / "conf", {"env.java.home": str(java_home()), "rest.address": host,
                                            "rest.port": port, "python.client.executable": sys.executable})
    cmd = [str(flink_home() / "bin" / "flink"), "run", *(["--detached"] if detached else []),
           "-m", f"{host}:{port}", "-pyclientexec", sys.executable]
    cmd += ["-py", str(Path(script).resolve())] if script else ["-pym", module]
    if py_files:
        cmd += ["-pyfs", ",".join(str(Path(p).resolve()) for p in py_files)]
    python_executable = python_executable or cluster_setting(jobmanager, "python.executable")
    if python_executable:
        cmd += ["-pyexec", python_executable]
    settings = dict(conf or {})
    if jars:
        settings["pipeline.jars"] = ";".join(Path(j).resolve().as_uri() for j in jars)
    cmd += [f"-D{key}={value}" for key, value in settings.items()] + list(args)
    return cmd, {**os.environ, **(env or {}), "FLINK_CONF_DIR": str(conf_dir), "FLINK_LOG_DIR": str(folder),
                 "JAVA_HOME": str(java_home())}


def _client_failure(folder: Path, jobmanager: str, code, output: str) -> str:
    log = "".join(p.read_text(errors="replace")[-3000:] for p in Path(folder).glob("*client*.log"))
    return (f"`flink run` failed (exit {code}) submitting to {jobmanager}:\n{_tail(output)}\n"
            f"client log:\n{log or '(none)'}")


def submit_python(jobmanager: str, *, script: Path | None = None, module: str | None = None,
                  py_files: Sequence[Path] = (), jars: Sequence[Path] = (), args: Sequence[str] = (),
                  conf: dict | None = None, python_executable: str | None = None, env: dict | None = None,
                  timeout_s: float = 300.0) -> str:
    """Submit a PyFlink job detached with the wheel's `bin/flink run`; returns the job ID once submitted.

    script (-py) or module (-pym, found in py_files) is the driver; py_files (-pyfs) ship to the
    workers; jars go in pipeline.jars and are uploaded with the job; conf entries become -D options;
    env adds environment variables for the client (where the driver runs). python_executable is
    the workers' Python; by default the cluster's python.executable (GET /jobmanager/config),
    passed on explicitly: a job's own configuration decides it, the cluster's file does not.
    Relative paths in args mean what they mean in the caller's working directory."""
    with tempfile.TemporaryDirectory(prefix="recstream-flink-client-") as tmp:
        cmd, env = _flink_run(Path(tmp), jobmanager, script, module, py_files, jars, args, conf, python_executable,
                              env, detached=True)
        try:
            run = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise FlinkJobError(f"`flink run` did not return in {timeout_s:.0f}s: {_tail(err.stdout)}") from None
        found = JOB_ID.search(run.stdout)
        if run.returncode != 0 or not found:
            raise FlinkJobError(_client_failure(Path(tmp), jobmanager, run.returncode, run.stdout + run.stderr))
    return found.group(1)


class FlinkClient:
    """An attached `flink run` in its own process group: the job's Python driver runs in it until the
    job ends (the stream job's driver sums the count receipts there). job_id is set once submitted."""

    def __init__(self, proc: subprocess.Popen, folder: Path):
        self.proc, self.folder, self.job_id = proc, folder, None
        self._output = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """What the client and the driver printed so far."""
        out = self.folder / "client.out"
        return out.read_text(errors="replace") if out.is_file() else self._output

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the driver to end (the job finished, failed or was cancelled); its exit code."""
        return self.proc.wait(timeout=timeout_s)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGINT to the group (the driver stops as on Ctrl-C), then SIGKILL what is left; by PID."""
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait(timeout=grace_s)
        self._output = self.output()
        shutil.rmtree(self.folder, ignore_errors=True)


def attach_python(jobmanager: str, *, script: Path | None = None, module: str | None = None,
                  py_files: Sequence[Path] = (), jars: Sequence[Path] = (), args: Sequence[str] = (),
                  conf: dict | None = None, python_executable: str | None = None, env: dict | None = None,
                  folder: Path | None = None, timeout_s: float = 300.0) -> FlinkClient:
    """Submit like submit_python, but attached: returns once the job is submitted, with the client
    still running the job's driver; folder holds the client's files (removed on stop)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="recstream-flink-client-"))
    cmd, env = _flink_run(folder, jobmanager, script, module, py_files, jars, args, conf, python_executable, env,
                          detached=False)
    with open(folder / "client.out", "wb") as out:
        client = FlinkClient(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True), folder)
    deadline = time.monotonic() + timeout_s
    while (found := JOB_ID.search(client.output())) is None:
        if client.proc.poll() is not None or time.monotonic() > deadline:
            code = client.proc.poll()
            message = _client_failure(folder, jobmanager, "none: timed out" if code is None else code, client.output())
            client.stop()
            raise FlinkJobError(message)
        time.sleep(0.2)
    client.job_id = found.group(1)
    return client


def _tail(text, chars: int = 3000) -> str:
    text = text.decode(errors="replace") if isinstance(text, bytes) else (text or "")
    return text[-chars:]


def package_project(dest: Path) -> Path:
    """The project's Python packages as dest/recstream.zip for --pyFiles (sorted; no caches or local data)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "recstream.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PROJECT_PACKAGES:
            for path in sorted((PROJECT_ROOT / package).rglob("*")):
                name = path.relative_to(PROJECT_ROOT).as_posix()
                if path.is_file() and "__pycache__" not in path.parts and not name.startswith(SKIP):
                    zf.write(path, name)
    return out


def write_stream_config(cfg, path: Path) -> Path:
    """A StreamConfig as TOML with absolute paths: what `pipelines.stream_job --config` reads."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        return str(Path(value).absolute()) if isinstance(value, Path) else value
    path.write_text(toml.dumps(plain(cfg)))  # None values are left out: the config's defaults
    return path


def submit_stream(jobmanager: str, config, jars: Sequence[Path] = (),
                  python_executable: str | None = None) -> FlinkClient:
    """Package and submit `python -m pipelines.stream_job --config <toml>` to a running cluster.

    Attached: the stream job's driver sums the count receipts the job sends back, so it runs in
    the returned FlinkClient until the job ends (its output ends with the counts of a bounded
    run); client.stop() interrupts it as Ctrl-C would. config: a TOML file, or a StreamConfig
    (written as TOML). The project's packages ship as --pyFiles. The job adds the Kafka connector
    jars itself when its source is Kafka (env.add_jars, uploaded by `flink run`), found through
    $RECSTREAM_STREAM_DEPS, set here to this checkout's folder: the driver imports the shipped
    copy of the packages, which has no .cache beside it. jars adds more."""
    from pipelines.broker import stream_deps

    folder = Path(tempfile.mkdtemp(prefix="recstream-stream-client-"))
    if not isinstance(config, (str, Path)):
        config = write_stream_config(config, folder / "stream.toml")
    config = Path(config).absolute()
    if not config.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        raise FileNotFoundError(f"stream job config {str(config)!r} does not exist")
    try:
        return attach_python(jobmanager, folder=folder, module="pipelines.stream_job",
                             py_files=[package_project(folder)], jars=jars, args=["--config", str(config)],
                             python_executable=python_executable,
                             env={"RECSTREAM_STREAM_DEPS": str(stream_deps().absolute())})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
