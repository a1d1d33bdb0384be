"""A small Kafka toolkit over confluent-kafka (librdkafka): create topics, produce, read back.

For the demo, the tests and the benchmarks, against the embedded broker or any Kafka: the
stream job itself reads and writes through Flink's Kafka connector, and the retrain loop
consumes with its own confluent-kafka consumer (pipelines/retrain/source.py).

    client = KafkaClient("127.0.0.1:9092")
    client.create_topic("events", partitions=2)
    client.produce("events", [Record(value=b"...", key=b"user-1", timestamp=1700000000000)])
    values = client.read("events", count=1)      # every partition, from the start
    client.close()

``properties`` are librdkafka settings (security.protocol, sasl.*, ssl.*), e.g. from
pipelines.stream.config.KafkaSettings.librdkafka_properties().
"""
from __future__ import annotations

import logging
import time
import uuid
import zlib
from dataclasses import dataclass, replace

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from features.errors import ConfigError, ServiceError

LOG = logging.getLogger("recstream.kafka")  # librdkafka's own log lines go here, not to stderr


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  # ms; the event time a consumer's watermarks read (None: now)
    partition: int | None = None  # None: by the key's CRC-32 (librdkafka's consistent partitioner), else round robin
    offset: int = -1  # set on records read back


class KafkaClient:
    """An admin client, a producer and a consumer (assigned, never in a group) on one cluster."""

    def __init__(self, bootstrap_servers: str, client_id: str = "recstream", timeout_s: float = 10.0,
                 properties: dict | None = None):
        servers = [a.strip() for a in str(bootstrap_servers).split(",") if a.strip()]
        if not servers or not all(a.rpartition(":")[2].isdigit() and a.rpartition(":")[0] for a in servers):
            raise ConfigError("bootstrap_servers", f"must be host:port[,host:port], got {bootstrap_servers!r}")
        self.bootstrap, self.timeout_s = ",".join(servers), timeout_s
        base = {"bootstrap.servers": self.bootstrap, "client.id": client_id, "logger": LOG, **(properties or {})}
        self._base = base
        self.admin = AdminClient(base)
        self.producer = Producer({**base, "linger.ms": 5, "enable.idempotence": False,
                                  "message.max.bytes": 1_000_000})
        self.consumer = Consumer({**base, "group.id": f"recstream-reader-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "fetch.wait.max.ms": 20})
        self._round_robin = 0

    def close(self) -> None:
        self.producer.flush(self.timeout_s)
        self.consumer.close()

    def __enter__(self) -> "KafkaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def partitions(self, topic: str) -> list[int]:
        """The topic's partitions; a ServiceError if it does not exist (asking for every topic's
        metadata, not this one's, which a broker that auto-creates topics would create)."""
        meta = self._call(lambda: self.admin.list_topics(timeout=self.timeout_s), f"describe {topic!r}")
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            raise ServiceError("Kafka", self.bootstrap, f"topic {topic!r} does not exist",
                               f"create it: recstream topics create {topic} --kafka {self.bootstrap}")
        return sorted(found.partitions)

    def topics(self) -> dict[str, int]:
        """Every topic (but the broker's internal ones) and its number of partitions."""
        meta = self._call(lambda: self.admin.list_topics(timeout=self.timeout_s), "list topics")
        return {name: len(t.partitions) for name, t in sorted(meta.topics.items())
                if t.error is None and not name.startswith("__")}

    def create_topic(self, topic: str, partitions: int = 1) -> bool:
        """Create a topic (replication factor 1); False if it already existed."""
        future = self.admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                          operation_timeout=self.timeout_s)[topic]
        try:
            future.result(self.timeout_s)
            return True
        except KafkaException as err:
            if err.args[0].name() == "TOPIC_ALREADY_EXISTS":
                return False
            raise ServiceError("Kafka", self.bootstrap, f"cannot create topic {topic!r}: {err.args[0].str()}") from None

    def produce(self, topic: str, records: list[Record], last_alone: bool = True) -> int:
        """Send records and wait until the broker has them all; returns how many were sent.

        last_alone: each partition's last record goes out after the rest are delivered, in a batch
        of its own. Tansu 0.6 answers ListOffsets(latest) with the last batch's first offset + 1,
        so a bounded reader that stops at the end offsets would miss the rest of a longer batch."""
        parts = self.partitions(topic)
        placed = [(self._partition_of(r, parts), r) for r in records]
        last = {p: i for i, (p, _) in enumerate(placed)} if last_alone else {}
        failures: list[str] = []

        def delivered(err, msg) -> None:
            if err is not None:
                failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

        def send(rows) -> None:
            for p, rec in rows:
                while True:
                    try:
                        self.producer.produce(topic, value=rec.value, key=rec.key, partition=p,
                                              timestamp=rec.timestamp or 0, on_delivery=delivered)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        self.producer.poll(0.05)
            if self.producer.flush(self.timeout_s) > 0:
                raise ServiceError("Kafka", self.bootstrap, f"records to {topic!r} were not delivered in "
                                   f"{self.timeout_s:.0f} s", "check that the broker is up")

        finals = set(last.values())
        send([pr for i, pr in enumerate(placed) if i not in finals])
        send([placed[i] for i in sorted(finals)])
        if failures:
            raise ServiceError("Kafka", self.bootstrap, f"{len(failures)} record(s) not delivered, e.g. {failures[0]}")
        return len(records)

    def _partition_of(self, rec: Record, parts: list[int]) -> int:
        if rec.partition is not None:
            if rec.partition not in parts:
                raise ConfigError(f"partition {rec.partition} is not one of the topic's partitions {parts}")
            return rec.partition
        if rec.key is not None:
            return parts[zlib.crc32(rec.key) % len(parts)]
        self._round_robin += 1
        return parts[self._round_robin % len(parts)]

    def end_offsets(self, topic: str, earliest: bool = False) -> dict[int, int]:
        """The next offset to be written (or the first still held) of every partition.

        The end is checked by reading from the broker's answer on: Tansu 0.6 answers
        ListOffsets(latest) with the first offset of its last batch + 1, so the rest of a batch
        of several records (a Flink sink's, say) would look unwritten until the next batch."""
        out = {}
        for p in self.partitions(topic):
            low, high = self._call(lambda p=p: self.consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=self.timeout_s, cached=False), f"list offsets of {topic}[{p}]")
            out[p] = low if earliest else self._read_past(topic, p, high)
        return out

    def _read_past(self, topic: str, partition: int, offset: int) -> int:
        """The offset after the last record held at or past ``offset``."""
        while True:
            got = self.fetch(topic, partition, offset, max_wait_ms=100)
            if not got:
                return offset
            offset = got[-1].offset + 1

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        """The offsets a consumer group has committed on a topic (-1 where none)."""
        probe = Consumer({**self._base, "group.id": group, "enable.auto.commit": False})
        try:
            got = self._call(lambda: probe.committed([TopicPartition(topic, p) for p in self.partitions(topic)],
                                                     timeout=self.timeout_s), f"committed offsets of {group!r}")
        finally:
            probe.close()
        return {tp.partition: (-1 if tp.offset == OFFSET_INVALID else tp.offset) for tp in got}

    def fetch(self, topic: str, partition: int, offset: int, max_wait_ms: int = 100,
              max_records: int = 10_000) -> list[Record]:
        """Records of one partition from ``offset`` on, as many as arrive within max_wait_ms."""
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        out: list[Record] = []
        deadline = time.monotonic() + max_wait_ms / 1000
        while len(out) < max_records:
            left = deadline - time.monotonic()
            batch = self.consumer.consume(min(1000, max_records - len(out)), max(left, 0.0))
            out += [_record(m) for m in batch if m.error() is None]
            if not batch or left <= 0:
                break
        return out

    def read(self, topic: str, count: int, timeout_s: float = 30.0) -> list[Record]:
        """The first ``count`` records of a topic (all partitions, each in offset order); waits
        for them up to timeout_s and raises TimeoutError with what it got if they do not come."""
        self.consumer.assign([TopicPartition(topic, p, 0) for p in self.partitions(topic)])
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"read {len(out)} of {count} records from {topic!r} in {timeout_s} s")
            batch = self.consumer.consume(min(1000, count - len(out)), min(left, 0.5))
            out += [_record(m) for m in batch if m.error() is None]
        return out

    def _call(self, fn, what: str):
        try:
            return fn()
        except KafkaException as err:
            raise ServiceError("Kafka", self.bootstrap, f"{what} failed: {err.args[0].str()}",
                               "check the address and that the broker is up") from None


def _record(msg) -> Record:
    return replace(Record(value=msg.value(), key=msg.key(), timestamp=msg.timestamp()[1]),
                   partition=msg.partition(), offset=msg.offset())
