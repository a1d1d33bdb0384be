"""Run the stream job: on a local mini-cluster in a child process (run_stream), or here (run_here).

Bounded (follow=False): reads what is there (the files present; the topic up to its end
offsets at start) and finishes. Follow (follow=True): keeps reading until stopped: Ctrl-C in
the driver, or a ``progress`` callback that returns True; the job is then cancelled.

Checkpoints (``checkpoints`` set): the keyed state, the timers and the Kafka offsets are
saved every ``checkpoint_interval_ms``; ``restore="latest"`` (or a chk-N path) resumes from
one, as after a crash. Online writes are flushed before each checkpoint and are idempotent,
so a restored run ends with the online store an uninterrupted run would have.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import queue
import shutil
import signal
import site
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

from pyflink.common import Configuration
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment

from features.errors import ConfigError, MissingInput, RecstreamError
from pipelines.processes import die_with_parent
from pipelines.progress import quiet_libraries
from pipelines.stream.config import StreamConfig
from pipelines.stream.connector import REPO
from pipelines.stream.failures import check_kafka, explain
from pipelines.stream.graph import build, make_output_dirs
from pipelines.stream.lock import DIGEST, JobLock, job_digest, while_free
from pipelines.stream.receipts import ReceiptServer
from pipelines.stream.runtime import OPENED

LEDGER = "bootstrap.sqlite"
LAYOUT = "layout.json"  # the key_buckets the checkpoints' state is keyed by (check_layout)
SINK_CHECKPOINTS = "sink-checkpoints"  # under the workdir: a following job's checkpoints when none are kept
# The local mini-cluster listens on the loopback interface only, and its REST API takes no jobs.
STOP_GRACE_S = 10.0  # after Ctrl-C, how long the parent waits for the job's final counts
LOCAL_ONLY = {"rest.bind-address": "127.0.0.1", "rest.address": "127.0.0.1", "jobmanager.bind-host": "127.0.0.1",
              "taskmanager.bind-host": "127.0.0.1", "taskmanager.host": "127.0.0.1", "web.submit.enable": "false",
              "web.cancel.enable": "false"}


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest completed checkpoint (a chk-N folder with its _metadata) under folder."""
    done = [m.parent for m in Path(folder).glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])), default=None)


class StreamInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the job; ``counts`` are what it had done (its final receipts where they came)."""

    def __init__(self, counts: dict):
        super().__init__()
        self.counts = counts


class StreamJobError(RecstreamError):
    """The stream job failed; the message is one line for what the user can fix (an input, Kafka
    out of reach), else the job's own traceback."""


