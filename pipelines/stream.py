"""PyFlink streaming job: raw events (Kafka or files) -> validated events -> keyed state -> online features.

    Kafka topic | folder of JSON-lines files -> validate (features.validate.parse_event)
      -> event time (watermarks: bounded out-of-orderness, idleness) -> key by user
      -> UserFeaturesFn (keyed state: features.user_state, bootstrapped from the online store;
                         the click join of stream_examples, fired by event-time timers)
           |-> user_sequence, user_recent, user_category_sequence, user_stats online (micro-batched)
           |-> dead letters (reason, field, detail, raw): Kafka topic | JSON-lines files
           |-> training examples (impression + click within the window): Kafka topic | files
           |-> accepted records, as they came (the log the examples point into): Kafka topic | files
           '-> item statistics deltas -> key by item -> ItemStatsFn -> item_stats online
    receipts (counts) of both keyed functions -> a local socket -> summed by the driver (stream_receipts)

Bounded (follow=False): reads what is there (the files present; the topic up to its end
offsets at start) and finishes. Follow (follow=True): keeps reading until stopped: Ctrl-C in
the driver, or a ``progress`` callback that returns True; the job is then cancelled.

Checkpoints (``checkpoints`` set): the keyed state, the timers and the Kafka offsets are
saved every ``checkpoint_interval_ms``; ``restore="latest"`` (or a chk-N path) resumes from
one, as after a crash. Online writes are flushed before each checkpoint and are idempotent,
so a restored run ends with the online store an uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import queue
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pyflink.common import Configuration, Types
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import Sink
from pyflink.java_gateway import get_gateway

from features.labels import LabelPolicy
from features.sequence import SequencePolicy
from features.user_state import FeaturePolicy
from pipelines.config import from_dict
from pipelines.feature_store import OnlineStore
from pipelines.flink_adapters import ACCEPTED, DEAD_LETTERS, EXAMPLES, FnSettings, parse_line, route_key
from pipelines.flink_features import DELTA_TYPE, ItemStatsFn, UserFeaturesFn
from pipelines.progress import quiet_libraries
from pipelines.stream_receipts import ReceiptServer
from pipelines.stream_sources import (KafkaSettings, file_lines, file_sink, kafka_lines, kafka_sink, stamp_files,
                                      watermarks)

LEDGER = "bootstrap.sqlite"


@dataclass(frozen=True)
class StreamConfig:
    workdir: Path  # the run folder whose Feast store receives the updates (apply must have run)
    source: Path | None = None  # a folder of JSON-lines event files, or:
    kafka: KafkaSettings | None = None  # a Kafka topic (and the dead-letter, example and accepted-record topics)
    dead_letter: Path | None = None  # files source: folder for rejected and late records (workdir/stream_rejected)
    examples_dir: Path | None = None  # files source: folder for training examples (workdir/stream_examples)
    accepted_dir: Path | None = None  # files source: folder for the accepted records (workdir/stream_accepted)
    follow: bool = False  # False: read what is there and finish; True: keep reading until stopped
    sequence: SequencePolicy = field(default_factory=SequencePolicy)  # the lifelong sequence (the backfill's)
    recent_len: int = 50  # user_recent's length (the backfill's --recent-len)
    category_len: int = 50  # user_category_sequence's length (the backfill's --category-len)
    item_stats: bool = True  # keep item_stats fresh too (a second keyed operator, by item)
    online: OnlineStore = field(default_factory=OnlineStore)  # kind = "sqlite" (the run folder's) or "redis"
    online_patience_s: float = 300.0  # how long an unreachable online store is waited for before the job fails
    state_cache: int = 100_000  # keys whose decoded state each keyed function keeps in memory
    labels: LabelPolicy = field(default_factory=LabelPolicy)  # the example stream's attribution window
    examples: bool = True  # emit the training-example stream
    accepted_log: bool = True  # emit every accepted record as it came (the log the examples point into)
    out_of_orderness_ms: int = 300_000  # watermark = the newest event time seen - this
    allowed_lateness_ms: int = 0  # events older than watermark - this are dead-lettered as 'late'
    idleness_ms: int = 30_000  # a partition (Kafka) or reader with no record for this long stops holding the watermark
    checkpoints: Path | None = None  # folder for checkpoints (and the bootstrap ledger); None: none kept
    checkpoint_interval_ms: int = 5_000
    restore: str | None = None  # "latest" (the newest checkpoint in `checkpoints`) or a chk-N folder
    report_every: int = 500  # records per count receipt (counts also go out on every flush)
    flush_ms: int = 100  # following: the longest a changed user row waits for its online write (a timer)
    item_flush_ms: int = 1_000  # following: the same for item_stats rows (hot items change all the time)
    bundle_ms: int = 100  # how often the Python operators commit their state and hand results on (timers,
    # item deltas, dead letters, examples): python.fn-execution.bundle.time; 1000 is ~1.6x the rate, ~3x the latency
    parallelism: int = 1
    now_ms: int | None = None  # validation clock; None means the wall clock

    def __post_init__(self) -> None:
        if isinstance(self.kafka, dict):
            object.__setattr__(self, "kafka", from_dict(KafkaSettings, self.kafka, "kafka"))
        if isinstance(self.online, dict):
            object.__setattr__(self, "online", from_dict(OnlineStore, self.online, "online"))
        if not isinstance(self.online, OnlineStore):
            raise ValueError(f"StreamConfig.online must be an OnlineStore, got {type(self.online).__name__}")
        if (self.source is None) == (self.kafka is None):
            raise ValueError("StreamConfig needs exactly one source: source (a folder of JSON-lines files) "
                             "or kafka (bootstrap_servers, topic, ...)")
        if self.kafka is not None and not isinstance(self.kafka, KafkaSettings):
            raise ValueError(f"StreamConfig.kafka must be KafkaSettings, got {type(self.kafka).__name__}")
        for name in ("workdir", "source", "dead_letter", "examples_dir", "accepted_dir", "checkpoints"):
            value = getattr(self, name)
            if value is None and name != "workdir":
                continue
            if not isinstance(value, (str, Path)) or str(value) == "":
                raise ValueError(f"StreamConfig.{name} must be a non-empty path, got {value!r}")
            object.__setattr__(self, name, Path(value))
        for name, folder in (("dead_letter", "rejected"), ("examples_dir", "examples"), ("accepted_dir", "accepted")):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.workdir / f"stream_{folder}")
        for name in ("report_every", "flush_ms", "item_flush_ms", "bundle_ms", "parallelism", "out_of_orderness_ms",
                     "idleness_ms", "checkpoint_interval_ms", "recent_len", "category_len", "state_cache"):
            _check_int(name, getattr(self, name), 1)
        _check_int("allowed_lateness_ms", self.allowed_lateness_ms, 0)
        if isinstance(self.online_patience_s, bool) or not isinstance(self.online_patience_s, (int, float)) \
                or self.online_patience_s < 0:
            raise ValueError(f"StreamConfig.online_patience_s must be seconds >= 0, got {self.online_patience_s!r}")
        for name in ("follow", "examples", "accepted_log", "item_stats"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"StreamConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.sequence, SequencePolicy):
            raise ValueError(f"StreamConfig.sequence must be a SequencePolicy, got {type(self.sequence).__name__}")
        if self.examples and self.labels.kind != "impression_click":
            raise ValueError(f"the example stream builds impression_click labels, not {self.labels.kind!r}; "
                             "set examples = false or labels.kind = 'impression_click'")
        if self.restore is not None and self.checkpoints is None and self.restore == "latest":
            raise ValueError("StreamConfig.restore = 'latest' needs the checkpoints folder")
        if self.now_ms is not None and (isinstance(self.now_ms, bool) or not isinstance(self.now_ms, int)):
            raise ValueError(f"StreamConfig.now_ms must be integer milliseconds or None, got {self.now_ms!r}")


    def features(self) -> FeaturePolicy:
        return FeaturePolicy(self.sequence, self.recent_len, self.category_len)


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"StreamConfig.{name} must be an integer >= {low}, got {value!r}")


def build(env: StreamExecutionEnvironment, cfg: StreamConfig, ledger: str | None = None,
          receipts: str | None = None) -> None:
    """Add the job to env. ledger: the bootstrap ledger's path; receipts: the driver's
    host:port for count receipts (None: Flink metrics only)."""
    strategy = watermarks(cfg.out_of_orderness_ms, cfg.idleness_ms)
    parse = functools.partial(parse_line, now_ms=cfg.now_ms)
    if cfg.kafka is not None:
        parsed = kafka_lines(env, cfg.kafka, strategy, bounded=not cfg.follow).map(parse).name("validate").uid("validate")
    else:
        lines = file_lines(env, str(cfg.source.resolve()), cfg.follow)
        parsed = stamp_files(lines.map(parse).name("validate").uid("validate"), strategy).uid("event-time")
    window = cfg.labels.window_ms if cfg.examples else None
    settings = FnSettings(workdir=str(cfg.workdir.resolve()), online=cfg.online, every=cfg.report_every,
                          flush_ms=cfg.flush_ms if cfg.follow else None,  # a bounded run flushes at its end
                          ledger=ledger, receipts=receipts, cache_size=cfg.state_cache, restored=cfg.restore is not None,
                          patience_s=float(cfg.online_patience_s))
    users = (parsed.key_by(route_key, key_type=Types.LONG())
             .process(UserFeaturesFn(settings, cfg.features(), cfg.allowed_lateness_ms, window, cfg.accepted_log),
                      output_type=DELTA_TYPE)
             .name("user features").uid("user-features"))
    for tag, name, uid, topic, folder in output_routes(cfg):
        out = users.get_side_output(tag)
        sink = kafka_sink(cfg.kafka, topic, uid) if cfg.kafka is not None else file_sink(str(folder.resolve()), uid)
        out.sink_to(sink).name(name).uid(uid)
    discard = Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())
    if cfg.item_stats:
        item_settings = dataclasses.replace(settings, flush_ms=cfg.item_flush_ms if cfg.follow else None)
        items = (users.key_by(lambda delta: delta[0], key_type=Types.LONG()).process(ItemStatsFn(item_settings))
                 .name("item stats").uid("item-stats"))
        items.sink_to(discard).name("end").uid("end")  # the functions' effect is the store; they emit nothing
    else:
        users.sink_to(discard).name("end").uid("end")


def output_routes(cfg: StreamConfig) -> list[tuple]:
    """(side output, name, uid, Kafka topic, files folder) of each output the config turns on."""
    kafka = cfg.kafka
    routes = [(DEAD_LETTERS, "dead letters", "dead", kafka and kafka.dead_letter_topic, cfg.dead_letter)]
    if cfg.examples:
        routes.append((EXAMPLES, "examples", "examples", kafka and kafka.examples_topic, cfg.examples_dir))
    if cfg.accepted_log:
        routes.append((ACCEPTED, "accepted records", "accepted", kafka and kafka.accepted_topic, cfg.accepted_dir))
    return routes


def make_output_dirs(cfg: StreamConfig) -> None:
    """Files source: the folders the file sinks write into."""
    if cfg.kafka is None:
        for route in output_routes(cfg):
            route[4].mkdir(parents=True, exist_ok=True)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest completed checkpoint (a chk-N folder with its _metadata) under folder."""
    done = [m.parent for m in Path(folder).glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])), default=None)


