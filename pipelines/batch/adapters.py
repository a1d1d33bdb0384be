"""Thin Beam adapters over features/: read + validate in chunks, per-shard offline tables.

Raw event files are JSON lines (read in blocks of whole lines, validated by
features.validate_arrow.parse_lines) or Parquet (``*.parquet``: read in batches of rows,
validated by features.validate_arrow.parse_table, the same rules).

Elements are Arrow tables (thousands of events), not single events, so Beam's
per-element cost is paid per chunk; the per-shard work is features.offline. Each
shard's tables are written where they are built, to a file named by table and shard
(written under a temporary name, then renamed): a retried bundle rewrites the same
file, and no table crosses a process boundary just to be written.
"""
from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from features import offline
from features.errors import InputError
from features.labels import LabelPolicy
from features.packed import pack_column
from features.sequence import SequencePolicy
from features.tables import PACKED_KIND, TABLES
from features.json_lines import line_blocks
from features.validate_arrow import TABLE_CHUNK_ROWS, ParsedLines, event_columns, parse_lines, parse_table

NAMESPACE = "recstream"
CHUNK_BYTES = 8 << 20  # about 50k JSON lines per validated chunk


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """IDs are already uniform 63-bit hashes, so a modulo spreads them evenly."""
    return np.asarray(ids, dtype=np.int64) % shards


def split_by_shard(table: pa.Table, key: str, shards: int):
    """(shard, rows of that shard), each its own copy (a slice would pickle the whole table's buffers)."""
    shard = shard_of(table.column(key).to_numpy(), shards)
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(shards + 1))
    for s in range(shards):
        if bounds[s + 1] > bounds[s]:
            yield s, table.take(pa.array(order[bounds[s]:bounds[s + 1]]))


def unused_columns_dropped(events: pa.Table) -> pa.Table:
    """value, request_id and position feed no offline table: nulled before the shuffle (a null
    column has no buffers to pickle), so the events keep their schema."""
    n = events.num_rows
    return events.set_column(events.schema.get_field_index("value"), "value", pa.nulls(n, pa.float64())) \
        .set_column(events.schema.get_field_index("request_id"), "request_id", pa.nulls(n, pa.string())) \
        .set_column(events.schema.get_field_index("position"), "position", pa.nulls(n, pa.int32()))


def conform(table: pa.Table, name: str, as_of_ms: int | None = None) -> pa.Table:
    """Put a table in its declared schema, adding feature_ts where the schema has one: the
    statistics' as-of time, or else the row's last_event_ms."""
    schema = TABLES[name]
    if "feature_ts" in schema.names and "feature_ts" not in table.column_names:
        if as_of_ms is not None:
            ms = pa.array(np.full(table.num_rows, as_of_ms, np.int64))
        elif "last_event_ms" in table.column_names:
            ms = table.column("last_event_ms")
        else:
            raise ValueError(f"table {name} has no time to stamp")
        table = table.append_column("feature_ts", pc.cast(pc.multiply(ms, 1000), pa.timestamp("us", tz="UTC")))
    if "packed" in schema.names and "packed" not in table.column_names:
        table = table.append_column("packed", pack_column(PACKED_KIND[name], table))
    return table.select(schema.names).cast(schema)


def write_part(table: pa.Table, output: str, name: str, part: str) -> None:
    """Write one table's part as output/name/part-<part>.parquet (any Beam filesystem); empty parts are skipped."""
    if table.num_rows == 0:
        return
    final = FileSystems.join(output, name, f"part-{part}.parquet")
    temp = FileSystems.join(output, name, f"_tmp-{part}-{uuid.uuid4().hex}.parquet")  # "_": readers skip it
    with FileSystems.create(temp) as f:
        pq.write_table(table, f)
    FileSystems.rename([temp], [final])


def is_parquet(path: str) -> bool:
    """Raw event files named *.parquet are Parquet; any other file is JSON lines."""
    return path.lower().endswith(".parquet")


def one_line(err: BaseException) -> str:
    """An error's text as one line: Arrow's messages may end in a newline or hold control
    characters (a corrupt footer: "Couldn't deserialize thrift: don't know what type: \\x0f\\n").
    Runs of whitespace become one space; other non-printable characters are dropped."""
    text = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in str(err))
    return " ".join(text.split())


def parquet_columns(source, path: str) -> tuple[pq.ParquetFile, list[str]]:
    """An open Parquet event file (``source``: its local path, or an open binary file) and the event
    columns to read from it. An unreadable file, a missing required column or a column of a type
    no event can have is an InputError naming the file."""
    try:
        reader = pq.ParquetFile(source)
    except (OSError, pa.ArrowException) as err:
        raise InputError(path, f"is not a readable Parquet file ({one_line(err)})",
                         "rewrite it, or name only JSON-lines and Parquet event files in --input") from None
    try:
        return reader, event_columns(reader.schema_arrow, path)
    except InputError:
        reader.close()
        raise


