"""Held-back raw events as the stream job emits them, for replays into the loop (benchmarks, tests).

The stream job's accepted-record output is every valid event as it came, and its training-example
stream is its click join (pipelines.stream.examples.ClickJoin, held to the batch's labels by the
parity tests), each example emitted once its attribution window has passed. So a slice of history can be replayed into the
loop (as files, or produced into Kafka topics) without running the job:

    accepted, examples = stream_outputs(lines, LabelPolicy())
    write_folders(workdir, accepted, examples)       # WORKDIR/stream_accepted, WORKDIR/stream_examples
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from features.labels import LabelPolicy
from features.schema import Event
from features.validate import parse_event
from pipelines.stream.examples import ClickJoin, example_json


def stream_outputs(lines, labels: LabelPolicy, now_ms: int | None = None,
                   examples: bool = True) -> tuple[list[bytes], list[bytes]]:
    """(accepted records, example records) of raw event lines, in the order the job emits them:
    accepted in input order, examples by the time their label became known."""
    accepted, joins = [], defaultdict(ClickJoin)
    for line in lines:
        raw = line.encode() if isinstance(line, str) else line
        got = parse_event(raw, now_ms)
        if not isinstance(got, Event):
            continue
        accepted.append(raw)
        if examples:
            joins[got.user_id].add(got)
    out = [ex for user, join in joins.items() for ex in join.due(user, 2**62, labels.window_ms)]
    out.sort(key=lambda e: (e[5], e[0], e[3], e[6]))
    return accepted, [example_json(e).encode() for e in out]


def write_folders(workdir: Path, accepted: list[bytes], examples: list[bytes], files: int = 1,
                  name: str = "replay") -> None:
    """The records as the stream job's files mode writes them: JSON lines in WORKDIR/stream_accepted
    and WORKDIR/stream_examples, split over ``files`` files per folder (in order)."""
    for folder, values in (("stream_accepted", accepted), ("stream_examples", examples)):
        out = Path(workdir) / folder
        out.mkdir(parents=True, exist_ok=True)
        per = max(1, -(-len(values) // files))
        for i in range(0, max(len(values), 1), per):
            chunk = values[i:i + per]
            if chunk:
                (out / f"{name}-{i // per:04d}.jsonl").write_bytes(b"".join(v + b"\n" for v in chunk))