class StreamJobError(RuntimeError):
    """The stream job failed; the message carries the job's own traceback."""


class StreamProcess:
    """The job's driver in a child process (spawned), as it would run on a cluster.

    PyFlink's local Python workers share the driver's process-wide Beam worker state, and a
    Beam job run afterwards in the same process fails: a child keeps callers clean. ``pid``
    is the child's (its JVM exits with it: the gateway stops when its stdin closes)."""

    def __init__(self, cfg: StreamConfig):
        if cfg.source is not None and not cfg.source.is_dir():
            raise FileNotFoundError(f"stream source {str(cfg.source)!r} is not a folder")
        if not (cfg.workdir / "feast" / "registry.db").exists():
            raise FileNotFoundError(f"no Feast registry under {str(cfg.workdir)!r}: apply the definitions first")
        self.cfg = cfg
        ctx = multiprocessing.get_context("spawn")
        self.messages, self.stop = ctx.Queue(), ctx.Event()
        self.child = ctx.Process(target=_child, args=(cfg, self.messages, self.stop), name="recstream-stream")

    def start(self) -> "StreamProcess":
        self.child.start()
        return self

    @property
    def pid(self) -> int:
        return self.child.pid

    def wait(self, progress: Callable[[dict], bool | None] | None = None,
             until: Callable[[], bool] | None = None) -> dict:
        """The job's counts once it finishes or is stopped: progress(counts) returning True, or
        until() (polled every second, e.g. "the group's offsets reached the end") returning True."""
        counts = _shape(Counter())
        try:
            while True:
                try:
                    kind, payload = self.messages.get(timeout=1.0)
                except queue.Empty:
                    if not self.child.is_alive():
                        raise StreamJobError(f"the stream job exited with code {self.child.exitcode} "
                                             "and no result") from None
                    if until is not None and not self.stop.is_set() and until():
                        self.stop.set()
                    continue
                except KeyboardInterrupt:
                    self.stop.set()  # the child got the same Ctrl-C; wait for its final counts
                    continue
                if kind == "error":
                    raise StreamJobError(payload)
                counts = payload
                if kind == "done":
                    return counts
                if progress is not None and progress(counts):
                    self.stop.set()
        finally:
            self.child.join(timeout=60)
            if self.child.is_alive():
                self.child.kill()


