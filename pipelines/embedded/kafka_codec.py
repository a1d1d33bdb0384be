"""The Kafka wire format pieces pipelines/embedded/kafka_client.py needs: big-endian primitives,
zigzag varints, and record batches of format v2 (magic 2, CRC-32C, no compression)."""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import crcmod.predefined
from features.errors import RecstreamError

_crc32c = crcmod.predefined.mkCrcFun("crc-32c")


class KafkaError(RecstreamError, RuntimeError):
    """The broker answered with an error code (named in the message)."""


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  # ms; the event time a consumer's watermarks read (None: now)
    partition: int | None = None  # None: by the key's hash, or round robin without a key
    offset: int = -1  # set on records read back


class Writer:
    def __init__(self):
        self.buf = io.BytesIO()

    def int8(self, v): self.buf.write(struct.pack(">b", v)); return self
    def int16(self, v): self.buf.write(struct.pack(">h", v)); return self
    def int32(self, v): self.buf.write(struct.pack(">i", v)); return self
    def int64(self, v): self.buf.write(struct.pack(">q", v)); return self

    def string(self, v: str | None):
        if v is None:
            return self.int16(-1)
        data = v.encode("utf-8")
        self.int16(len(data)).buf.write(data)
        return self

    def bytes_(self, v: bytes | None):
        if v is None:
            return self.int32(-1)
        self.int32(len(v)).buf.write(v)
        return self

    def varint(self, v: int):
        v = (v << 1) ^ (v >> 63)  # zigzag
        while v >= 0x80:
            self.buf.write(bytes([(v & 0x7F) | 0x80]))
            v >>= 7
        self.buf.write(bytes([v]))
        return self

    def value(self) -> bytes:
        return self.buf.getvalue()


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _take(self, fmt: str):
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def int8(self): return self._take(">b")
    def int16(self): return self._take(">h")
    def int32(self): return self._take(">i")
    def int64(self): return self._take(">q")

    def string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self.raw(n).decode("utf-8")

    def bytes_(self) -> bytes | None:
        n = self.int32()
        return None if n < 0 else self.raw(n)

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        shift = v = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return (v >> 1) ^ -(v & 1)
            shift += 7

    def array(self, item):
        n = self.int32()
        return [] if n < 0 else [item() for _ in range(n)]


def encode_batch(records: list[Record], now_ms: int) -> bytes:
    """One record batch (magic 2, no compression) holding records, offsets 0..n-1."""
    stamps = [now_ms if r.timestamp is None else r.timestamp for r in records]
    first, body = stamps[0], Writer()
    for i, (r, ts) in enumerate(zip(records, stamps)):
        rec = Writer().int8(0).varint(ts - first).varint(i)
        rec.varint(-1 if r.key is None else len(r.key)).buf.write(r.key or b"")
        rec.varint(-1 if r.value is None else len(r.value)).buf.write(r.value or b"")
        rec.varint(0)  # no headers
        body.varint(len(rec.value())).buf.write(rec.value())
    after_crc = (Writer().int16(0).int32(len(records) - 1).int64(first).int64(max(stamps))
                 .int64(-1).int16(-1).int32(-1).int32(len(records)).value() + body.value())
    tail = Writer().int32(-1).int8(2).buf.getvalue() + struct.pack(">I", _crc32c(after_crc)) + after_crc
    return Writer().int64(0).int32(len(tail)).value() + tail


def decode_batches(data: bytes) -> list[Record]:
    """Records of the (possibly truncated at the end) record batches in a fetch answer."""
    out, r = [], Reader(data)
    while len(data) - r.pos >= 12:
        base, length = r.int64(), r.int32()
        if len(data) - r.pos < length:
            break  # a partial batch at the end of the answer
        batch = Reader(r.raw(length))
        batch.int32()  # partition leader epoch
        if batch.int8() != 2:
            raise KafkaError("only record batches of format v2 are supported (Kafka >= 0.11)")
        batch.pos += 4  # crc
        attributes = batch.int16()
        if attributes & 0x07:
            raise KafkaError(f"compressed batch (codec {attributes & 0x07}); produce without compression")
        batch.int32()
        first_ts = batch.int64()
        batch.pos += 8 + 8 + 2 + 4  # max timestamp, producer id, epoch, base sequence
        control = bool(attributes & 0x20)
        for _ in range(batch.int32()):
            batch.varint()  # record length
            batch.int8()
            ts, delta = first_ts + batch.varint(), batch.varint()
            n = batch.varint()
            key = None if n < 0 else batch.raw(n)
            n = batch.varint()
            value = None if n < 0 else batch.raw(n)
            for _ in range(batch.varint()):  # headers
                batch.raw(batch.varint())
                n = batch.varint()
                batch.raw(max(n, 0))
            if not control:
                out.append(Record(value=value, key=key, timestamp=ts, offset=base + delta))
    return out
