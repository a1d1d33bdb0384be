"""Where the stream job reads and writes: a folder of JSON-lines files or Kafka topics.

Kafka goes through Flink's own connector (flink-connector-kafka, fetched by
scripts/fetch_stream_deps.sh): KafkaSource for the events, KafkaSink for dead letters and
examples. Event time differs by source:
- Kafka: the record timestamp (producers stamp each record with its event's time, as Kafka
  does by default with CreateTime); watermarks are made per partition inside the source,
  so a partition that is behind holds the watermark back and an idle one (no record for
  ``idleness_ms``) does not.
- files: the validated event's timestamp, parsed from each line (rejections move nothing).
"""
from __future__ import annotations

from py4j.java_gateway import get_java_class
from pyflink.common import Duration, WatermarkStrategy
from pyflink.common.serialization import Encoder, SimpleStringSchema
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream.connectors.file_system import (BucketAssigner, FileSink, FileSource, OutputFileConfig,
                                                       RollingPolicy, StreamFormat)
from pyflink.datastream.connectors.kafka import (DeliveryGuarantee, KafkaOffsetsInitializer, KafkaRecordSerializationSchema,
                                                 KafkaSink, KafkaSource)
from pyflink.java_gateway import get_gateway

from pipelines.stream.config import KafkaSettings
from pipelines.stream.runtime import event_time, parse_line

MONITOR_MS = 1000  # files, follow mode: how often the folder is listed for new files


class _LineTime(TimestampAssigner):
    def __init__(self, now_ms: int | None):
        self.now_ms = now_ms

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return event_time(parse_line(value, self.now_ms), record_timestamp)


def watermarks(out_of_orderness_ms: int, idleness_ms: int) -> WatermarkStrategy:
    return (WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(out_of_orderness_ms))
            .with_idleness(Duration.of_millis(idleness_ms)))


def file_lines(env, folder: str, follow: bool):
    """Text lines of every file in folder (and, following, of files added later)."""
    files = FileSource.for_record_stream_format(StreamFormat.text_line_format("ISO-8859-1"), folder)
    if follow:
        files = files.monitor_continuously(Duration.of_millis(MONITOR_MS))
    return env.from_source(files.build(), WatermarkStrategy.no_watermarks(), "event files").uid("file-source")


def stamp_files(lines, strategy: WatermarkStrategy, now_ms: int | None):
    """Event time from the lines' events (files carry no record timestamps): each line is parsed
    here for its time, and again by the user function, which keeps the lines batched."""
    return lines.assign_timestamps_and_watermarks(strategy.with_timestamp_assigner(_LineTime(now_ms))).uid("event-time")


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
               .set_properties(kafka.source_properties()))
    if bounded:
        builder = builder.set_bounded(_end_offsets(kafka))
    return env.from_source(builder.build(), strategy, f"kafka {kafka.topic}").uid("kafka-source")


def _end_offsets(kafka: KafkaSettings) -> KafkaOffsetsInitializer:
    """Where a bounded run stops: every partition's end now, read past what the broker lists
    (pipelines.embedded.kafka: Tansu lists the end of its last batch short, and Flink's
    OffsetsInitializer.latest() would stop there, leaving that batch's other records unread)."""
    from pipelines.embedded.kafka import KafkaClient

    with KafkaClient(kafka.bootstrap_servers, client_id="recstream-bounds",
                     properties=kafka.librdkafka_properties()) as client:
        ends = client.end_offsets(kafka.topic)
    jvm = get_gateway().jvm
    offsets = jvm.org.apache.flink.python.util.HashMapWrapper(None, get_java_class(jvm.Long))  # Long values
    for partition, offset in ends.items():  # kafka-clients' own class: the 4.0 connector ships it unshaded
        offsets.put(jvm.org.apache.kafka.common.TopicPartition(kafka.topic, partition), offset)
    initializers = jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
    return KafkaOffsetsInitializer(initializers.offsets(offsets.asMap()))


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