class StreamProcess:
    """The job's driver in a child process (spawned), as it would run on a cluster.

    PyFlink's local Python workers share the driver's process-wide Beam worker state, and a
    Beam job run afterwards in the same process fails: a child keeps callers clean. ``pid``
    is the child's; it dies with the thread that started it, and its JVM with it (bind_to_parent):
    start it from the main thread, or from one that outlives the job."""

    def __init__(self, cfg: StreamConfig):
        if cfg.source is not None and not cfg.source.is_dir():
            raise MissingInput(cfg.source, "the stream source must be a folder of JSON-lines files")
        if not (cfg.workdir / "feast" / "registry.db").exists():
            raise MissingInput(cfg.workdir / "feast" / "registry.db",
                               f"apply the definitions first: recstream materialize --workdir {cfg.workdir}")
        if cfg.kafka is not None:
            check_kafka(cfg.kafka)  # seconds, not the minutes Flink retries a wrong address for
        self.cfg = cfg
        ctx = multiprocessing.get_context("spawn")
        self.messages, self.stop = ctx.Queue(), ctx.Event()
        # daemon: a caller that exits without wait() (an error, a failed test) stops the job, not hangs on it
        self.child = ctx.Process(target=_child, args=(cfg, self.messages, self.stop), name="recstream-stream",
                                 daemon=True)
        self.lock = JobLock(cfg)

    def start(self) -> "StreamProcess":
        """Start the job; a StateError if one runs on the same input and online store (lock.py)."""
        claim(self.lock, self.cfg)
        # The child starts ignoring Ctrl-C (an ignored signal stays ignored across exec): the parent
        # takes it, sets the stop event and waits for the child's counts, and no half-started
        # child prints a traceback of its own.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self.child.start()
        except BaseException:
            self.lock.release()
            raise
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        return self

    @property
    def pid(self) -> int:
        return self.child.pid

    def wait(self, progress: Callable[[dict], bool | None] | None = None,
             until: Callable[[], bool] | None = None) -> dict:
        """The job's counts once it finishes or is stopped: progress(counts) returning True, or
        until() (polled every second, e.g. "the group's offsets reached the end") returning True."""
        counts, interrupted, reported, clean = _shape(Counter()), None, False, False  # interrupted: a deadline
        try:
            while True:
                try:
                    kind, payload = self.messages.get(timeout=1.0)
                    if kind == "error":
                        if interrupted is not None:  # e.g. the broker went with the same Ctrl-C
                            raise StreamInterrupted(counts)
                        raise StreamJobError(payload)
                    counts, reported = payload, True
                    if kind == "done":
                        clean = True
                        if interrupted is not None:
                            raise StreamInterrupted(counts)  # stopped by Ctrl-C, with its final counts
                        return counts
                    if progress is not None and progress(counts):
                        self.stop.set()
                except queue.Empty:
                    if interrupted is not None and time.monotonic() > interrupted:
                        raise StreamInterrupted(counts) from None  # its final counts did not come in time
                    if not self.child.is_alive():
                        if interrupted is not None or self.child.exitcode == -signal.SIGINT:
                            raise StreamInterrupted(counts) from None
                        raise StreamJobError(f"the stream job exited with code {self.child.exitcode} "
                                             "and no result") from None
                    if until is not None and not self.stop.is_set() and until():
                        self.stop.set()
                except StreamInterrupted:
                    raise
                except KeyboardInterrupt:  # wherever it lands in this loop
                    self.stop.set()  # the child cancels the job and sends its final counts
                    if not reported:
                        self.child.terminate()  # the job is not running yet: nothing to wait for
                        raise StreamInterrupted(counts) from None
                    interrupted = interrupted or time.monotonic() + STOP_GRACE_S
        except BaseException:
            self.stop.set()  # whatever ends the wait, the job stops with it
            raise
        finally:
            self.child.join(timeout=60 if clean else 10)  # it sent its last word, or it is stopping
            if self.child.is_alive():
                self.child.kill()
                self.child.join()
            self.lock.release()


def run_stream(cfg: StreamConfig, progress: Callable[[dict], bool | None] | None = None) -> dict:
    """Run the job on a local mini-cluster (in a child process); returns its counts.

    counts: read, accepted (valid and not late), rejected {reason: n} (validation reasons and
    'late'), rejected_total, late, applied (events added to a sequence), users_updated,
    rows_written, examples. read == accepted + rejected_total, and each rejection is one
    dead letter. progress(counts) is called after each receipt; returning True stops the job.
    """
    return StreamProcess(cfg).start().wait(progress)


def bind_to_parent() -> None:
    """This process and the Flink JVM it launches die with their parent, even by kill -9: a job
    must not run on headless, writing and committing offsets, after its driver is gone. (The JVM
    also exits when its stdin closes, but an embedded interpreter can hang that exit.)"""
    import pyflink.pyflink_gateway_server as gateway

    die_with_parent()
    if getattr(gateway.Popen, "binds_to_parent", False):
        return

    class Popen(gateway.Popen):  # the class PyFlink starts the JVM with, plus die_with_parent
        binds_to_parent = True

        def __init__(self, *args, preexec_fn=None, **kwargs):
            def preexec() -> None:
                die_with_parent()
                if preexec_fn is not None:
                    preexec_fn()
            super().__init__(*args, preexec_fn=preexec, **kwargs)

    gateway.Popen = Popen


def _child(cfg: StreamConfig, messages, stop) -> None:
    quiet_libraries()  # a spawned child starts with fresh warning filters
    bind_to_parent()
    try:
        def report(counts: dict) -> bool:
            messages.put(("counts", counts))
            return stop.is_set()
        messages.put(("done", run_here(cfg, report, stop.is_set)))
    except RecstreamError as err:  # the user's to fix: its one line
        messages.put(("error", str(err)))
    except BaseException:  # noqa: BLE001 - every failure must reach the parent: Kafka's as one line, else its trace
        messages.put(("error", explain(traceback.format_exc(), cfg.kafka)))


def python_path() -> list[str]:
    """Where the job's Python code and its packages are: this checkout and the environment's site-packages."""
    return [str(REPO), *site.getsitepackages()]


