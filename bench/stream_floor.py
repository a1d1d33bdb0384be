"""PyFlink's floor for bench/stream_bench.py: the stream job's own source, validation and key-by
into a keyed Python function that does nothing. A module of its own (not the script) so that
the interpreter PyFlink embeds in the JVM (thread mode) can import the function by name."""
from __future__ import annotations

import json
import time
from pathlib import Path

from pyflink.datastream import KeyedProcessFunction

from pipelines.stream.config import KafkaSettings, StreamConfig


class Floor(KeyedProcessFunction):
    """A keyed function that does nothing but note when its first and last records came."""

    def __init__(self, out: str):
        self.out = out

    def open(self, ctx):
        self.first, self.last, self.n = None, None, 0

    def process_element(self, value, ctx):
        now = time.perf_counter()
        self.first, self.last, self.n = self.first or now, now, self.n + 1
        return iter(())

    def close(self):
        Path(self.out).write_text(json.dumps({"n": self.n, "seconds": (self.last or 0) - (self.first or 0)}))


def floor_job(kafka: KafkaSettings, workdir: str, out: str, mode: str) -> None:
    import functools

    from pyflink.common import Types
    from pyflink.datastream.connectors.base import Sink
    from pyflink.java_gateway import get_gateway

    from pipelines.stream.driver import bind_to_parent, environment
    from pipelines.stream.io import kafka_lines, watermarks
    from pipelines.stream.runtime import parse_line, route_key

    bind_to_parent()
    cfg = StreamConfig(workdir=Path(workdir), kafka=kafka, python_mode=mode)
    env, _ = environment(cfg)
    parsed = kafka_lines(env, cfg.kafka, watermarks(300_000, 30_000), bounded=True).map(
        functools.partial(parse_line, now_ms=None))
    done = parsed.key_by(route_key, key_type=Types.LONG()).process(Floor(out))
    done.sink_to(Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()))
    env.execute("floor")
