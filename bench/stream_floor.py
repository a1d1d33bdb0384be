"""PyFlink's floor for bench/stream_bench.py: the stream job's own source, validation and key-by
into a keyed Python function that does nothing; and the steps of bench/stream_shape.py, the same
function given the job's per-event calls one at a time (SHAPE_STEPS). A module of its own (not
the scripts) so that the interpreter PyFlink embeds in the JVM (thread mode) can import the
functions by name."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag

from pipelines.stream.config import KafkaSettings, StreamConfig

# What the user operator does per event through PyFlink's API, in the order bench/stream_shape.py adds them.
SHAPE_STEPS = ("+accepted", "+state", "+items")
# As costly to pickle as the bench's mean user state (about 15 us): 100 behaviors with their event ids.
# The per-event shape the job had before its batches: an accepted line, an item record per event.
ACCEPTED_LINE = OutputTag("accepted", Types.STRING())
ITEM_TYPE = Types.TUPLE([Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
STATE = [(1_700_000_000_000 + i, f"{i:08x}-0000-4000-8000-000000000000", 1000 + i, 7, 2) for i in range(100)]


class Floor(KeyedProcessFunction):
    """A keyed function that does nothing but the shape steps in ``parts`` (none: the floor), and
    notes when its first and last records came."""

    def __init__(self, out: str, parts: tuple[str, ...] = ()):
        self.out, self.parts = out, parts

    def open(self, ctx):
        from pyflink.common import Types
        from pyflink.datastream.state import ValueStateDescriptor

        self.first, self.last, self.n = None, None, 0
        self.state = None
        if "+state" in self.parts:
            self.state = ctx.get_state(ValueStateDescriptor("s", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, value, ctx):
        now = time.perf_counter()
        self.first, self.last, self.n = self.first or now, now, self.n + 1
        if not self.parts:
            return
        line, event = value
        if "+accepted" in self.parts:
            yield ACCEPTED_LINE, line
        if self.state is not None:
            self.state.update(STATE)
        if "+items" in self.parts and hasattr(event, "item_id"):
            yield event.item_id, b"\0" * 16

    def close(self):
        Path(self.out).write_text(json.dumps({"n": self.n, "seconds": (self.last or 0) - (self.first or 0)}))


class Nothing(KeyedProcessFunction):
    def process_element(self, value, ctx):
        return iter(())


def floor_job(kafka: KafkaSettings, workdir: str, out: str, mode: str, parts: tuple[str, ...] = ()) -> None:
    import functools

    from pyflink.common import Types
    from pyflink.datastream.connectors.base import Sink
    from pyflink.java_gateway import get_gateway

    from pipelines.stream.driver import bind_to_parent, environment
    from pipelines.stream.io import kafka_lines, kafka_sink, watermarks
    from pipelines.stream.keyed import item_key
    from pipelines.stream.runtime import parse_line, route_key

    bind_to_parent()
    cfg = StreamConfig(workdir=Path(workdir), kafka=kafka, python_mode=mode)
    env, _ = environment(cfg)
    parsed = kafka_lines(env, cfg.kafka, watermarks(300_000, 30_000), bounded=True).map(
        functools.partial(parse_line, now_ms=None))
    done = parsed.key_by(route_key, key_type=Types.LONG()).process(Floor(out, parts), output_type=ITEM_TYPE)
    if "+accepted" in parts:
        done.get_side_output(ACCEPTED_LINE).sink_to(kafka_sink(kafka, kafka.accepted_topic, "accepted")).disable_chaining()
    if "+items" in parts:
        done = done.key_by(item_key, key_type=Types.LONG()).process(Nothing())
    done.sink_to(Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()))
    env.execute("floor")


def floor_rate(kafka: KafkaSettings, workdir: Path, mode: str, parts: tuple[str, ...] = ()) -> float:
    """Records/s into the keyed function (in a child process, as the job's driver runs; the job's
    Python execution mode): PyFlink's per-record floor on this topic, or a shape step's rate."""
    out = workdir / "floor.json"
    out.unlink(missing_ok=True)
    child = multiprocessing.get_context("spawn").Process(target=floor_job,
                                                         args=(kafka, str(workdir), str(out), mode, parts))
    child.start()
    child.join()
    if child.exitcode != 0 or not out.exists():
        what = " ".join(parts) or "floor"
        raise SystemExit(f"the {what} job failed (exit code {child.exitcode}); its log is above")
    got = json.loads(out.read_text())
    return got["n"] / got["seconds"]