def claim(lock: JobLock, cfg: StreamConfig) -> None:
    """Take the job's lock (a StateError if a job holds it), then clear the sink checkpoints of
    every job of this workdir not running now (its lock is free): what killed runs left, which
    nothing restores from (a clean end leaves empty folders). Not when this job restores: its
    checkpoint may be one of them."""
    lock.acquire()
    if cfg.restore is not None or sink_checkpoints(cfg, is_submitted()) is None:
        return
    own = job_digest(cfg)
    for folder in sorted((cfg.workdir / SINK_CHECKPOINTS).glob("*")):
        if folder.name == own:
            shutil.rmtree(folder, ignore_errors=True)
        elif DIGEST.fullmatch(folder.name):
            with while_free(cfg.workdir, folder.name) as free:
                if free:
                    shutil.rmtree(folder, ignore_errors=True)


def is_submitted() -> bool:
    """Whether a Flink client (`flink run`, the operator's PythonDriver) runs this program."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def job_settings(cfg: StreamConfig, submitted: bool) -> dict[str, str]:
    """The Flink settings the job sets itself. Run here (a mini-cluster in this process): fail fast
    (a restart is a restore from a checkpoint), listen on loopback only, run this interpreter.
    Submitted by a Flink client (`flink run`, the operator's PythonDriver, which hands the program
    PYFLINK_GATEWAY_PORT): the restart strategy and the Python interpreter are the cluster's.
    Either way the interpreter the JVM embeds (thread mode: pemja) or starts (process mode)
    imports from the driver's checkout and site-packages (the same paths in the job image).
    Checkpoints are aligned, here and on a cluster."""
    out = {"python.fn-execution.bundle.time": str(cfg.bundle_ms), "python.execution-mode": cfg.python_mode,
           "python.pythonpath": os.pathsep.join(python_path()),
           # the keyed state is saved at marks sent just before each barrier, which an unaligned
           # barrier could overtake (pipelines.stream.batches)
           "execution.checkpointing.unaligned.enabled": "false"}
    if not submitted:
        out.update({"restart-strategy.type": "none", **LOCAL_ONLY, "python.executable": sys.executable})
        folder = sink_checkpoints(cfg, submitted)
        if folder is not None:
            out["execution.checkpointing.dir"] = folder.resolve().as_uri()
    return out


def sink_checkpoints(cfg: StreamConfig, submitted: bool) -> Path | None:
    """Where a following job run here checkpoints when it keeps no checkpoints (None: not such a job).

    Such a job still checkpoints, to commit its sinks. Without a folder Flink keeps checkpoints in
    the JobManager's heap, at most 5 MiB a task, and the job fails once its keyed state outgrows
    that (2,000 users with ~50 events each). One folder per job lock (pipelines.stream.lock), so
    that a start can tell a running job's folder from what a killed run left (``claim``)."""
    if submitted or not cfg.follow or cfg.checkpoints is not None:
        return None
    return cfg.workdir / SINK_CHECKPOINTS / job_digest(cfg)


def environment(cfg: StreamConfig) -> tuple[StreamExecutionEnvironment, str | None]:
    """The execution environment with checkpointing, restore and jars set; and the ledger path."""
    conf = Configuration()
    for key, value in job_settings(cfg, is_submitted()).items():
        conf.set_string(key, value)
    # No Beam worker pool in this process (PyFlink's "loopback" pool binds every interface): in
    # process mode the JVM starts the Python workers itself, with this interpreter.
    os.environ["_python_worker_execution_mode"] = "process"
    ledger, restoring = None, None
    if cfg.checkpoints is not None:
        cfg.checkpoints.mkdir(parents=True, exist_ok=True)
        conf.set_string("execution.checkpointing.dir", cfg.checkpoints.resolve().as_uri())
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        ledger = str(cfg.checkpoints.resolve() / LEDGER)
        if cfg.restore is None:  # a fresh start bootstraps from the online store as it is now
            for suffix in ("", "-wal", "-shm"):
                Path(ledger + suffix).unlink(missing_ok=True)
    if cfg.restore is not None:
        path = latest_checkpoint(cfg.checkpoints) if cfg.restore == "latest" else Path(cfg.restore)
        if path is None or not (path / "_metadata").is_file():
            raise MissingInput(f"{cfg.restore!r} under {cfg.checkpoints}", "there is no completed checkpoint to "
                               "restore from; start without restore")
        conf.set_string("execution.state-recovery.path", path.resolve().as_uri())
        conf.set_string("execution.state-recovery.ignore-unclaimed-state", "true")  # the old run's receipts sink
        restoring = path
    if cfg.checkpoints is not None:
        check_layout(cfg, restoring)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.set_parallelism(cfg.parallelism)
    env.set_python_executable(sys.executable)
    from pipelines.stream.batches import ops_jar

    jars = [ops_jar()]
    if cfg.kafka is not None:
        from pipelines.stream.connector import kafka_jars

        jars += kafka_jars()
    env.add_jars(*[p.resolve().as_uri() for p in jars])
    if cfg.checkpoints is not None or cfg.follow:  # follow: dead-letter files are committed per checkpoint
        env.enable_checkpointing(cfg.checkpoint_interval_ms)
    return env, ledger


