"""PyFlink streaming job: raw event files -> validated events -> keyed sequence state -> online features.

    files (FileSource, text lines) -> validate (features.validate.parse_event)
      -> key by user -> SequenceFn (ValueState: features.sequence, bootstrapped from the online store)
           |-> dead letters (FileSink, JSON lines: reason, field, detail, raw)
           '-> feature rows -> key by user -> OnlineWriterFn (micro-batched write_user_sequences)
    receipts (counts) of both keyed functions -> collected and summed by the driver

Bounded (follow=False): reads the files present and finishes. Follow (follow=True):
watches the folder for new files until stopped: Ctrl-C in the driver, or a
``progress`` callback that returns True; the job is then cancelled. Rows still
buffered at that moment (at most one micro-batch, at most ~1 s old) are not
written; a rerun applies their events again, as they are newer than the online
features.
"""
from __future__ import annotations

import functools
import multiprocessing
import queue
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
from pyflink.common.serialization import Encoder
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import (BucketAssigner, FileSink, FileSource, OutputFileConfig,
                                                       RollingPolicy, StreamFormat)
from pyflink.datastream.data_stream import CloseableIterator, DataStream

from features.sequence import SequencePolicy
from pipelines.progress import quiet_libraries
from pipelines.flink_adapters import DEAD_LETTERS, RECEIPTS, OnlineWriterFn, SequenceFn, parse_line, route_key

MONITOR_MS = 1000  # follow mode: how often the folder is listed for new files
CHECKPOINT_MS = 5000  # follow mode: dead-letter files are committed on each checkpoint


@dataclass(frozen=True)
class StreamConfig:
    source: Path  # a folder of JSON-lines event files
    workdir: Path  # the run folder whose Feast store receives the updates (apply must have run)
    dead_letter: Path  # a folder; rejected and late records land here as JSON lines
    follow: bool = False  # False: read the files present and finish; True: watch the folder
    sequence: SequencePolicy = field(default_factory=SequencePolicy)
    flush_every: int = 500  # rows per online write (and records per count receipt)
    parallelism: int = 1
    now_ms: int | None = None  # validation clock; None means the wall clock

    def __post_init__(self) -> None:
        for name in ("source", "workdir", "dead_letter"):
            value = getattr(self, name)
            if not isinstance(value, (str, Path)) or str(value) == "":
                raise ValueError(f"StreamConfig.{name} must be a non-empty path, got {value!r}")
            object.__setattr__(self, name, Path(value))
        for name in ("flush_every", "parallelism"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StreamConfig.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.follow, bool):
            raise ValueError(f"StreamConfig.follow must be True or False, got {self.follow!r}")
        if not isinstance(self.sequence, SequencePolicy):
            raise ValueError(f"StreamConfig.sequence must be a SequencePolicy, got {type(self.sequence).__name__}")
        if self.now_ms is not None and (isinstance(self.now_ms, bool) or not isinstance(self.now_ms, int)):
            raise ValueError(f"StreamConfig.now_ms must be integer milliseconds or None, got {self.now_ms!r}")


def build(env: StreamExecutionEnvironment, cfg: StreamConfig) -> DataStream:
    """Add the job to env; returns the stream of count receipts."""
    files = FileSource.for_record_stream_format(StreamFormat.text_line_format("ISO-8859-1"), str(cfg.source.resolve()))
    if cfg.follow:
        files = files.monitor_continuously(Duration.of_millis(MONITOR_MS))
    lines = env.from_source(files.build(), WatermarkStrategy.no_watermarks(), "event files")
    workdir = str(cfg.workdir.resolve())
    sequences = (lines.map(functools.partial(parse_line, now_ms=cfg.now_ms)).name("validate")
                 .key_by(route_key, key_type=Types.LONG())
                 .process(SequenceFn(workdir, cfg.sequence, cfg.flush_every, cfg.follow)).name("sequences"))
    sequences.get_side_output(DEAD_LETTERS).sink_to(
        FileSink.for_row_format(str(cfg.dead_letter.resolve()), Encoder.simple_string_encoder())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())  # follow mode: visible per checkpoint
        .with_output_file_config(OutputFileConfig.builder().with_part_prefix("dead").with_part_suffix(".jsonl").build())
        .build()).name("dead letters")
    writes = (sequences.key_by(lambda row: row["user_id"], key_type=Types.LONG())
              .process(OnlineWriterFn(workdir, cfg.flush_every, cfg.follow)).name("online writes"))
    return writes.union(sequences.get_side_output(RECEIPTS))


