"""Where the loop reads: Kafka topics (the stream job's), or the folders its files mode writes.

A position is how far a stream has been read: {partition: next offset} for a topic, {file name:
lines read} for a folder. The loop keeps positions in its checkpoints and every window opens its
readers at them (Kafka: assign and seek, no consumer group decides anything), so a restarted loop
reads exactly what the interrupted one had not yet checkpointed. After each checkpoint the loop
also commits the offsets to the group ``<kafka.group_id>-retrain``, for lag monitoring only.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from features.errors import ServiceError

LOG = logging.getLogger("recstream.retrain.kafka")
Positions = dict[str, int]


@dataclass(frozen=True)
class Rec:
    key: str  # the partition (Kafka) or file name (folder)
    next: int  # the position after this record
    value: bytes
    timestamp: int | None  # the record's time (Kafka), else None


class KafkaReader:
    """One topic from given offsets, with a confluent-kafka consumer assigned to every partition."""

    def __init__(self, bootstrap: str, topic: str, start: Positions, properties: dict, group: str,
                 timeout_s: float = 10.0):
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        self.topic, self.bootstrap = topic, bootstrap
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50, "logger": LOG,
                                  **properties})
        try:
            # every topic's metadata, not this one's: a broker that auto-creates topics would create it
            found = self.consumer.list_topics(timeout=timeout_s).topics.get(topic)
        except KafkaException as err:
            self.consumer.close()
            raise ServiceError("Kafka", bootstrap, f"no answer about topic {topic!r} in {timeout_s:g} s "
                               f"({err.args[0].str()})", "check kafka.bootstrap_servers and that the brokers "
                               "are up") from None
        if found is None or found.error is not None or not found.partitions:
            self.consumer.close()
            raise ServiceError("Kafka", bootstrap, f"topic {topic!r} cannot be read "
                               f"({getattr(found, 'error', None) or 'not found'})",
                               "start the stream job first, or check kafka.bootstrap_servers and the topic name")
        self.consumer.assign([TopicPartition(topic, p, int(start.get(str(p), 0))) for p in sorted(found.partitions)])

    def poll(self, timeout_s: float) -> list[Rec]:
        from confluent_kafka import KafkaError

        out = []
        for msg in self.consumer.consume(1000, timeout_s):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise ServiceError("Kafka", self.bootstrap, f"reading {self.topic!r}: {err.str()}")
            ts_type, ts = msg.timestamp()
            out.append(Rec(str(msg.partition()), msg.offset() + 1, msg.value() or b"", ts if ts_type else None))
        return out

    def commit(self, positions: Positions) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if positions:
            try:
                self.consumer.commit(offsets=[TopicPartition(self.topic, int(p), o) for p, o in positions.items()],
                                     asynchronous=False)
            except KafkaException as err:  # the window is checkpointed already; this commit is for lag monitors
                raise ServiceError("Kafka", self.bootstrap, f"committing offsets of {self.topic!r}: "
                                   f"{err.args[0].str()}", "the loop resumes from its checkpoint when "
                                   "restarted; check that the brokers are up") from None

    def close(self) -> None:
        self.consumer.close()


class FolderReader:
    """JSON-lines files in a folder (the stream job's file sinks), each read from its line count on.
    Hidden files (a sink's in-progress parts) are not read until they are committed."""

    def __init__(self, folder: Path, start: Positions):
        self.folder, self.start = Path(folder), dict(start)
        self._pending: Iterator[Rec] | None = None

    def _records(self) -> Iterator[Rec]:
        files = sorted((p for p in self.folder.glob("*") if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: (p.stat().st_mtime_ns, p.name)) if self.folder.is_dir() else []
        for path in files:
            done = self.start.get(path.name, 0)
            with open(path, "rb") as f:
                for n, line in enumerate(f, start=1):
                    if n > done and line.endswith(b"\n"):  # a line still being written is left for later
                        self.start[path.name] = n
                        yield Rec(path.name, n, line.rstrip(b"\n"), None)

    def poll(self, timeout_s: float, batch: int = 1000) -> list[Rec]:
        if self._pending is None:
            self._pending = self._records()
        out = []
        for rec in self._pending:
            out.append(rec)
            if len(out) >= batch:
                return out
        self._pending = None  # the files as they were are read; list them again next time
        if not out:
            time.sleep(min(timeout_s, 0.2))
        return out

    def commit(self, positions: Positions) -> None:
        """Files keep no group offsets."""

    def close(self) -> None:
        self._pending = None


def open_reader(cfg, stream: str, start: Positions):
    """A reader of ``stream`` ("examples" or "accepted") from ``start``, per the config's source."""
    if cfg.kafka is not None:
        topic = cfg.kafka.examples_topic if stream == "examples" else cfg.kafka.accepted_topic
        return KafkaReader(cfg.kafka.bootstrap_servers, topic, start, cfg.kafka.librdkafka_properties(),
                           f"{cfg.kafka.group_id}-retrain")
    return FolderReader(cfg.examples_dir if stream == "examples" else cfg.accepted_dir, start)