def check_layout(cfg: StreamConfig, restoring: Path | None) -> None:
    """Keyed state lives in key_buckets buckets (pipelines.stream.batches). A fresh start notes
    its count, and since when, beside its checkpoints; a restore from a checkpoint taken under
    another count (or from before buckets, when state was keyed by user) is refused with one line."""
    path = cfg.checkpoints / LAYOUT
    layouts = json.loads(path.read_text())["layouts"] if path.is_file() else []
    if restoring is None:
        layouts.append({"since_ms": int(time.time() * 1000), "key_buckets": cfg.key_buckets})
        path.write_text(json.dumps({"layouts": layouts}) + "\n")
        return
    taken_ms = int((restoring / "_metadata").stat().st_mtime * 1000)
    kept = [layout["key_buckets"] for layout in layouts if layout["since_ms"] <= taken_ms]
    if not kept:
        raise ConfigError("StreamConfig.restore", f"{restoring} was taken by a version that keyed state by user "
                                                  f"(no bucket count in {path} for it); start without restore")
    if kept[-1] != cfg.key_buckets:
        raise ConfigError("StreamConfig.key_buckets", f"{restoring} holds state in {kept[-1]} buckets, not "
                                                      f"{cfg.key_buckets}; restore with key_buckets = {kept[-1]} "
                                                      f"or start without restore")


def run_here(cfg: StreamConfig, progress: Callable[[dict], bool | None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict:
    """The job in this process (see run_stream for why callers want a child); returns its counts
    when it finishes, or once progress(counts) or should_stop() (polled twice a second) returns
    True, which cancels it."""
    # The keyed functions' start deadline; not on a cluster, whose functions may not reach this driver.
    deadline, opening = time.monotonic() + cfg.start_timeout_s, None if is_submitted() else keyed_functions(cfg)
    make_output_dirs(cfg)
    env, ledger = environment(cfg)
    server = ReceiptServer()
    totals: Counter = Counter()
    client = None
    try:
        build(env, cfg, ledger, server.address)
        client = env.execute_async("recstream stream")
        result = client.get_job_execution_result()  # done when the job ends (the mini-cluster then stops)
        stopping, ended = False, 0.0
        while True:
            if opening is not None and totals[OPENED] < opening and time.monotonic() >= deadline \
                    and not stopping and not result.done():
                client.cancel()
                raise StreamJobError(f"the stream job's functions did not open within {cfg.start_timeout_s:g} s "
                                     f"({totals[OPENED]} of {opening} open); run it again, and report it if it "
                                     "happens again (`py-spy dump --pid <the Flink JVM>` shows where they wait)")
            receipt = server.get(timeout=0.5)
            if receipt is not None:
                totals.update(receipt)
                if OPENED in receipt:  # sent alone, when a function's store is open: no progress to report
                    continue
                if not stopping and progress is not None and progress(_shape(totals)):
                    stopping = True
                    client.cancel()
                continue
            if result.done():
                ended = ended or time.monotonic()
                if server.open_connections == 0 or time.monotonic() - ended > 10:
                    break
                continue  # the functions' last receipts are still on their way
            if not stopping and should_stop is not None and should_stop():
                stopping = True
                client.cancel()
        if not stopping:
            result.result()  # raises the job's own error if it failed
    except KeyboardInterrupt:  # Ctrl-C: the job stops with its driver
        if client is not None:
            client.cancel()
    finally:
        server.close()
    return _shape(totals)


def keyed_functions(cfg: StreamConfig) -> int:
    """How many keyed function instances the job opens: users, and items unless item_stats is off."""
    return cfg.parallelism * (2 if cfg.item_stats else 1)


def _shape(totals: Counter) -> dict:
    rejected = {k.split(".", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("rejected.")}
    names = ("read", "accepted", "applied", "users_updated", "examples", "item_deltas", "item_deltas_skipped",
             "online_retries", "recovered", "state_saved", "state_save_us", "state_marks", OPENED)
    out = {name: totals.get(name, 0) for name in names}
    by_view = {k.split(".", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("rows_written.")}
    return {**out, "rows_written": sum(by_view.values()), "rows_by_view": by_view, "rejected": rejected,
            "rejected_total": sum(rejected.values()), "late": rejected.get("late", 0)}
