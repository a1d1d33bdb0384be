"""Thin Beam adapters over features/: read + validate in chunks, per-shard offline tables.

Elements are Arrow tables (thousands of events), not single events, so Beam's
per-element cost is paid per chunk; the per-shard work is features.offline.
"""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from features import offline
from features.labels import LabelPolicy
from features.schema import REJECTION_SCHEMA, Rejection, events_to_table
from features.sequence import SequencePolicy
from features.validate import parse_event

NAMESPACE = "recstream"
REJECTED = "rejected"
CHUNK_LINES = 20_000


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """IDs are already uniform 63-bit hashes, so a modulo spreads them evenly."""
    return np.asarray(ids, dtype=np.int64) % shards


def split_by_shard(table: pa.Table, key: str, shards: int):
    shard = shard_of(table.column(key).to_numpy(), shards)
    for s in np.unique(shard):
        yield int(s), table.filter(pa.array(shard == s))


class ReadValidateFn(beam.DoFn):
    """A raw JSON-lines file -> (user shard, events table) chunks; rejections tagged as tables."""

    def __init__(self, shards: int, now_ms: int | None = None):
        self.shards, self.now_ms = shards, now_ms
        self.read = Metrics.counter(NAMESPACE, "read")
        self.accepted = Metrics.counter(NAMESPACE, "accepted")

    def process(self, path: str):
        with beam.io.filesystems.FileSystems.open(path) as f:
            chunk: list[bytes] = []
            for line in f:
                chunk.append(line.rstrip(b"\r\n"))
                if len(chunk) == CHUNK_LINES:
                    yield from self._chunk(chunk)
                    chunk = []
            if chunk:
                yield from self._chunk(chunk)

    def _chunk(self, lines: list[bytes]):
        events, rejections = [], []
        for line in lines:
            result = parse_event(line, self.now_ms)
            (rejections if isinstance(result, Rejection) else events).append(result)
        self.read.inc(len(lines))
        self.accepted.inc(len(events))
        if rejections:
            for reason in set(r.reason for r in rejections):
                Metrics.counter(NAMESPACE, f"rejected.{reason}").inc(sum(r.reason == reason for r in rejections))
            cols = list(zip(*rejections))
            yield beam.pvalue.TaggedOutput(REJECTED, pa.table(
                [pa.array(c, f.type) for c, f in zip(cols, REJECTION_SCHEMA)], schema=REJECTION_SCHEMA))
        if events:
            yield from split_by_shard(events_to_table(events), "user_id", self.shards)


@dataclass(frozen=True)
class ShardSettings:
    sequence: SequencePolicy
    recent_len: int
    category_len: int
    labels: LabelPolicy
    stats_as_of_ms: int | None
    labels_until_ms: int | None
    shards: int


class UserShardFn(beam.DoFn):
    """Every event of a shard of users -> log, sequences, category sequences, examples, user stats;
    and the deduplicated events re-keyed by item shard for the item statistics."""

    def __init__(self, settings: ShardSettings):
        self.s = settings
        self.duplicates = Metrics.counter(NAMESPACE, "duplicates")
        self.examples = Metrics.counter(NAMESPACE, "examples")

    def process(self, keyed, catalog=None):
        s = self.s
        events, dropped = offline.dedup(pa.concat_tables(keyed[1]))
        self.duplicates.inc(dropped)
        log = offline.behavior_log(pa.concat_tables(keyed[1]), s.sequence)
        yield beam.pvalue.TaggedOutput("behavior_log", log)
        yield beam.pvalue.TaggedOutput("event_log", offline.event_log(events))
        lifelong = offline.latest_sequences(log, s.sequence.max_len)
        yield beam.pvalue.TaggedOutput("user_sequence", lifelong)
        yield beam.pvalue.TaggedOutput("user_recent", offline.latest_sequences(log, s.recent_len))
        yield beam.pvalue.TaggedOutput("user_category_sequence", offline.latest_category_sequences(log, s.category_len))
        items, cats = catalog if catalog is not None else (None, None)
        examples = offline.examples(events, s.labels, items, cats, s.labels_until_ms)
        self.examples.inc(examples.num_rows)
        yield beam.pvalue.TaggedOutput("examples", examples)
        as_of = s.stats_as_of_ms
        if as_of is not None:
            yield beam.pvalue.TaggedOutput("user_stats", offline.latest_stats(events, "user_id", as_of))
            yield from split_by_shard(events.select(["item_id", "event_type", "timestamp"]), "item_id", s.shards)


class ItemShardFn(beam.DoFn):
    def __init__(self, as_of_ms: int):
        self.as_of_ms = as_of_ms

    def process(self, keyed):
        yield offline.latest_stats(pa.concat_tables(keyed[1]), "item_id", self.as_of_ms)
