"""The backfill's three stages as plain functions over Arrow tables, for any engine (no Beam here).

  read_file     a raw event file (JSON lines, or Parquet) -> validated events by user shard;
                rejections written as this file's parts
  user_shard    every event of a shard of users -> logs, sequences, examples, user statistics
                (written as this shard's parts) -> the deduplicated events by item shard
  item_shard    every event of a shard of items -> item statistics (written as this shard's part)

Each stage counts through ``count(name, n)`` (read, accepted, rejected.<reason>, duplicates,
examples, negatives): Beam's adapters pass metric counters (pipelines/batch/adapters.py), the
local engine sums them per task (pipelines/batch/local.py). Each shard's tables are written where
they are built, under a temporary name then renamed: a retried task rewrites the same file.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import offline
from features.errors import InputError
from features.json_lines import line_blocks
from features.labels import LabelPolicy
from features.negatives import ItemPool
from features.packed import pack_column
from features.sequence import SequencePolicy
from features.tables import PACKED_KIND, TABLES
from features.validate_arrow import TABLE_CHUNK_ROWS, ParsedLines, event_columns, parse_lines, parse_table

CHUNK_BYTES = 8 << 20  # about 50k JSON lines per validated chunk
Count = Callable[[str, int], None]


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


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """IDs are already uniform 63-bit hashes, so a modulo spreads them evenly."""
    return np.asarray(ids, dtype=np.int64) % shards


def split_by_shard(table: pa.Table, key: str, shards: int) -> Iterator[tuple[int, pa.Table]]:
    """(shard, rows of that shard), each its own copy (a slice would pickle the whole table's buffers)."""
    shard = shard_of(table.column(key).to_numpy(), shards)
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(shards + 1))
    for s in range(shards):
        if bounds[s + 1] > bounds[s]:
            yield s, table.take(pa.array(order[bounds[s]:bounds[s + 1]]))


def unused_columns_dropped(events: pa.Table) -> pa.Table:
    """value, request_id and position feed no offline table: nulled before the shuffle (a null
    column has no buffers to move), so the events keep their schema."""
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


def is_remote(path: str) -> bool:
    return "://" in path


def write_part(table: pa.Table, output: str, name: str, part: str) -> None:
    """Write one table's part as output/name/part-<part>.parquet (a local folder, or any filesystem
    Beam knows); empty parts are skipped. Written as _tmp-* (readers skip it), then renamed."""
    if table.num_rows == 0:
        return
    if is_remote(output):
        from apache_beam.io.filesystems import FileSystems  # only a remote output needs Beam's filesystems

        final = FileSystems.join(output, name, f"part-{part}.parquet")
        temp = FileSystems.join(output, name, f"_tmp-{part}-{uuid.uuid4().hex}.parquet")
        with FileSystems.create(temp) as f:
            _write(table, f)
        FileSystems.rename([temp], [final])
        return
    folder = os.path.join(output, name)
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f"_tmp-{part}-{uuid.uuid4().hex}.parquet")
    _write(table, temp)
    os.replace(temp, os.path.join(folder, f"part-{part}.parquet"))


# Columns whose values are mostly distinct (packed rows, hashed item IDs, times, tile starts): a
# Parquet dictionary there hashes every value and then falls back to plain pages anyway.
NO_DICTIONARY = frozenset({"packed", "seq_item_ids", "seq_timestamps", "tile_starts"})


def _write(table: pa.Table, where) -> None:
    """Parquet, with a dictionary for every column but NO_DICTIONARY."""
    pq.write_table(table, where, use_dictionary=[leaf for f in table.schema if f.name not in NO_DICTIONARY
                                                 for leaf in _leaves(f.name, f.type)])


def _leaves(path: str, kind: pa.DataType) -> list[str]:
    """A column's Parquet leaf paths, the names ``use_dictionary`` takes (a list's is NAME.list.element)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _leaves(f"{path}.list.element", kind.value_type)
    if pa.types.is_struct(kind):
        return [leaf for child in kind for leaf in _leaves(f"{path}.{child.name}", child.type)]
    return [path]


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


def _remote_open(path: str):
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path)  # decompresses by the name's extension, as _local_open does


_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".lzma": lzma.open}


def _local_open(path: str):
    """A local JSON-lines file, decompressed by its extension (.gz, .bz2, .xz, .lzma; the other
    kinds Beam reads, .zst and .deflate, through Beam's FileSystems), as Beam's reader would."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _COMPRESSED:
        return _COMPRESSED[suffix](path, "rb")
    if suffix in (".zst", ".zstd", ".deflate"):
        return _remote_open(path)
    return open(path, "rb")


def read_file(number: int, path: str, output: str, shards: int, now_ms: int | None,
              count: Count) -> Iterator[tuple[int, pa.Table]]:
    """A raw event file -> (user shard, events) chunks; rejected records written as this file's
    parts (rejected/part-<file>-<chunk>). Validation is features.validate_arrow's: parse_event's
    results, vectorized. A local Parquet file is opened by Arrow itself, a remote one through Beam."""
    parts = (f"{number:05d}-{chunk:05d}" for chunk in range(1 << 62))
    if is_parquet(path):
        source = _remote_open(path) if is_remote(path) else path
        try:
            for batch in parquet_batches(source, path):
                yield from _chunk(parse_table(pa.Table.from_batches([batch]), now_ms), batch.num_rows, next(parts),
                                  output, shards, count)
        finally:
            if not isinstance(source, str):
                source.close()
        return
    with (_remote_open(path) if is_remote(path) else _local_open(path)) as f:
        for lines in line_blocks(f, CHUNK_BYTES):
            yield from _chunk(parse_lines(lines, now_ms), len(lines), next(parts), output, shards, count)


def _chunk(parsed: ParsedLines, read: int, part: str, output: str, shards: int, count: Count):
    count("read", read)
    count("accepted", parsed.events.num_rows)
    rejections = parsed.rejections
    if rejections:
        for reason, n in Counter(r.reason for r in rejections).items():
            count(f"rejected.{reason}", n)
        schema = TABLES["rejected"]
        cols = list(zip(*rejections))
        write_part(pa.table([pa.array(c, f.type) for c, f in zip(cols, schema)], schema=schema), output,
                   "rejected", part)
    if parsed.events.num_rows:
        yield from split_by_shard(unused_columns_dropped(parsed.events), "user_id", shards)


def user_shard(shard: int, raw: pa.Table, s: ShardSettings, pool: ItemPool | None,
               count: Count) -> Iterator[tuple[int, pa.Table]]:
    """Every event of a shard of users -> log, sequences, category sequences, examples, user stats
    (written as this shard's parts); the deduplicated events (item, type, time) by item shard, for
    the item statistics (none without an as-of time)."""
    part = f"{shard:05d}"
    events, dropped = offline.dedup(raw)
    count("duplicates", dropped)
    log = offline.behavior_log(raw, s.sequence)
    lifelong = offline.lifelong_sequences(raw, log, s.sequence)
    del raw
    examples = offline.examples(events, s.labels, pool, s.labels_until_ms)
    count("examples", examples.num_rows)
    count("negatives", examples.num_rows - int(pc.sum(examples.column("label")).as_py() or 0))
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


def item_shard(shard: int, events: pa.Table, output: str, as_of_ms: int) -> None:
    """Every event of a shard of items -> item statistics as of as_of_ms, written as this shard's part."""
    stats = offline.latest_stats(events, "item_id", as_of_ms)
    write_part(conform(stats, "item_stats", as_of_ms), output, "item_stats", f"{shard:05d}")
