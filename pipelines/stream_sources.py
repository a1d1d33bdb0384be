"""Where the stream job reads and writes: a folder of JSON-lines files or Kafka topics.

Kafka goes through Flink's own connector (flink-connector-kafka, fetched by
scripts/fetch_stream_deps.sh): KafkaSource for the events, KafkaSink for dead letters and
examples. Event time differs by source:
- Kafka: the record timestamp (producers stamp each record with its event's time, as Kafka
  does by default with CreateTime); watermarks are made per partition inside the source,
  so a partition that is behind holds the watermark back and an idle one (no record for
  ``idleness_ms``) does not.
- files: the validated event's timestamp, assigned after parsing (rejections move nothing).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from pyflink.common import Duration, WatermarkStrategy
from pyflink.common.serialization import Encoder, SimpleStringSchema
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream.connectors.file_system import (BucketAssigner, FileSink, FileSource, OutputFileConfig,
                                                       RollingPolicy, StreamFormat)
from pyflink.datastream.connectors.kafka import (DeliveryGuarantee, KafkaOffsetsInitializer, KafkaRecordSerializationSchema,
                                                 KafkaSink, KafkaSource)
from pyflink.java_gateway import get_gateway

from pipelines.flink_adapters import event_time

MONITOR_MS = 1000  # files, follow mode: how often the folder is listed for new files
STARTING_OFFSETS = ("committed", "earliest", "latest")
_SECRET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class KafkaSettings:
    """The standard Kafka keys; the same for the embedded broker and a real cluster."""

    bootstrap_servers: str  # host:port[,host:port]
    topic: str = "events"
    group_id: str = "recstream-stream"
    dead_letter_topic: str = "events-dead-letters"  # rejected and late records, with the reason
    examples_topic: str = "training-examples"  # labeled impressions (stream_examples)
    accepted_topic: str = "events-accepted"  # every accepted record as it came: the log the examples point into
    starting_offsets: str = "committed"  # committed (earliest where the group has none) | earliest | latest
    # More client properties, e.g. security.protocol, sasl.mechanism, sasl.jaas.config. A value
    # "${NAME}" is read from the environment variable NAME when the job is built (keep secrets there).
    properties: dict = field(default_factory=dict)
    delivery: str = "at-least-once"  # dead letters and examples: at-least-once | exactly-once (transactions)

    def __post_init__(self) -> None:
        for name in ("bootstrap_servers", "topic", "group_id", "dead_letter_topic", "examples_topic",
                     "accepted_topic"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"KafkaSettings.{name} must be a non-empty string, got {value!r}")
        if self.starting_offsets not in STARTING_OFFSETS:
            raise ValueError(f"KafkaSettings.starting_offsets must be one of {STARTING_OFFSETS}, "
                             f"got {self.starting_offsets!r}")
        if self.delivery not in ("at-least-once", "exactly-once"):
            raise ValueError(f"KafkaSettings.delivery must be at-least-once or exactly-once, got {self.delivery!r}")
        if not isinstance(self.properties, dict) or not all(isinstance(k, str) for k in self.properties):
            raise ValueError(f"KafkaSettings.properties must be a table of strings, got {self.properties!r}")

    def client_properties(self) -> dict[str, str]:
        """properties with ${NAME} values taken from the environment (an unset NAME is an error)."""
        out = {}
        for key, value in self.properties.items():
            def env(match, key=key):
                name = match.group(1)
                if name not in os.environ:
                    raise ValueError(f"Kafka property {key!r} reads ${{{name}}}, but the environment "
                                     f"variable {name} is not set")
                return os.environ[name]
            out[key] = _SECRET.sub(env, str(value))
        return out


class _ParsedTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return event_time(value, record_timestamp)


def watermarks(out_of_orderness_ms: int, idleness_ms: int) -> WatermarkStrategy:
    return (WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(out_of_orderness_ms))
            .with_idleness(Duration.of_millis(idleness_ms)))


def file_lines(env, folder: str, follow: bool):
    """Text lines of every file in folder (and, following, of files added later)."""
    files = FileSource.for_record_stream_format(StreamFormat.text_line_format("ISO-8859-1"), folder)
    if follow:
        files = files.monitor_continuously(Duration.of_millis(MONITOR_MS))
    return env.from_source(files.build(), WatermarkStrategy.no_watermarks(), "event files").uid("file-source")


def stamp_files(parsed, strategy: WatermarkStrategy):
    """Event time from the parsed events (files carry no record timestamps)."""
    return parsed.assign_timestamps_and_watermarks(strategy.with_timestamp_assigner(_ParsedTime()))


def kafka_lines(env, kafka: KafkaSettings, strategy: WatermarkStrategy, bounded: bool):
    """Record values as text (ISO-8859-1: the bytes exactly), event time from the record timestamps.
    bounded: stop at the end offsets found at start."""
    jvm = get_gateway().jvm
    initializers = jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
    if kafka.starting_offsets == "committed":
        # PyFlink 2.3's wrapper names a shaded kafka-clients class the 4.0 connector does not ship.
        start = KafkaOffsetsInitializer(initializers.committedOffsets(
            jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST))
    else:
        start = getattr(KafkaOffsetsInitializer, kafka.starting_offsets)()
    builder = (KafkaSource.builder().set_bootstrap_servers(kafka.bootstrap_servers).set_topics(kafka.topic)
               .set_group_id(kafka.group_id).set_starting_offsets(start)
               .set_value_only_deserializer(SimpleStringSchema("ISO-8859-1"))
               .set_properties({"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000",
                                **kafka.client_properties()}))
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return env.from_source(builder.build(), strategy, f"kafka {kafka.topic}").uid("kafka-source")


def kafka_sink(kafka: KafkaSettings, topic: str, name: str) -> KafkaSink:
    exactly = kafka.delivery == "exactly-once"
    builder = (KafkaSink.builder().set_bootstrap_servers(kafka.bootstrap_servers)
               .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic(topic)
                                      .set_value_serialization_schema(SimpleStringSchema()).build())
               .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE if exactly else DeliveryGuarantee.AT_LEAST_ONCE))
    if exactly:
        builder = builder.set_transactional_id_prefix(f"{kafka.group_id}-{name}")
    for key, value in kafka.client_properties().items():
        builder = builder.set_property(key, value)
    return builder.build()


def file_sink(folder: str, prefix: str) -> FileSink:
    """JSON lines into folder; in a running job a part file becomes visible at each checkpoint."""
    return (FileSink.for_row_format(folder, Encoder.simple_string_encoder())
            .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
            .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
            .with_output_file_config(OutputFileConfig.builder().with_part_prefix(prefix)
                                     .with_part_suffix(".jsonl").build())
            .build())
