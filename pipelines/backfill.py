"""Beam backfill: raw event files -> validated, deduplicated offline tables.

Writes under ``output``:
  behavior_log/   the behavior log (one row per behavior; sort it by user, time, event_id to slice)
  user_sequence/  each user's latest sequence features (the Feast source of the online view)
  examples/       labeled training examples (user, item, category, time, label)
  rejected/       the dead letters: reason, field, detail, raw record
  counts.json     read / accepted / rejected by reason / duplicates / examples
Runner options pass through to Beam (DirectRunner by default).
"""
from __future__ import annotations

import glob
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from features.labels import LabelPolicy
from features.schema import REJECTION_SCHEMA
from features.sequence import SequencePolicy
from features.tables import BEHAVIOR_LOG_SCHEMA, EXAMPLE_SCHEMA, USER_SEQUENCE_SCHEMA
from pipelines.beam_adapters import (NAMESPACE, REJECTED, SequenceCombineFn, UserTablesFn, ValidateFn,
                                     user_feature_row)

TABLES = {"behavior_log": BEHAVIOR_LOG_SCHEMA, "user_sequence": USER_SEQUENCE_SCHEMA,
          "examples": EXAMPLE_SCHEMA, "rejected": REJECTION_SCHEMA}


@dataclass(frozen=True)
class BackfillConfig:
    input: str  # a glob of raw JSON-lines files
    output: str
    catalog: str | None = None  # Parquet with hashed item_id, category_id (needed for next_item labels)
    sequence: SequencePolicy = field(default_factory=SequencePolicy)
    labels: LabelPolicy = field(default_factory=LabelPolicy)
    now_ms: int | None = None  # validation clock; None means the wall clock


def build(p: beam.Pipeline, cfg: BackfillConfig) -> None:
    out = Path(cfg.output)
    # Bytes, not str: a line that is not UTF-8 must reach parse_event (a not_utf8 rejection), not stop the job.
    parsed = (p | "Read" >> beam.io.ReadFromText(cfg.input, coder=beam.coders.BytesCoder())
              | "Validate" >> beam.ParDo(ValidateFn(cfg.now_ms)).with_outputs(REJECTED, main="events"))
    _write(parsed[REJECTED], out, "rejected")
    by_user = parsed.events | "ByUser" >> beam.Map(lambda e: (e.user_id, e))

    features = (by_user
                | "Sequences" >> beam.CombinePerKey(SequenceCombineFn(cfg.sequence))
                | "FeatureRow" >> beam.Map(user_feature_row)
                | "HasBehaviors" >> beam.Filter(lambda row: row["seq_length"] > 0))  # impressions alone: no row
    _write(features, out, "user_sequence")

    catalog = None
    if cfg.catalog:
        catalog = beam.pvalue.AsSingleton(p | "Catalog" >> beam.Create([_load_catalog(cfg.catalog)]))
    tables = (by_user
              | "GroupUser" >> beam.GroupByKey()
              | "UserTables" >> beam.ParDo(UserTablesFn(cfg.sequence, cfg.labels), catalog=catalog)
              .with_outputs(UserTablesFn.EXAMPLES, main="log"))
    _write(tables.log, out, "behavior_log")
    _write(tables[UserTablesFn.EXAMPLES], out, "examples")


def _write(rows, out: Path, name: str) -> None:
    rows | f"Write_{name}" >> beam.io.WriteToParquet(
        str(out / name / "part"), TABLES[name], file_name_suffix=".parquet")


def _load_catalog(path: str) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path, columns=["item_id", "category_id"])
    return (table.column("item_id").to_numpy(),
            table.column("category_id").fill_null(0).to_numpy())


def run_backfill(cfg: BackfillConfig, pipeline_args: list[str] | None = None) -> dict:
    """Run the job and return its counts (also written to counts.json)."""
    out = Path(cfg.output)
    if not glob.glob(cfg.input):
        raise FileNotFoundError(f"no raw event files match {cfg.input!r}")
    for name in TABLES:
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    options = PipelineOptions(pipeline_args or [])
    with beam.Pipeline(options=options) as p:
        build(p, cfg)
    counts = _counts(p.result)
    for name in TABLES:  # an empty PCollection writes no file; leave an empty table so readers work
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
            counts["rejected"][name.split(".", 1)[1]] = counts["rejected"].get(name.split(".", 1)[1], 0) + value
        else:
            counts[name] = counts.get(name, 0) + value
    counts["rejected_total"] = sum(counts["rejected"].values())
    return counts
