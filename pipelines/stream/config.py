"""The stream job's configuration: where it reads and writes, its policies, cadences and checkpoints.

Both classes are typed (pipelines.config.typed): every value is type-checked when a TOML file
or the CLI loads them and when code builds them; ``__post_init__`` keeps the rules between
fields. docs/streaming.md explains each setting.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from features.errors import ConfigError
from features.labels import LabelPolicy
from features.sequence import SequencePolicy
from features.user_state import FeaturePolicy
from pipelines.config import as_folder, typed
from pipelines.store.online_config import OnlineStore

STARTING_OFFSETS = ("committed", "earliest", "latest")
_SECRET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_JAAS_OPTION = re.compile(r'(\w+)="([^"]*)"')
_JAVA_ONLY = ("ssl.truststore.", "ssl.keystore.", "sasl.jaas.", "sasl.login.class", "ssl.protocol", "ssl.enabled.")


@typed
@dataclass(frozen=True)
class KafkaSettings:
    """The standard Kafka keys; the same for the embedded broker and a real cluster."""

    bootstrap_servers: str  # host:port[,host:port]
    topic: str = "events"
    group_id: str = "recstream-stream"
    dead_letter_topic: str = "events-dead-letters"  # rejected and late records, with the reason
    examples_topic: str = "training-examples"  # labeled impressions (pipelines.stream.examples)
    accepted_topic: str = "events-accepted"  # every accepted record as it came: the log the examples point into
    starting_offsets: Literal["committed", "earliest", "latest"] = "committed"  # committed: earliest where none
    # More client properties, e.g. security.protocol, sasl.mechanism, sasl.jaas.config. A value
    # "${NAME}" is read from the environment variable NAME when the job is built (keep secrets there).
    properties: dict[str, str | int | float | bool] = field(default_factory=dict)
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"  # dead letters and examples
    # The source's fetch.max.wait.ms (None: Kafka's 500). Kafka answers a waiting fetch as soon as a
    # record arrives; Tansu (the embedded broker) only when this time is up (130 ms more at p50 in
    # the job's freshness): pipelines.embedded.broker sets 50. A `properties` entry wins.
    fetch_max_wait_ms: int | None = None

    def __post_init__(self) -> None:
        for name in ("bootstrap_servers", "topic", "group_id", "dead_letter_topic", "examples_topic",
                     "accepted_topic"):
            if not getattr(self, name).strip():
                raise ConfigError(f"KafkaSettings.{name}", "must be a non-empty string")
        if self.fetch_max_wait_ms is not None and self.fetch_max_wait_ms < 0:
            raise ConfigError("KafkaSettings.fetch_max_wait_ms", f"must be ms >= 0, got {self.fetch_max_wait_ms}")

    def source_properties(self) -> dict[str, str]:
        """What the job's Kafka source is given on top of its bootstrap servers, topic and group."""
        out = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}
        if self.fetch_max_wait_ms is not None:
            out["fetch.max.wait.ms"] = str(self.fetch_max_wait_ms)
        return {**out, **self.client_properties()}

    def client_properties(self) -> dict[str, str]:
        """properties with ${NAME} values taken from the environment (an unset NAME is an error)."""
        out = {}
        for key, value in self.properties.items():
            def env(match, key=key):
                name = match.group(1)
                if name not in os.environ:
                    raise ConfigError(f"kafka.properties.{key}", f"reads ${{{name}}}, but the environment "
                                      f"variable {name} is not set")
                return os.environ[name]
            out[key] = _SECRET.sub(env, str(value))
        return out

    def librdkafka_properties(self) -> dict[str, str]:
        """client_properties() as librdkafka (confluent-kafka) names them, for the loop's consumer:
        security.protocol, sasl.* and ssl.* pass through; the Java-only sasl.jaas.config of the
        PLAIN and SCRAM login modules becomes sasl.username / sasl.password; JKS keystore and
        truststore settings (Java-only) are left out: give librdkafka PEM files (ssl.ca.location)."""
        out = {}
        for key, value in self.client_properties().items():
            if key == "sasl.jaas.config":
                found = dict(_JAAS_OPTION.findall(value))
                out.update({f"sasl.{k}": v for k, v in found.items() if k in ("username", "password")})
            elif key == "security.protocol" or (key.startswith(("sasl.", "ssl."))
                                                  and not key.startswith(_JAVA_ONLY)):
                out[key] = value
        return out


