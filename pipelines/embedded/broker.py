"""The embedded Kafka-protocol broker (Tansu) and the stream pieces fetched beside it.

    with running_broker() as broker:            # Tansu on 127.0.0.1, a free port, memory storage
        client = broker.client()                # pipelines.embedded.kafka.KafkaClient
        client.create_topic("events", partitions=2)
        StreamConfig(..., kafka=broker.kafka(group_id=...))  # KafkaSettings for this broker

scripts/fetch_stream_deps.sh puts the Tansu binary in .cache/stream-deps/
(pipelines.stream.connector.stream_deps). The broker runs as one
process started with Popen (the PID held is Tansu's own), is waited for until its port
answers, and is stopped by that PID: SIGTERM, then SIGKILL after a grace period. Tansu keeps
everything in memory: a stopped broker's topics are gone.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from features.errors import MissingInput
from features.schema import Event
from features.validate import parse_event
from pipelines.embedded.kafka import KafkaClient, Record
from pipelines.processes import port_answers, start_on_free_port, stop_process
from pipelines.stream.connector import FETCH_HINT, stream_deps

if TYPE_CHECKING:
    from pipelines.stream.config import KafkaSettings

# Tansu answers a fetch that finds no record when the fetch's max wait is up, not when a record
# arrives (Kafka's default wait, 500 ms, made the stream job's views 130 ms staler at p50).
FETCH_MAX_WAIT_MS = 50


def tansu_binary() -> Path:
    path = stream_deps() / "tansu"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingInput(path, f"the Tansu broker binary is not there; {FETCH_HINT}")
    return path


class Broker:
    """One Tansu process at a time on a port; start() after stop() runs a new, empty broker."""

    def __init__(self, port: int | None = None, startup_timeout_s: float = 10.0, log: Path | None = None,
                 detached: bool = False):
        """detached: in a session of its own, to outlive the process that started it (`recstream broker start`)."""
        self.binary = tansu_binary()
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.detached = detached
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the last started process's PID
        self.log = log or Path(tempfile.mkdtemp(prefix="recstream-tansu-")) / "tansu.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"the broker is already running (pid {self.proc.pid})")
        self.proc, self.port = start_on_free_port(self._launch, port_answers, "the Tansu broker", self.port,
                                                  timeout_s=self.startup_timeout_s, log_tail=self._tail)
        self.pid = self.proc.pid
        return self

    def _launch(self, port: int) -> subprocess.Popen:
        url = f"tcp://127.0.0.1:{port}"
        with open(self.log, "ab") as log:
            return subprocess.Popen([str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url",
                                     url, "--storage-engine", "memory://tansu/"],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=self.detached)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL) and reap it."""
        proc, self.proc = self.proc, None
        stop_process(proc, grace_s)

    def kafka(self, **settings) -> "KafkaSettings":
        """KafkaSettings for this broker: its address and a short fetch wait (FETCH_MAX_WAIT_MS)."""
        from pipelines.stream.config import KafkaSettings  # here: `recstream broker start` needs no Feast

        return KafkaSettings(**{"bootstrap_servers": self.bootstrap_servers, "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
                                **settings})

    def client(self, client_id: str = "recstream") -> KafkaClient:
        """A KafkaClient (pipelines.embedded.kafka) on this broker; close it before stopping the broker."""
        return KafkaClient(self.bootstrap_servers, client_id=client_id)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


@contextmanager
def running_broker(port: int | None = None) -> Iterator[Broker]:
    broker = Broker(port).start()
    try:
        yield broker
    finally:
        broker.stop()


def event_records(lines, now_ms: int | None = None) -> list[Record]:
    """Raw event lines (str or bytes) as Kafka records the way a producer should send them:
    keyed by user (one user's events stay in order on one partition) and stamped with the
    event's time (the stream job's watermarks read record timestamps). A line that does not
    validate goes with the previous record (its key and time), so that it moves no watermark."""
    out, key, last = [], None, 0
    for line in lines:
        raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
        got = parse_event(raw, now_ms)
        if isinstance(got, Event):
            key, last = str(got.user_id).encode(), got.timestamp
        out.append(Record(value=raw, key=key, timestamp=last))
    return out


def create_stream_topics(client: KafkaClient, kafka, partitions: int = 1) -> None:
    """The job's input, dead-letter, example and accepted-record topics (existing ones are left as they are)."""
    client.create_topic(kafka.topic, partitions)
    client.create_topic(kafka.dead_letter_topic, 1)
    client.create_topic(kafka.examples_topic, 1)
    client.create_topic(kafka.accepted_topic, 1)
