"""Beam backfill: raw event files -> validated, deduplicated offline tables.

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
The job moves Arrow tables, not single events: files are read and validated in
chunks, events are grouped into user shards, and each shard's tables are built
by features.offline. Runner options pass through to Beam (DirectRunner by default;
add --direct_num_workers=2 --direct_running_mode=multi_processing to use 2 cores).
"""
from __future__ import annotations

import glob
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from features.labels import LabelPolicy
from features.sequence import SequencePolicy
from features.tables import TABLES
from pipelines.beam_adapters import NAMESPACE, REJECTED, ItemShardFn, ReadValidateFn, ShardSettings, UserShardFn

USER_TABLES = ("behavior_log", "event_log", "user_sequence", "user_recent", "user_category_sequence", "examples", "user_stats")


@dataclass(frozen=True)
class BackfillConfig:
    input: str  # a glob of raw JSON-lines files
    output: str
    catalog: str | None = None  # Parquet with hashed item_id, category_id (needed for next_item labels)
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


def conform(table: pa.Table, name: str) -> pa.Table:
    """Put a table in its declared schema, adding feature_ts where the schema has one."""
    schema = TABLES[name]
    if "feature_ts" in schema.names and "feature_ts" not in table.column_names:
        ms = table.column("last_event_ms") if "last_event_ms" in table.column_names else None
        if ms is None:
            raise ValueError(f"table {name} has no time to stamp")
        table = table.append_column("feature_ts", pc.cast(pc.multiply(ms, 1000), pa.timestamp("us", tz="UTC")))
    return table.select(schema.names).cast(schema)


def _stamp_stats(table: pa.Table, as_of_ms: int, name: str) -> pa.Table:
    ts = pa.array(np.full(table.num_rows, as_of_ms * 1000), pa.timestamp("us", tz="UTC"))
    return table.append_column("feature_ts", ts).select(TABLES[name].names).cast(TABLES[name])


def build(p: beam.Pipeline, cfg: BackfillConfig, files: list[str]) -> None:
    out = Path(cfg.output)
    read = (p | "Files" >> beam.Create(files)
            | "ReadValidate" >> beam.ParDo(ReadValidateFn(cfg.shards, cfg.now_ms)).with_outputs(REJECTED,
                                                                                                main="events"))
    _write(read[REJECTED], out, "rejected")
    catalog = None
    if cfg.catalog:
        catalog = beam.pvalue.AsSingleton(p | "Catalog" >> beam.Create([_load_catalog(cfg.catalog)]))
    settings = ShardSettings(cfg.sequence, cfg.recent_len, cfg.category_len, cfg.labels, cfg.stats_as_of_ms,
                             cfg.labels_until_ms,
                             cfg.shards)
    tables = (read.events
              | "GroupUserShards" >> beam.GroupByKey()
              | "UserShards" >> beam.ParDo(UserShardFn(settings), catalog=catalog).with_outputs(
                  *USER_TABLES, main="item_events"))
    for name in USER_TABLES:
        if name == "user_stats":
            if cfg.stats_as_of_ms is not None:
                as_of = cfg.stats_as_of_ms
                _write(tables[name] | f"Stamp_{name}" >> beam.Map(_stamp_stats, as_of, name), out, name)
            continue
        conformed = tables[name] | f"Conform_{name}" >> beam.Map(conform, name)
        _write(conformed, out, name)
    if cfg.stats_as_of_ms is not None:
        items = (tables.item_events
                 | "GroupItemShards" >> beam.GroupByKey()
                 | "ItemShards" >> beam.ParDo(ItemShardFn(cfg.stats_as_of_ms))
                 | "Stamp_item_stats" >> beam.Map(_stamp_stats, cfg.stats_as_of_ms, "item_stats"))
        _write(items, out, "item_stats")


def _write(tables, out: Path, name: str) -> None:
    tables | f"Write_{name}" >> beam.io.WriteToParquetBatched(
        str(out / name / "part"), TABLES[name], file_name_suffix=".parquet")


def _load_catalog(path: str) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path, columns=["item_id", "category_id"])
    return (table.column("item_id").to_numpy(),
            table.column("category_id").fill_null(0).to_numpy())


def run_backfill(cfg: BackfillConfig, pipeline_args: list[str] | None = None) -> dict:
    """Run the job and return its counts (also written to counts.json)."""
    files = sorted(glob.glob(cfg.input))
    if not files:
        raise FileNotFoundError(f"no raw event files match {cfg.input!r}")
    out = Path(cfg.output)
    for name in TABLES:
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    with beam.Pipeline(options=PipelineOptions(pipeline_args or [])) as p:
        build(p, cfg, files)
    counts = _counts(p.result)
    for name in TABLES:  # a table with no rows still gets a file, so readers find its schema
        if not list((out / name).glob("*.parquet")):
            (out / name).mkdir(parents=True, exist_ok=True)
            pq.write_table(TABLES[name].empty_table(), out / name / "empty.parquet")
    (out / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True))
    return counts


def _counts(result) -> dict:
    counts: dict = {"read": 0, "accepted": 0, "rejected": {}, "duplicates": 0, "examples": 0}
    for c in result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name, value = c.key.metric.name, c.committed if c.committed is not None else c.attempted
        if name.startswith("rejected."):
            reason = name.split(".", 1)[1]
            counts["rejected"][reason] = counts["rejected"].get(reason, 0) + value
        else:
            counts[name] = counts.get(name, 0) + value
    counts["rejected_total"] = sum(counts["rejected"].values())
    return counts
