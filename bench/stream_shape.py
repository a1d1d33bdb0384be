"""What the stream job's shape costs before any feature logic: PyFlink's floor (bench/stream_floor.py),
then the same keyed no-op function given, one at a time, what the job's user operator does per
event in PyFlink's API, with nothing computed:

    floor      source -> validate -> key by user -> keyed function doing nothing
    +accepted  and one side output per event (the accepted record, to its own Kafka sink)
    +state     and a ValueState write per event (a value as costly to pickle as the bench's mean
               user state: 15 us, bench/stream_profile.py's workload)
    +items     and one record per event keyed by item into a second keyed function doing nothing

Each runs over the same topic; the rate is records/s into the first keyed function (first to
last record). If the shape alone stays under a target ratio, no work on the feature logic
reaches it.

    .venv/bin/python bench/stream_shape.py [--events 100000] [--python-mode thread]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyflink.datastream import KeyedProcessFunction  # noqa: E402

from pipelines.stream.config import KafkaSettings, StreamConfig  # noqa: E402

STEPS = ("floor", "+accepted", "+state", "+items")
# As costly to pickle as the bench's mean user state (about 15 us): 100 behaviors with their event ids.
STATE = [(1_700_000_000_000 + i, f"{i:08x}-0000-4000-8000-000000000000", 1000 + i, 7, 2) for i in range(100)]


class Shape(KeyedProcessFunction):
    """A keyed function that does nothing but what `parts` names, and notes when its records came."""

    def __init__(self, out: str, parts: tuple[str, ...]):
        self.out, self.parts = out, parts

    def open(self, ctx):
        from pyflink.common import Types
        from pyflink.datastream.state import ValueStateDescriptor

        self.first, self.last, self.n = None, None, 0
        self.state = ctx.get_state(ValueStateDescriptor("s", Types.PICKLED_BYTE_ARRAY())) if "+state" in self.parts \
            else None

    def process_element(self, value, ctx):
        from pipelines.stream.runtime import ACCEPTED

        now = time.perf_counter()
        self.first, self.last, self.n = self.first or now, now, self.n + 1
        line, event = value
        if "+accepted" in self.parts:
            yield ACCEPTED, line
        if self.state is not None:
            self.state.update(STATE)
        if "+items" in self.parts and hasattr(event, "item_id"):
            yield event.item_id, b"\0" * 16

    def close(self):
        Path(self.out).write_text(json.dumps({"n": self.n, "seconds": (self.last or 0) - (self.first or 0)}))


class Nothing(KeyedProcessFunction):
    def process_element(self, value, ctx):
        return iter(())


def shape_job(kafka: KafkaSettings, workdir: str, out: str, mode: str, parts: tuple[str, ...]) -> None:
    import functools

    from pyflink.common import Types
    from pyflink.datastream.connectors.base import Sink
    from pyflink.java_gateway import get_gateway

    from pipelines.stream.driver import bind_to_parent, environment
    from pipelines.stream.io import kafka_lines, kafka_sink, watermarks
    from pipelines.stream.keyed import DELTA_TYPE, item_key
    from pipelines.stream.runtime import ACCEPTED, parse_line, route_key

    bind_to_parent()
    cfg = StreamConfig(workdir=Path(workdir), kafka=kafka, python_mode=mode)
    env, _ = environment(cfg)
    discard = Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())
    parsed = kafka_lines(env, cfg.kafka, watermarks(300_000, 30_000), bounded=True).map(
        functools.partial(parse_line, now_ms=None))
    users = parsed.key_by(route_key, key_type=Types.LONG()).process(Shape(out, parts), output_type=DELTA_TYPE)
    if "+accepted" in parts:
        users.get_side_output(ACCEPTED).sink_to(kafka_sink(kafka, kafka.accepted_topic, "accepted")).disable_chaining()
    if "+items" in parts:
        users = users.key_by(item_key, key_type=Types.LONG()).process(Nothing())
    users.sink_to(discard)
    env.execute("shape")


def shape_rate(kafka: KafkaSettings, workdir: Path, mode: str, parts: tuple[str, ...]) -> float:
    out = workdir / "shape.json"
    out.unlink(missing_ok=True)
    child = multiprocessing.get_context("spawn").Process(target=shape_job,
                                                         args=(kafka, str(workdir), str(out), mode, parts))
    child.start()
    child.join()
    if child.exitcode != 0 or not out.exists():
        raise SystemExit(f"the job {'/'.join(parts) or 'floor'} failed (exit code {child.exitcode}); its log is above")
    got = json.loads(out.read_text())
    return got["n"] / got["seconds"]


def main() -> None:
    from bench import stream_shape  # this module by its name: thread mode imports the functions by it
    from bench.stream_bench import synthetic_lines
    from pipelines.embedded.broker import create_stream_topics, event_records, running_broker

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--python-mode", choices=("thread", "process"), default="thread")
    args = p.parse_args()
    lines = synthetic_lines(args.events)
    with running_broker() as broker, tempfile.TemporaryDirectory(prefix="stream-shape-") as tmp:
        client = broker.client()
        client.create_topic("events", partitions=2)
        create_stream_topics(client, broker.kafka())
        client.produce("events", event_records(lines))
        floor = None
        for i, step in enumerate(STEPS):
            parts = STEPS[1:i + 1]
            rate = stream_shape.shape_rate(broker.kafka(group_id=f"shape-{i}"), Path(tmp), args.python_mode, parts)
            floor = floor or rate
            print(json.dumps({"step": step, "events": len(lines), "events_per_s": round(rate),
                              "over_floor": round(rate / floor, 3)}), flush=True)


if __name__ == "__main__":
    main()