def parquet_batches(source, path: str):
    """A Parquet event file's event columns (``source``: its local path, or an open binary file),
    TABLE_CHUNK_ROWS rows at a time; a file that cannot be read is an InputError naming it."""
    reader, columns = parquet_columns(source, path)
    with reader:
        batches = reader.iter_batches(TABLE_CHUNK_ROWS, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as err:  # a corrupt page surfaces only while reading
                raise InputError(path, f"cannot be read ({one_line(err)})", "rewrite the file") from None
            yield batch


class ReadValidateFn(beam.DoFn):
    """A raw event file (JSON lines, or Parquet) -> (user shard, events table) chunks; rejections
    written as they are found. Validation is features.validate_arrow's: parse_event's results, vectorized."""

    def __init__(self, output: str, shards: int, now_ms: int | None = None):
        self.output, self.shards, self.now_ms = output, shards, now_ms
        self.read = Metrics.counter(NAMESPACE, "read")
        self.accepted = Metrics.counter(NAMESPACE, "accepted")

    def process(self, numbered_path: tuple[int, str]):
        number, path = numbered_path
        if is_parquet(path):
            if FileSystems.get_scheme(path) is None:  # a local file: Arrow opens and reads it itself
                yield from self._parquet(path, path, number)
            else:
                with FileSystems.open(path) as f:
                    yield from self._parquet(f, path, number)
            return
        with FileSystems.open(path) as f:
            for chunk, lines in enumerate(line_blocks(f, CHUNK_BYTES)):
                yield from self._chunk(parse_lines(lines, self.now_ms), len(lines), f"{number:05d}-{chunk:05d}")

    def _parquet(self, source, path: str, number: int):
        for chunk, batch in enumerate(parquet_batches(source, path)):
            yield from self._chunk(parse_table(pa.Table.from_batches([batch]), self.now_ms), batch.num_rows,
                                   f"{number:05d}-{chunk:05d}")

    def _chunk(self, parsed: ParsedLines, read: int, part: str):
        self.read.inc(read)
        self.accepted.inc(parsed.events.num_rows)
        rejections = parsed.rejections
        if rejections:
            for reason, count in Counter(r.reason for r in rejections).items():
                Metrics.counter(NAMESPACE, f"rejected.{reason}").inc(count)
            schema = TABLES["rejected"]
            cols = list(zip(*rejections))
            write_part(pa.table([pa.array(c, f.type) for c, f in zip(cols, schema)], schema=schema), self.output,
                       "rejected", part)
        if parsed.events.num_rows:
            yield from split_by_shard(unused_columns_dropped(parsed.events), "user_id", self.shards)


@dataclass(frozen=True)
class ShardSettings:
    output: str
    sequence: SequencePolicy
    recent_len: int
    category_len: int
    labels: LabelPolicy
    stats_as_of_ms: int | None
    labels_until_ms: int | None
    shards: int


class UserShardFn(beam.DoFn):
    """Every event of a shard of users -> log, sequences, category sequences, examples, user stats
    (written as this shard's parts); the deduplicated events re-keyed by item shard for the item statistics."""

    def __init__(self, settings: ShardSettings):
        self.s = settings
        self.duplicates = Metrics.counter(NAMESPACE, "duplicates")
        self.examples = Metrics.counter(NAMESPACE, "examples")
        self.negatives = Metrics.counter(NAMESPACE, "negatives")

    def process(self, keyed, pool=None):
        s, part = self.s, f"{keyed[0]:05d}"
        raw = pa.concat_tables(keyed[1])
        events, dropped = offline.dedup(raw)
        self.duplicates.inc(dropped)
        log = offline.behavior_log(raw, s.sequence)
        lifelong = offline.lifelong_sequences(raw, log, s.sequence)
        del raw
        examples = offline.examples(events, s.labels, pool, s.labels_until_ms)
        self.examples.inc(examples.num_rows)
        self.negatives.inc(examples.num_rows - int(pc.sum(examples.column("label")).as_py() or 0))
        tables = {"behavior_log": log, "event_log": offline.event_log(events), "examples": examples,
                  "user_sequence": lifelong,
                  "user_recent": offline.latest_sequences(log, s.recent_len),
                  "user_category_sequence": offline.latest_category_sequences(log, s.category_len)}
        if s.stats_as_of_ms is not None:
            tables["user_stats"] = offline.latest_stats(events, "user_id", s.stats_as_of_ms)
        for name, table in tables.items():
            write_part(conform(table, name, s.stats_as_of_ms if name == "user_stats" else None), s.output, name, part)
        if s.stats_as_of_ms is not None:
            yield from split_by_shard(events.select(["item_id", "event_type", "timestamp"]), "item_id", s.shards)


class ItemShardFn(beam.DoFn):
    """A shard of items' events -> item statistics as of as_of_ms, written as this shard's part."""

    def __init__(self, output: str, as_of_ms: int):
        self.output, self.as_of_ms = output, as_of_ms

    def process(self, keyed):
        stats = offline.latest_stats(pa.concat_tables(keyed[1]), "item_id", self.as_of_ms)
        write_part(conform(stats, "item_stats", self.as_of_ms), self.output, "item_stats", f"{keyed[0]:05d}")
        return []
