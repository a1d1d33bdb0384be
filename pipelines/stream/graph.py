"""The stream job's graph: source -> batches by user -> keyed functions -> sinks.

    Kafka topic | folder of JSON-lines files (event time from the parsed lines)
      -> event time (watermarks: bounded out-of-orderness, idleness)
      -> batch by user (JVM, pipelines.stream.batches: one record per user bucket, before each
         watermark and checkpoint barrier) -> key by bucket
      -> UserFeaturesFn (validates every line with features.validate.parse_event; keyed state:
                         features.user_state per user, bootstrapped from the online store;
                         the click join of pipelines.stream.examples, fired by event-time timers)
           |-> user_sequence, user_recent, user_category_sequence, user_stats online (micro-batched)
           |-> dead letters (reason, field, detail, raw): Kafka topic | JSON-lines files
           |-> training examples (impression + click within the window), a batch each: Kafka topic | files
           |-> accepted records, as they came, a batch per flush tick: Kafka topic | files
           '-> item statistics deltas, a record per item bucket -> mark buckets (JVM) -> key by bucket
                 -> ItemStatsFn -> item_stats online
    (every bucket gets a mark before each checkpoint barrier: its function saves its state then;
     batches of accepted records are unbatched in the JVM before their sink; the examples of the
     bucket timers one watermark fires are put back in label-time order, as one timer per
     impression would have emitted them)
    receipts (counts) of both keyed functions -> a local socket -> summed by the driver
"""
from __future__ import annotations

import dataclasses

from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.base import Sink
from pyflink.java_gateway import get_gateway

from pipelines.stream.batches import batch_by_user, bucket_of, in_time_order, mark_buckets, unbatch
from pipelines.stream.config import StreamConfig
from pipelines.stream.io import file_lines, file_sink, kafka_lines, kafka_sink, stamp_files, watermarks
from pipelines.stream.keyed import DELTA_TYPE, ItemStatsFn, UserFeaturesFn, item_key
from pipelines.stream.runtime import ACCEPTED, DEAD_LETTERS, EXAMPLES, FnSettings


def build(env: StreamExecutionEnvironment, cfg: StreamConfig, ledger: str | None = None,
          receipts: str | None = None) -> None:
    """Add the job to env. ledger: the bootstrap ledger's path; receipts: the driver's
    host:port for count receipts (None: Flink metrics only)."""
    strategy = watermarks(cfg.out_of_orderness_ms, cfg.idleness_ms)
    if cfg.kafka is not None:
        lines = kafka_lines(env, cfg.kafka, strategy, bounded=not cfg.follow)
    else:
        lines = stamp_files(file_lines(env, str(cfg.source.resolve()), cfg.follow), strategy, cfg.now_ms)
    batches = batch_by_user(lines, cfg.key_buckets, cfg.hold_ms, cfg.batch_lines).uid("batch-by-user")
    window = cfg.labels.window_ms if cfg.examples else None
    settings = FnSettings(workdir=str(cfg.workdir.resolve()), online=cfg.online, every=cfg.report_every,
                          flush_ms=cfg.flush_ms,
                          ledger=ledger, receipts=receipts, cache_size=cfg.state_cache, restored=cfg.restore is not None,
                          patience_s=float(cfg.online_patience_s))
    users = (batches.key_by(bucket_of, key_type=Types.INT())
             .process(UserFeaturesFn(settings, cfg.features(), cfg.allowed_lateness_ms, window, cfg.accepted_log,
                                     cfg.now_ms, cfg.key_buckets),
                      output_type=DELTA_TYPE)
             .name("user features").uid("user-features"))
    for tag, name, uid, topic, folder in output_routes(cfg):
        out = users.get_side_output(tag)
        # each sink in a task of its own, with what splits its batches: that work, and the Kafka
        # writer's, leave the Python functions' thread (which hands over one array per batch)
        if tag is EXAMPLES:  # the examples of each bucket's timer, back in the order of their label times
            out = in_time_order(out).uid("examples-in-time-order").start_new_chain()
        elif tag is ACCEPTED:  # a batch's accepted lines
            out = unbatch(out).uid("unbatch-accepted").start_new_chain()
        sink = kafka_sink(cfg.kafka, topic, uid) if cfg.kafka is not None else file_sink(str(folder.resolve()), uid)
        out = out.sink_to(sink).name(name).uid(uid)
        if tag is DEAD_LETTERS:
            out.disable_chaining()
    discard = Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())
    if cfg.item_stats:
        item_settings = dataclasses.replace(settings, flush_ms=cfg.item_flush_ms)
        deltas = mark_buckets(users, cfg.key_buckets, DELTA_TYPE).uid("mark-item-buckets")
        items = (deltas.key_by(item_key, key_type=Types.INT()).process(ItemStatsFn(item_settings))
                 .name("item stats").uid("item-stats"))
        items.sink_to(discard).name("end").uid("end")  # the functions' effect is the store; they emit nothing
    else:
        users.sink_to(discard).name("end").uid("end")


def output_routes(cfg: StreamConfig) -> list[tuple]:
    """(side output, name, uid, Kafka topic, files folder) of each output the config turns on."""
    kafka = cfg.kafka
    routes = [(DEAD_LETTERS, "dead letters", "dead", kafka and kafka.dead_letter_topic, cfg.dead_letter)]
    if cfg.examples:
        routes.append((EXAMPLES, "examples", "examples", kafka and kafka.examples_topic, cfg.examples_dir))
    if cfg.accepted_log:
        routes.append((ACCEPTED, "accepted records", "accepted", kafka and kafka.accepted_topic, cfg.accepted_dir))
    return routes


def make_output_dirs(cfg: StreamConfig) -> None:
    """Files source: the folders the file sinks write into."""
    if cfg.kafka is None:
        for route in output_routes(cfg):
            route[4].mkdir(parents=True, exist_ok=True)
