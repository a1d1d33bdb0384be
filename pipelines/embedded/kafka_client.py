"""A small Kafka client over the standard wire protocol: create topics, produce, read back.

For the tests, the demo and the benchmark (the stream job itself reads and writes through
Flink's Kafka connector). No Kafka client package is in the lock, so this speaks the
protocol directly (https://kafka.apache.org/protocol): Metadata v1, CreateTopics v2,
Produce v3 with record batches of format v2 (CRC-32C), Fetch v4, ListOffsets v1,
FindCoordinator v0 and OffsetFetch v1 (a group's committed offsets). It works
against any broker that speaks these versions (Kafka 0.11 and later, Tansu). It has no
security support: with a secured cluster use a full client (see docs/streaming.md).

    client = KafkaClient("127.0.0.1:9092")
    client.create_topic("events", partitions=2)
    client.produce("events", [Record(value=b"...", key=b"user-1", timestamp=1700000000000)])
    values = client.read("events", count=1)      # every partition, from the start
"""
from __future__ import annotations

import socket
import struct
import time
import zlib
from dataclasses import replace

# Record, KafkaError and the batch codec are part of this module's interface.
from pipelines.embedded.kafka_codec import KafkaError, Reader, Record, Writer, decode_batches, encode_batch  # noqa: F401

PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_FETCH, FIND_COORDINATOR, CREATE_TOPICS = 0, 1, 2, 3, 9, 10, 19
TOPIC_ALREADY_EXISTS = 36



