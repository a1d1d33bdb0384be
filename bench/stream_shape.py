"""What the stream job's shape costs before any feature logic: PyFlink's floor (as bench/stream_bench.py
measures it), then the same keyed no-op function given, one at a time, what the job's user
operator does per event through PyFlink's API, with nothing computed (bench/stream_floor.py):

    floor      source -> validate -> key by user -> keyed function doing nothing
    +accepted  and one side output per event (the accepted record, to its own Kafka sink)
    +state     and a ValueState write per event (a value as costly to pickle as the bench's mean
               user state: 15 us)
    +items     and one record per event keyed by item into a second keyed function doing nothing

Each runs over the same topic; the rate is records/s into the first keyed function (first to
last record). If the shape alone stays under a target ratio, no work on the feature logic
reaches it.

    .venv/bin/python bench/stream_shape.py [--events 100000] [--python-mode thread]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stream_bench import synthetic_lines  # noqa: E402
from bench.stream_floor import SHAPE_STEPS, floor_rate  # noqa: E402
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker  # noqa: E402


def main() -> None:
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
        for i in range(len(SHAPE_STEPS) + 1):
            parts = SHAPE_STEPS[:i]
            rate = floor_rate(broker.kafka(group_id=f"shape-{i}"), Path(tmp), args.python_mode, parts)
            floor = floor or rate
            print(json.dumps({"step": parts[-1] if parts else "floor", "events": len(lines),
                              "events_per_s": round(rate), "over_floor": round(rate / floor, 3)}), flush=True)


if __name__ == "__main__":
    main()
