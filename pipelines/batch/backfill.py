"""The backfill: raw event files (JSON lines, or Parquet) -> validated, deduplicated offline tables.

Writes under ``output`` (one folder of Parquet files per table, features.tables.TABLES):
  behavior_log/            every behavior once, the source of point-in-time sequences
  event_log/               every event once (impressions too), the source of point-in-time statistics
  user_sequence/           each user's lifelong sequence (the latest sequence.max_len behaviors)
  user_recent/             each user's last recent_len behaviors
  user_category_sequence/  each (user, category)'s last category_len behaviors
  user_stats/, item_stats/ windowed counts and CTRs as of stats_as_of_ms (when given)
  examples/                labeled training examples
  rejected/                dead letters: reason, field, detail, raw record
  counts.json              read / accepted / rejected by reason / duplicates / examples
  _SUCCESS                 the run finished (pipelines/staged.py: outputs are written
                           aside and swapped in whole, so a killed run leaves the previous one)
The job moves Arrow tables, not single events: files are read and validated in
chunks (features.validate_arrow: blocks of JSON lines, or batches of a Parquet file's
rows, under the same rules), events are grouped into user shards, and each
shard's tables are built by features.offline and written by the worker that built them
(the stages: pipelines/batch/shards.py). Two engines run those stages and write the same tables:
  local  (the default) ``workers`` threads on this machine (pipelines/batch/local.py)
  beam   a Beam pipeline (build, below): runner options pass through (DirectRunner by default;
         --runner=FlinkRunner ... for a cluster)
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import ConfigError, InputError, MissingInput
from features.labels import LabelPolicy
from features.negatives import ItemPool
from features.sequence import SequencePolicy
from features.tables import TABLES
from pipelines.batch.shards import ShardSettings, is_parquet, parquet_columns
from pipelines.staged import staged
from pipelines.config import as_folder, typed


@typed
@dataclass(frozen=True)
class BackfillConfig:
    input: str  # a glob of raw event files (JSON lines; *.parquet: Parquet), or several separated by commas
    output: str
    catalog: str | None = None  # Parquet with hashed item_id: next_item negatives are drawn among its items only
    sequence: SequencePolicy = field(default_factory=SequencePolicy)  # the lifelong sequence
    recent_len: int = 50
    category_len: int = 50
    labels: LabelPolicy = field(default_factory=LabelPolicy)
    stats_as_of_ms: int | None = None  # None: no stats tables (they need an as-of time)
    labels_until_ms: int | None = None  # the data's end: impressions whose click window runs past it get no label
    now_ms: int | None = None  # validation clock; None means the wall clock
    shards: int = 16

    def __post_init__(self) -> None:
        for name in ("recent_len", "category_len", "shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"BackfillConfig.{name} must be >= 1, got {getattr(self, name)}")


ENGINES = ("local", "beam")


def settings(cfg: BackfillConfig) -> ShardSettings:
    out = str(Path(cfg.output).resolve()) if "://" not in cfg.output else cfg.output
    return ShardSettings(out, cfg.sequence, cfg.recent_len, cfg.category_len, cfg.labels, cfg.stats_as_of_ms,
                         cfg.labels_until_ms, cfg.shards)


def build(p, cfg: BackfillConfig, files: list[str]) -> None:
    """The Beam pipeline: files -> validated event chunks by user shard -> per-shard tables (written
    by the shard's worker) -> item events by item shard -> item statistics. Rejections are written
    as they are found."""
    import apache_beam as beam

    from pipelines.batch.adapters import ItemShardFn, ReadValidateFn, UserShardFn

    shard_settings = settings(cfg)
    out = shard_settings.output
    events = (p | "Files" >> beam.Create(list(enumerate(files)))
              | "ReadValidate" >> beam.ParDo(ReadValidateFn(out, cfg.shards, cfg.now_ms)))
    pool = None
    if cfg.labels.kind == "next_item":  # negatives as of each example's time, from every user's behaviors
        catalog = _load_catalog(cfg.catalog) if cfg.catalog else None
        pool = beam.pvalue.AsSingleton(
            events
            | "PoolParts" >> beam.Map(lambda keyed: ItemPool.part(keyed[1]))
            | "PoolGather" >> beam.combiners.ToList()
            | "Pool" >> beam.Map(ItemPool.from_parts, catalog))
    item_events = (events
                   | "GroupUserShards" >> beam.GroupByKey()
                   | "UserShards" >> beam.ParDo(UserShardFn(shard_settings), pool=pool))
    if cfg.stats_as_of_ms is not None:
        (item_events
         | "GroupItemShards" >> beam.GroupByKey()
         | "ItemShards" >> beam.ParDo(ItemShardFn(out, cfg.stats_as_of_ms)))


def _load_catalog(path: str) -> np.ndarray:
    """The catalog's hashed item IDs; a column that cannot hold them is a ConfigError naming the file."""
    try:
        column = pq.read_table(path, columns=["item_id"]).column("item_id")
    except (OSError, KeyError, pa.ArrowException) as err:
        raise ConfigError("catalog", f"{path}: cannot read its item_id column ({err}); give the Parquet "
                                     "catalog `recstream ingest` writes (WORKDIR/catalog.parquet)") from None
    if not pa.types.is_integer(column.type) or column.null_count:
        raise ConfigError("catalog", f"{path}: item_id must be hashed IDs (int64, no nulls), got "
                                     f"{column.type} with {column.null_count} nulls; give the catalog "
                                     "`recstream ingest` writes (WORKDIR/catalog.parquet)")
    return column.to_numpy().astype(np.int64)


def run_backfill(cfg: BackfillConfig, pipeline_args: list[str] | None = None, engine: str = "local",
                 workers: int | None = None) -> dict:
    """Run the job and return its counts (also written to counts.json). Both engines write the same
    tables and counts.

    Args:
        cfg: input globs, output folder, the sequence policies and labels.
        pipeline_args: Beam pipeline options, passed through (e.g. ["--runner=PortableRunner", ...]);
            engine "beam" only.
        engine: "local" (threads on this machine, pipelines/batch/local.py) or "beam".
        workers: the local engine's threads (1: the calling thread alone; None: one per core this
            process may use). Not for Beam (a ConfigError), whose runner options set its workers.

    Returns:
        {"read", "accepted", "rejected": {reason: n}, "rejected_total", "duplicates", "examples", ...}

    Example:
        >>> run_backfill(BackfillConfig(input="runs/x/raw/*.jsonl", output="runs/x/offline"))  # doctest: +SKIP
        {'read': 120340, 'accepted': 120220, ...}
    """
    if engine not in ENGINES:
        raise ConfigError("--engine", f"unknown engine {engine!r}", ENGINES)
    if engine == "local" and pipeline_args:
        raise ConfigError(f"unrecognized arguments: {' '.join(pipeline_args)} (the local engine takes none; "
                          "Beam's options need --engine beam)")
    if engine == "beam" and workers is not None:
        raise ConfigError("--workers", "sets the local engine's threads; for Beam's DirectRunner give "
                                       "--direct_num_workers=N --direct_running_mode=multi_processing")
    workers = cores() if workers is None else workers
    if workers < 1:
        raise ConfigError("--workers", f"must be >= 1, got {workers}")
    files = _input_files(cfg.input)
    if cfg.catalog and "://" not in cfg.catalog and not Path(cfg.catalog).is_file():
        raise MissingInput(cfg.catalog, "give the item catalog's Parquet file (ingest writes WORKDIR/catalog.parquet)")
    if "://" not in cfg.output:
        as_folder(cfg.output, "output")
    # Written aside and swapped in at the end: a killed run leaves the previous run's outputs whole.
    with staged(Path(cfg.output), owned={*TABLES, "counts.json"}) as out:
        staged_cfg = dataclasses.replace(cfg, output=str(out))
        if engine == "beam":
            flat = _run_beam(staged_cfg, files, pipeline_args or [])
        else:
            from pipelines.batch.local import run_local

            catalog = _load_catalog(cfg.catalog) if cfg.catalog and cfg.labels.kind == "next_item" else None
            flat = run_local(files, settings(staged_cfg), cfg.now_ms, catalog, cfg.labels.kind == "next_item",
                             workers)
        counts = tally(flat)
        for name in TABLES:  # a table with no rows still gets a file, so readers find its schema
            if not list((out / name).glob("part-*.parquet")):
                (out / name).mkdir(parents=True, exist_ok=True)
                pq.write_table(TABLES[name].empty_table(), out / name / "empty.parquet")
        (out / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True))
    return counts


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _input_files(spec: str) -> list[str]:
    """The files a comma-separated list of globs matches; none, a folder among them, or a Parquet
    file whose schema cannot hold events (features.validate_arrow.event_columns) is an InputError,
    raised here, before the job starts."""
    files = sorted({f for pattern in spec.split(",") if pattern for f in glob.glob(pattern)})
    if not files:
        raise MissingInput(spec, "no raw event files match; check the --input glob")
    folders = [f for f in files if Path(f).is_dir()]
    if folders:
        raise InputError(folders[0], "--input matches this folder",
                         f"give its files (e.g. {folders[0]}/*.jsonl or {folders[0]}/*.parquet)")
    for f in files:
        if is_parquet(f):
            reader, _ = parquet_columns(f, f)  # reads the footer only
            reader.close()
    return files


def _run_beam(cfg: BackfillConfig, files: list[str], pipeline_args: list[str]) -> Counter:
    """The Beam pipeline's run; its counters by name."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.batch.adapters import NAMESPACE

    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as p:
        build(p, cfg, files)
    flat: Counter = Counter()
    for c in p.result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        flat[c.key.metric.name] += c.committed if c.committed is not None else c.attempted
    return flat


def tally(flat: Counter) -> dict:
    """Counts by name (pipelines.batch.shards.Count) -> counts.json's layout."""
    counts: dict = {"read": 0, "accepted": 0, "rejected": {}, "duplicates": 0, "examples": 0, "negatives": 0}
    for name, value in flat.items():
        if name.startswith("rejected."):
            reason = name.split(".", 1)[1]
            counts["rejected"][reason] = counts["rejected"].get(reason, 0) + value
        else:
            counts[name] = counts.get(name, 0) + value
    counts["rejected_total"] = sum(counts["rejected"].values())
    return counts