@typed
@dataclass(frozen=True)
class StreamConfig:
    workdir: Path  # the run folder whose Feast store receives the updates (apply must have run)
    source: Path | None = None  # a folder of JSON-lines event files, or:
    kafka: KafkaSettings | None = None  # a Kafka topic (and the dead-letter, example and accepted-record topics)
    dead_letter: Path | None = None  # files source: folder for rejected and late records (workdir/stream_rejected)
    examples_dir: Path | None = None  # files source: folder for training examples (workdir/stream_examples)
    accepted_dir: Path | None = None  # files source: folder for the accepted records (workdir/stream_accepted)
    follow: bool = False  # False: read what is there and finish; True: keep reading until stopped
    sequence: SequencePolicy = field(default_factory=SequencePolicy)  # the lifelong sequence (the backfill's)
    recent_len: int = 50  # user_recent's length (the backfill's --recent-len)
    category_len: int = 50  # user_category_sequence's length (the backfill's --category-len)
    item_stats: bool = True  # keep item_stats fresh too (a second keyed operator, by item)
    online: OnlineStore = field(default_factory=OnlineStore)  # kind = "sqlite" (the run folder's) or "redis"
    online_patience_s: float = 300.0  # how long an unreachable online store is waited for before the job fails
    start_timeout_s: float = 600.0  # embedded runs: how long the keyed functions may take to open before the job fails
    state_cache: int = 100_000  # keys whose decoded state each keyed function keeps in memory
    labels: LabelPolicy = field(default_factory=LabelPolicy)  # the example stream's attribution window
    examples: bool = True  # emit the training-example stream
    accepted_log: bool = True  # emit every accepted record as it came (the log the examples point into)
    out_of_orderness_ms: int = 300_000  # watermark = the newest event time seen - this
    allowed_lateness_ms: int = 0  # events older than watermark - this are dead-lettered as 'late'
    idleness_ms: int = 30_000  # a partition (Kafka) or reader with no record for this long stops holding the watermark
    checkpoints: Path | None = None  # folder for checkpoints (and the bootstrap ledger); None: none kept
    checkpoint_interval_ms: int = 5_000
    restore: str | None = None  # "latest" (the newest checkpoint in `checkpoints`) or a chk-N folder
    report_every: int = 500  # records per count receipt (counts also go out on every flush)
    flush_ms: int = 100  # following: the longest a changed user row waits for its online write (a timer)
    item_flush_ms: int = 250  # following: the same for item_stats rows (hot items change all the time)
    bundle_ms: int = 100  # process mode only: python.fn-execution.bundle.time, how often the Python workers
    # hand their results on (thread mode has no bundles)
    hold_ms: int = 50  # the longest the JVM holds an event before handing its batch to Python (pipelines.stream.batches)
    batch_lines: int = 2048  # ... or until it holds this many
    key_buckets: int = 128  # users, and items, are batched and keyed by bucket (fixed for the life of the checkpoints)
    parallelism: int = 1
    # PyFlink runs the Python functions in the TaskManager's JVM ("thread", the default: no
    # serialization between Java and Python) or in separate worker processes ("process")
    python_mode: Literal["thread", "process"] = "thread"
    now_ms: int | None = None  # validation clock; None means the wall clock

    def __post_init__(self) -> None:
        as_folder(self.workdir, "workdir")
        if (self.source is None) == (self.kafka is None):
            raise ConfigError("StreamConfig", "needs exactly one source: source (a folder of JSON-lines files) "
                              "or kafka (bootstrap_servers, topic, ...)")
        for name, folder in (("dead_letter", "rejected"), ("examples_dir", "examples"), ("accepted_dir", "accepted")):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.workdir / f"stream_{folder}")
        for name in ("report_every", "flush_ms", "item_flush_ms", "bundle_ms", "hold_ms", "batch_lines", "key_buckets",
                     "parallelism", "out_of_orderness_ms",
                     "idleness_ms", "checkpoint_interval_ms", "recent_len", "category_len", "state_cache"):
            if getattr(self, name) < 1:
                raise ConfigError(f"StreamConfig.{name}", f"must be an integer >= 1, got {getattr(self, name)!r}")
        if self.key_buckets < self.parallelism:
            raise ConfigError("StreamConfig.key_buckets", f"{self.key_buckets} buckets leave subtasks of parallelism "
                                                          f"{self.parallelism} idle; set key_buckets >= parallelism")
        if self.allowed_lateness_ms < 0:
            raise ConfigError("StreamConfig.allowed_lateness_ms", f"must be >= 0, got {self.allowed_lateness_ms}")
        if self.online_patience_s < 0:
            raise ConfigError("StreamConfig.online_patience_s", f"must be seconds >= 0, got {self.online_patience_s}")
        if self.start_timeout_s <= 0:
            raise ConfigError("StreamConfig.start_timeout_s", f"must be seconds > 0, got {self.start_timeout_s}")
        if self.examples and self.labels.kind != "impression_click":
            raise ConfigError("StreamConfig.labels.kind", f"the example stream builds impression_click labels, not "
                              f"{self.labels.kind!r}; set examples = false or labels.kind = 'impression_click'")
        if self.restore == "latest" and self.checkpoints is None:
            raise ConfigError("StreamConfig.restore", "'latest' needs the checkpoints folder")

    def features(self) -> FeaturePolicy:
        return FeaturePolicy(self.sequence, self.recent_len, self.category_len)
