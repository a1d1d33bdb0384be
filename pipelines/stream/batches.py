"""Events handed to Python in batches: the JVM operators of pipelines/stream/jvm, built by
scripts/build_stream_ops.sh into the stream-deps folder (make setup does).

PyFlink calls a Python function once per record, and that call, not the feature logic, was
most of the job's cost (docs/streaming.md). So the JVM groups the event lines per user bucket
(BatchByUser: the user_id's text form hashed into ``buckets``) and the user function is called
once per batch, keyed by bucket. A batch goes out before the next watermark and before each
checkpoint barrier, so the function sees the watermarks it would have seen line by line and a
checkpoint never falls inside a batch. Before each barrier every bucket also gets an empty batch
(``is_mark``): the cue for its function to save what it holds in memory into Flink's state, so
that the function need not write its state once per batch (mark_buckets does the same for any
(bucket, payload) stream).

Lines going back to the JVM travel packed (``pack_lines``): one byte array per batch instead of a
string per line.
"""
from __future__ import annotations

from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import DataStream
from pyflink.java_gateway import get_gateway

from features.errors import MissingInput
from pipelines.stream.connector import stream_deps

OPS_JAR = "recstream-stream-ops.jar"
# (bucket, the batch's lines in arrival order)
BATCH_TYPE = Types.TUPLE([Types.INT(), Types.BASIC_ARRAY(Types.STRING())])
# lines packed as UTF-8, each ended by a NUL byte (pack_lines)
LINES_TYPE = Types.PRIMITIVE_ARRAY(Types.BYTE())
# (times, packed lines): a batch of lines, each with its time, the times as little-endian int64s (in_time_order)
TIMED_LINES_TYPE = Types.TUPLE([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE())])


def ops_jar() -> Path:
    path = stream_deps() / OPS_JAR
    if not path.is_file():
        raise MissingInput(str(path), "the stream job's JVM operators are not built; run scripts/build_stream_ops.sh "
                                      "(make setup does)")
    return path


def batch_by_user(lines: DataStream, buckets: int, hold_ms: int, max_lines: int) -> DataStream:
    """Lines (ISO-8859-1 text) as BATCH_TYPE records: one per bucket with lines, at least every hold_ms."""
    op = get_gateway().jvm.recstream.flink.BatchByUser(buckets, hold_ms, max_lines)
    return DataStream(lines._j_data_stream.transform("batch by user", BATCH_TYPE.get_java_type_info(), op))


def pack_lines(lines: list[str]) -> bytes:
    """Lines as one LINES_TYPE value. JSON text has no NUL byte; so only JSON lines are packed."""
    return "\0".join(lines).encode("utf-8") + b"\0" if lines else b""


def is_mark(payload) -> bool:
    """Whether a batch (or a mark_buckets record's payload) is a bucket's cue to save its state."""
    return len(payload) == 0


def mark_buckets(records: DataStream, buckets: int, output_type) -> DataStream:
    """(bucket, bytes payload) records passed on, and before each checkpoint barrier a record with
    an empty payload for every bucket (is_mark)."""
    op = get_gateway().jvm.recstream.flink.MarkBuckets(buckets, bytearray())
    return DataStream(records._j_data_stream.transform("mark buckets", output_type.get_java_type_info(), op))


def unbatch(batches: DataStream) -> DataStream:
    """LINES_TYPE records back as one line each (Types.STRING)."""
    fn = get_gateway().jvm.recstream.flink.Unbatch()
    return DataStream(batches._j_data_stream.flatMap(fn, Types.STRING().get_java_type_info()))


def in_time_order(batches: DataStream) -> DataStream:
    """TIMED_LINES_TYPE records back as one line each, sorted by time between watermarks."""
    op = get_gateway().jvm.recstream.flink.InTimeOrder()
    return DataStream(batches._j_data_stream.transform("in time order", Types.STRING().get_java_type_info(), op))


def bucket_of(batch: tuple) -> int:
    return batch[0]
