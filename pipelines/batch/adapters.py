"""Thin Beam adapters over pipelines/batch/shards.py: each DoFn runs one stage and counts
through Beam's metrics.

Elements are Arrow tables (thousands of events), not single events, so Beam's per-element cost
is paid per chunk; the work is features/ (validate_arrow, offline).
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines.batch import shards
from pipelines.batch.shards import ShardSettings

NAMESPACE = "recstream"


def count(name: str, n: int) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)


class ReadValidateFn(beam.DoFn):
    """(number, raw event file) -> (user shard, events table) chunks (shards.read_file)."""

    def __init__(self, output: str, shards: int, now_ms: int | None = None):
        self.output, self.shards, self.now_ms = output, shards, now_ms

    def process(self, numbered_path: tuple[int, str]):
        number, path = numbered_path
        yield from shards.read_file(number, path, self.output, self.shards, self.now_ms, count)


class UserShardFn(beam.DoFn):
    """(user shard, its event chunks) -> this shard's tables; (item shard, events) out (shards.user_shard)."""

    def __init__(self, settings: ShardSettings):
        self.s = settings

    def process(self, keyed, pool=None):
        yield from shards.user_shard(keyed[0], pa.concat_tables(keyed[1]), self.s, pool, count)


class ItemShardFn(beam.DoFn):
    """(item shard, its event chunks) -> this shard's item statistics (shards.item_shard)."""

    def __init__(self, output: str, as_of_ms: int):
        self.output, self.as_of_ms = output, as_of_ms

    def process(self, keyed):
        shards.item_shard(keyed[0], pa.concat_tables(keyed[1]), self.output, self.as_of_ms)
        return []
