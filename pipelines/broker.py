"""The embedded Kafka-protocol broker (Tansu) and the stream pieces fetched beside it.

    with running_broker() as broker:            # Tansu on 127.0.0.1, a free port, memory storage
        client = broker.client()                # pipelines.kafka_client.KafkaClient
        client.create_topic("events", partitions=2)
        StreamConfig(..., kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers, ...))

scripts/fetch_stream_deps.sh puts the Tansu binary and the Kafka connector jars in
.cache/stream-deps/ ($RECSTREAM_STREAM_DEPS overrides the folder). The broker runs as one
process started with Popen (the PID held is Tansu's own), is waited for until its port
answers, and is stopped by that PID: SIGTERM, then SIGKILL after a grace period. Tansu keeps
everything in memory: a stopped broker's topics are gone.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from features.schema import Event
from features.validate import parse_event
from pipelines.kafka_client import KafkaClient, Record

REPO = Path(__file__).resolve().parents[1]
CONNECTOR_JARS = ("flink-connector-kafka-4.0.1-2.0.jar", "kafka-clients-3.9.1.jar")
FETCH_HINT = "run scripts/fetch_stream_deps.sh (make setup does) to fetch it"


def stream_deps() -> Path:
    """The folder with the broker binary and the connector jars."""
    return Path(os.environ.get("RECSTREAM_STREAM_DEPS") or REPO / ".cache" / "stream-deps")


def tansu_binary() -> Path:
    path = stream_deps() / "tansu"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"the Tansu broker binary {path} is missing; {FETCH_HINT}")
    return path


def kafka_jars() -> list[Path]:
    """The Kafka connector jars to hand to Flink (pipeline.jars)."""
    paths = [stream_deps() / name for name in CONNECTOR_JARS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Kafka connector jar(s) missing: {missing}; {FETCH_HINT}")
    return paths


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """One Tansu process at a time on a port; start() after stop() runs a new, empty broker."""

    def __init__(self, port: int | None = None, startup_timeout_s: float = 10.0):
        self.binary = tansu_binary()
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the last started process's PID
        self.log = Path(tempfile.mkdtemp(prefix="recstream-tansu-")) / "tansu.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"the broker is already running (pid {self.proc.pid})")
        fixed = self.port is not None
        for _ in range(1 if fixed else 5):  # a picked port can be taken in between: pick another
            port = self.port if fixed else free_port()
            if self._launch(port):
                self.port = port
                return self
        raise RuntimeError(f"Tansu did not start on 127.0.0.1 (port {self.port}); its log:\n{self._tail()}")

    def _launch(self, port: int) -> bool:
        if _answers(port):  # something else already listens there
            return False
        url = f"tcp://127.0.0.1:{port}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _answers(port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def client(self, client_id: str = "recstream") -> KafkaClient:
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
