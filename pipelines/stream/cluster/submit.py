"""Python job submission to any Flink cluster with the wheel's `bin/flink run`, and the stream job's package.

    job = submit_python(address, script="job.py", args=[...])   # detached: returns the job ID
    client = attach_python(address, module="pipelines.stream", ...)  # attached: the driver runs here
    client = submit_stream(address, StreamConfig(...))           # package the project, submit the stream job
    job = submit_stream_detached(address, StreamConfig(...))     # the same, returning once it is submitted
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Sequence

import toml

from features.errors import MissingInput
from pipelines.stream.cluster.distribution import FlinkJobError, flink_home, java_home, write_conf
from pipelines.stream.cluster.rest import cluster_setting, parse_address
from pipelines.stream.connector import REPO, stream_deps

PROJECT_PACKAGES = ("features", "pipelines", "trainers", "feature_repo")  # what --pyFiles ships
SKIP = ("feature_repo/data/",)  # local data, not code
JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


def _flink_run(folder: Path, jobmanager: str, script: Path | None, module: str | None, py_files: Sequence[Path],
               jars: Sequence[Path], args: Sequence[str], conf: dict | None, python_executable: str | None,
               env: dict | None, detached: bool) -> tuple[list[str], dict]:
    """The `bin/flink run` command line and its environment (a private client conf dir in folder)."""
    if (script is None) == (module is None):
        raise ValueError("give exactly one of script (a .py file) or module (a dotted name in py_files)")
    host, port = parse_address(jobmanager)
    for path in [*py_files, *jars, *([script] if script else [])]:
        if not Path(path).exists():
            raise MissingInput(path, "give an existing job file")
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
    """The project's Python packages as dest/recstream.zip for --pyFiles (sorted; no caches or local
    data). Reproducible: the same sources give the same bytes (fixed times and modes), so the
    archive the job image carries is the one a submission from the same commit ships."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "recstream.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PROJECT_PACKAGES:
            for path in sorted((REPO / package).rglob("*")):
                name = path.relative_to(REPO).as_posix()
                if path.is_file() and "__pycache__" not in path.parts and not name.startswith(SKIP):
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
    return out


def write_stream_config(cfg, path: Path) -> Path:
    """A StreamConfig as TOML with absolute paths: what `pipelines.stream --config` reads."""
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
    """Package and submit `python -m pipelines.stream --config <toml>` to a running cluster.

    Attached: the stream job's driver sums the count receipts the job sends back, so it runs in
    the returned FlinkClient until the job ends (its output ends with the counts of a bounded
    run); client.stop() interrupts it as Ctrl-C would. config: a TOML file, or a StreamConfig
    (written as TOML). The project's packages ship as --pyFiles. The job adds the Kafka connector
    jars itself when its source is Kafka (env.add_jars, uploaded by `flink run`), found through
    $RECSTREAM_STREAM_DEPS, set here to this checkout's folder: the driver imports the shipped
    copy of the packages, which has no .cache beside it. jars adds more."""
    folder = Path(tempfile.mkdtemp(prefix="recstream-stream-client-"))
    try:
        config, py_files, env = _stream_package(folder, config)
        return attach_python(jobmanager, folder=folder, module="pipelines.stream", py_files=py_files, jars=jars,
                             args=["--config", str(config)], python_executable=python_executable, env=env)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def submit_stream_detached(jobmanager: str, config, jars: Sequence[Path] = (),
                           python_executable: str | None = None) -> str:
    """As submit_stream, but the driver returns once the job is submitted: returns its job ID. The
    job runs until it is stopped (`recstream stream stop JOB`); its counts are Flink metrics."""
    folder = Path(tempfile.mkdtemp(prefix="recstream-stream-client-"))
    try:
        config, py_files, env = _stream_package(folder, config)
        return submit_python(jobmanager, module="pipelines.stream", py_files=py_files, jars=jars,
                             args=["--config", str(config), "--detach"], python_executable=python_executable,
                             env=env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stream_package(folder: Path, config) -> tuple[Path, list[Path], dict]:
    """The job's TOML (written from a StreamConfig where one is given), its --pyFiles and the
    client's environment."""
    if not isinstance(config, (str, Path)):
        config = write_stream_config(config, folder / "stream.toml")
    config = Path(config).absolute()
    if not config.is_file():
        raise MissingInput(config, "give the stream job's TOML config (see infra/stream.toml)")
    return config, [package_project(folder)], {"RECSTREAM_STREAM_DEPS": str(stream_deps().absolute())}