def run_stream(cfg: StreamConfig, progress: Callable[[dict], bool | None] | None = None) -> dict:
    """Run the job on a local mini-cluster (in a child process); returns its counts.

    counts: read, accepted (valid and not late), rejected {reason: n} (validation reasons and
    'late'), rejected_total, late, applied (events added to a sequence), users_updated,
    rows_written, examples. read == accepted + rejected_total, and each rejection is one
    dead letter. progress(counts) is called after each receipt; returning True stops the job.
    """
    return StreamProcess(cfg).start().wait(progress)


def _child(cfg: StreamConfig, messages, stop) -> None:
    quiet_libraries()  # a spawned child starts with fresh warning filters
    try:
        def report(counts: dict) -> bool:
            messages.put(("counts", counts))
            return stop.is_set()
        messages.put(("done", run_here(cfg, report, stop.is_set)))
    except BaseException:  # noqa: BLE001 - every failure must reach the parent with its traceback
        messages.put(("error", traceback.format_exc()))


def environment(cfg: StreamConfig) -> tuple[StreamExecutionEnvironment, str | None]:
    """The execution environment with checkpointing, restore and jars set; and the ledger path."""
    conf = Configuration()
    conf.set_string("restart-strategy.type", "none")  # fail fast; a restart is a restore from a checkpoint
    conf.set_string("python.fn-execution.bundle.time", str(cfg.bundle_ms))
    ledger = None
    if cfg.checkpoints is not None:
        cfg.checkpoints.mkdir(parents=True, exist_ok=True)
        conf.set_string("state.checkpoints.dir", cfg.checkpoints.resolve().as_uri())
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        ledger = str(cfg.checkpoints.resolve() / LEDGER)
        if cfg.restore is None:  # a fresh start bootstraps from the online store as it is now
            for suffix in ("", "-wal", "-shm"):
                Path(ledger + suffix).unlink(missing_ok=True)
    if cfg.restore is not None:
        path = latest_checkpoint(cfg.checkpoints) if cfg.restore == "latest" else Path(cfg.restore)
        if path is None or not (path / "_metadata").is_file():
            raise FileNotFoundError(f"no completed checkpoint to restore from ({cfg.restore!r} under "
                                    f"{cfg.checkpoints}); start without restore")
        conf.set_string("execution.state-recovery.path", path.resolve().as_uri())
        conf.set_string("execution.state-recovery.ignore-unclaimed-state", "true")  # the old run's receipts sink
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.set_parallelism(cfg.parallelism)
    env.set_python_executable(sys.executable)
    if cfg.kafka is not None:
        from pipelines.broker import kafka_jars

        env.add_jars(*[p.resolve().as_uri() for p in kafka_jars()])
    if cfg.checkpoints is not None or cfg.follow:  # follow: dead-letter files are committed per checkpoint
        env.enable_checkpointing(cfg.checkpoint_interval_ms)
    return env, ledger


def run_here(cfg: StreamConfig, progress: Callable[[dict], bool | None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict:
    """The job in this process (see run_stream for why callers want a child); returns its counts
    when it finishes, or once progress(counts) or should_stop() (polled twice a second) returns
    True, which cancels it."""
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
            receipt = server.get(timeout=0.5)
            if receipt is not None:
                totals.update(receipt)
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


def _shape(totals: Counter) -> dict:
    rejected = {k.split(".", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("rejected.")}
    names = ("read", "accepted", "applied", "users_updated", "examples", "item_deltas", "item_deltas_skipped",
             "online_retries")
    out = {name: totals.get(name, 0) for name in names}
    by_view = {k.split(".", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("rows_written.")}
    return {**out, "rows_written": sum(by_view.values()), "rows_by_view": by_view, "rejected": rejected,
            "rejected_total": sum(rejected.values()), "late": rejected.get("late", 0)}