class KafkaClient:
    """One connection per broker node; requests are synchronous."""

    def __init__(self, bootstrap_servers: str, client_id: str = "recstream", timeout_s: float = 10.0):
        self.bootstrap = [_host_port(a) for a in bootstrap_servers.split(",") if a.strip()]
        if not self.bootstrap:
            raise ValueError(f"bootstrap_servers must be host:port[,host:port], got {bootstrap_servers!r}")
        self.client_id, self.timeout_s = client_id, timeout_s
        self._conns: dict[tuple[str, int], socket.socket] = {}
        self._nodes: dict[int, tuple[str, int]] = {}
        self._leaders: dict[str, dict[int, int]] = {}
        self._correlation = 0
        self._round_robin = 0

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, address: tuple[str, int], api: int, version: int, body: bytes) -> Reader:
        conn = self._conns.get(address)
        if conn is None:
            conn = self._conns[address] = socket.create_connection(address, timeout=self.timeout_s)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._correlation += 1
        msg = Writer().int16(api).int16(version).int32(self._correlation).string(self.client_id).value() + body
        try:
            conn.sendall(struct.pack(">i", len(msg)) + msg)
            size = struct.unpack(">i", _recv(conn, 4))[0]
            reply = Reader(_recv(conn, size))
        except OSError:
            self._conns.pop(address, None)
            conn.close()
            raise
        if reply.int32() != self._correlation:
            raise KafkaError("out-of-order reply from the broker")
        return reply

    def _any(self, api: int, version: int, body: bytes) -> Reader:
        errors = []
        for address in self.bootstrap:
            try:
                return self._call(address, api, version, body)
            except OSError as err:
                errors.append(f"{address[0]}:{address[1]}: {err}")
        raise ConnectionError(f"no Kafka broker answered: {'; '.join(errors)}")

    def metadata(self, topics: list[str]) -> dict[str, dict[int, int]]:
        """Partition -> leader node of each topic (refreshes the node addresses)."""
        w = Writer().int32(len(topics))
        for t in topics:
            w.string(t)
        r = self._any(METADATA, 1, w.value())
        for node, host, port, _rack in r.array(lambda: (r.int32(), r.string(), r.int32(), r.string())):
            self._nodes[node] = (host, port)
        r.int32()  # controller
        out = {}
        for err, name, _internal, parts in r.array(lambda: (r.int16(), r.string(), r.int8(), r.array(
                lambda: (r.int16(), r.int32(), r.int32(), r.array(r.int32), r.array(r.int32))))):
            if err:
                raise KafkaError(f"metadata of topic {name!r}: error code {err}")
            out[name] = {p: leader for _e, p, leader, _rep, _isr in parts}
        self._leaders.update(out)
        return out

    def partitions(self, topic: str) -> list[int]:
        return sorted(self._leaders.get(topic) or self.metadata([topic])[topic])

    def create_topic(self, topic: str, partitions: int = 1) -> bool:
        """Create a topic (replication factor 1); False if it already existed."""
        w = Writer().int32(1).string(topic).int32(partitions).int16(1).int32(0).int32(0)
        r = self._any(CREATE_TOPICS, 2, w.int32(int(self.timeout_s * 1000)).int8(0).value())
        r.int32()
        (name, err, message), = r.array(lambda: (r.string(), r.int16(), r.string()))
        if err and err != TOPIC_ALREADY_EXISTS:
            raise KafkaError(f"create topic {name!r}: error code {err} {message or ''}")
        self._leaders.pop(topic, None)
        return err == 0

    def _leader(self, topic: str, partition: int) -> tuple[str, int]:
        leaders = self._leaders.get(topic) or self.metadata([topic])[topic]
        return self._nodes[leaders[partition]]

    def produce(self, topic: str, records: list[Record], acks: int = -1, last_alone: bool = True,
                max_batch_bytes: int = 512 * 1024) -> int:
        """Send records, in batches of at most about max_batch_bytes per partition (brokers refuse
        requests over message.max.bytes, 1 MB by default); returns how many were sent.

        last_alone: send each partition's last record in a batch of its own. Tansu 0.6 answers
        ListOffsets(latest) with the last batch's first offset + 1, so a bounded reader that
        stops at the end offsets would miss the rest of a longer last batch."""
        parts = self.partitions(topic)
        by_partition: dict[int, list[Record]] = {}
        for rec in records:
            by_partition.setdefault(self._partition_of(rec, parts), []).append(rec)
        for p, recs in by_partition.items():
            chunk, size = [], 0
            for i, rec in enumerate(recs):
                chunk.append(rec)
                size += len(rec.value or b"") + len(rec.key or b"") + 32
                is_last = i == len(recs) - 1
                if size >= max_batch_bytes or is_last or (last_alone and i == len(recs) - 2):
                    self._send(topic, {p: chunk}, acks)
                    chunk, size = [], 0
        return len(records)

    def _send(self, topic: str, by_partition: dict[int, list[Record]], acks: int) -> None:
        now = int(time.time() * 1000)
        by_leader: dict[tuple[str, int], list[int]] = {}
        for p in by_partition:
            by_leader.setdefault(self._leader(topic, p), []).append(p)
        for address, plist in by_leader.items():
            w = Writer().string(None).int16(acks).int32(int(self.timeout_s * 1000)).int32(1).string(topic)
            w.int32(len(plist))
            for p in plist:
                w.int32(p).bytes_(encode_batch(by_partition[p], now))
            r = self._call(address, PRODUCE, 3, w.value())
            for _name, answers in r.array(lambda: (r.string(), r.array(
                    lambda: (r.int32(), r.int16(), r.int64(), r.int64())))):
                for p, err, _base, _append in answers:
                    if err:
                        self._leaders.pop(topic, None)
                        raise KafkaError(f"produce to {topic}[{p}]: error code {err}")

    def _partition_of(self, rec: Record, parts: list[int]) -> int:
        if rec.partition is not None:
            if rec.partition not in parts:
                raise ValueError(f"partition {rec.partition} is not one of the topic's partitions {parts}")
            return rec.partition
        if rec.key is not None:
            return parts[zlib.crc32(rec.key) % len(parts)]
        self._round_robin += 1
        return parts[self._round_robin % len(parts)]

    def end_offsets(self, topic: str, earliest: bool = False) -> dict[int, int]:
        """The next offset to be written (or the first still held) of every partition."""
        parts = self.partitions(topic)
        w = Writer().int32(-1).int32(1).string(topic).int32(len(parts))
        for p in parts:
            w.int32(p).int64(-2 if earliest else -1)
        r = self._call(self._leader(topic, parts[0]), LIST_OFFSETS, 1, w.value())
        out = {}
        for _name, answers in r.array(lambda: (r.string(), r.array(
                lambda: (r.int32(), r.int16(), r.int64(), r.int64())))):
            for p, err, _ts, offset in answers:
                if err:
                    raise KafkaError(f"list offsets of {topic}[{p}]: error code {err}")
                out[p] = offset
        return out

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        """The offsets a consumer group has committed on a topic (-1 where none)."""
        r = self._any(FIND_COORDINATOR, 0, Writer().string(group).value())
        err, node, host, port = r.int16(), r.int32(), r.string(), r.int32()
        if err:
            raise KafkaError(f"find the coordinator of group {group!r}: error code {err}")
        self._nodes[node] = (host, port)
        parts = self.partitions(topic)
        w = Writer().string(group).int32(1).string(topic).int32(len(parts))
        for p in parts:
            w.int32(p)
        r = self._call((host, port), OFFSET_FETCH, 1, w.value())
        out = {}
        for _name, answers in r.array(lambda: (r.string(), r.array(
                lambda: (r.int32(), r.int64(), r.string(), r.int16())))):
            for p, offset, _meta, err in answers:
                if err:
                    raise KafkaError(f"committed offset of {group!r} on {topic}[{p}]: error code {err}")
                out[p] = offset
        return out

    def fetch(self, topic: str, partition: int, offset: int, max_wait_ms: int = 100,
              max_bytes: int = 4 << 20) -> list[Record]:
        """Records of one partition from offset on (at most max_bytes of batches)."""
        w = Writer().int32(-1).int32(max_wait_ms).int32(1).int32(max_bytes).int8(0)
        w.int32(1).string(topic).int32(1).int32(partition).int64(offset).int32(max_bytes)
        r = self._call(self._leader(topic, partition), FETCH, 4, w.value())
        r.int32()
        records = []
        for _name, answers in r.array(lambda: (r.string(), r.array(lambda: (
                r.int32(), r.int16(), r.int64(), r.int64(), r.array(lambda: (r.int64(), r.int64())), r.bytes_())))):
            for p, err, _hw, _lso, _aborted, data in answers:
                if err:
                    raise KafkaError(f"fetch {topic}[{p}] at {offset}: error code {err}")
                records += [rec for rec in decode_batches(data or b"") if rec.offset >= offset]
        return records

    def read(self, topic: str, count: int, timeout_s: float = 30.0) -> list[Record]:
        """The first ``count`` records of a topic (all partitions, each in offset order); waits
        for them up to timeout_s and raises TimeoutError with what it got if they do not come."""
        offsets = {p: 0 for p in self.partitions(topic)}
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count:
            for p in offsets:
                got = self.fetch(topic, p, offsets[p])
                if got:
                    offsets[p] = got[-1].offset + 1
                    out += [replace(r, partition=p) for r in got]
            if len(out) < count and time.monotonic() > deadline:
                raise TimeoutError(f"read {len(out)} of {count} records from {topic!r} in {timeout_s} s")
        return out


def _recv(conn: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a Kafka address must be host:port, got {address!r}")
    return host, int(port)