class StreamJobError(RuntimeError):
    """The stream job failed; the message carries the job's own traceback."""


def run_stream(cfg: StreamConfig, progress: Callable[[dict], bool | None] | None = None) -> dict:
    """Run the job on a local mini-cluster; returns its counts.

    counts: read, accepted (valid and not late), rejected {reason: n} (validation
    reasons and 'late'), rejected_total, late, applied (events added to a sequence),
    users_updated, rows_written. read == accepted + rejected_total, and each
    rejection is one line in dead_letter/. progress(counts) is called after each
    receipt; returning True stops the job.

    The job's driver runs in a child process, as it would on a cluster: PyFlink's
    local Python workers share the driver's process-wide Beam worker state, and a
    Beam job run afterwards in the same process fails. A child keeps callers clean.
    """
    if not cfg.source.is_dir():
        raise FileNotFoundError(f"stream source {str(cfg.source)!r} is not a folder")
    if not (cfg.workdir / "feast" / "registry.db").exists():
        raise FileNotFoundError(f"no Feast registry under {str(cfg.workdir)!r}: apply the definitions first")
    ctx = multiprocessing.get_context("spawn")
    messages, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_child, args=(cfg, messages, stop), name="recstream-stream")
    child.start()
    counts = _shape(Counter())
    try:
        while True:
            try:
                kind, payload = messages.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    raise StreamJobError(f"the stream job exited with code {child.exitcode} and no result") from None
                continue
            except KeyboardInterrupt:
                stop.set()  # the child got the same Ctrl-C; wait for its final counts
                continue
            if kind == "error":
                raise StreamJobError(payload)
            counts = payload
            if kind == "done":
                return counts
            if progress is not None and progress(counts):
                stop.set()
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()


def _child(cfg: StreamConfig, messages, stop) -> None:
    quiet_libraries()  # a spawned child starts with fresh warning filters
    try:
        def report(counts: dict) -> bool:
            messages.put(("counts", counts))
            return stop.is_set()
        messages.put(("done", run_here(cfg, report)))
    except BaseException:  # noqa: BLE001 - every failure must reach the parent with its traceback
        messages.put(("error", traceback.format_exc()))


def run_here(cfg: StreamConfig, progress: Callable[[dict], bool | None] | None = None) -> dict:
    """The job in this process (see run_stream for why callers want a child)."""
    cfg.dead_letter.mkdir(parents=True, exist_ok=True)
    conf = Configuration()
    conf.set_string("restart-strategy.type", "none")  # fail fast instead of retrying a broken job
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.set_parallelism(cfg.parallelism)
    env.set_python_executable(sys.executable)
    if cfg.follow:
        env.enable_checkpointing(CHECKPOINT_MS)
    receipts = build(env, cfg)
    # execute_and_collect() would run only the collected branch (the dead-letter sink would never
    # run), so collect asynchronously and execute the whole job.
    results = CloseableIterator(receipts._j_data_stream.collectAsync(), receipts.get_type())
    env.execute_async("recstream stream")
    totals: Counter = Counter()
    with results:
        try:
            for receipt in results:
                totals.update(receipt)
                if progress is not None and progress(_shape(totals)):
                    break
        except KeyboardInterrupt:
            pass
    return _shape(totals)


def _shape(totals: Counter) -> dict:
    rejected = {k.split(".", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("rejected.")}
    out = {name: totals.get(name, 0) for name in ("read", "accepted", "applied", "users_updated", "rows_written")}
    return {**out, "rejected": rejected, "rejected_total": sum(rejected.values()), "late": rejected.get("late", 0)}
