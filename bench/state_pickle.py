"""What a checkpoint pays per key: the stream job's user and item states built from the
stream benchmark's synthetic events by the feature code (features.user_state, features.stats),
then pickled as the job's keyed state is (PyFlink pickles each value with ``pickle.dumps``).

    .venv/bin/python bench/state_pickle.py [--events 150000] [--rounds 3]

Prints, per user and per item state, the pickling time (the best of --rounds passes over every
state) and the pickled bytes. The job saves each changed key at the mark before every checkpoint
barrier, so these times the changed keys are the checkpoint's stall (docs/streaming.md).
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stream_bench import synthetic_lines  # noqa: E402
from features import stats, user_state  # noqa: E402
from features.schema import Event  # noqa: E402
from features.user_state import FeaturePolicy  # noqa: E402
from features.validate import parse_event  # noqa: E402
from pipelines.stream.config import StreamConfig  # noqa: E402


def states(lines: list[str], policy: FeaturePolicy, behind_ms: int) -> tuple[list, list]:
    """Every user's state and every item's, as the job holds them (started fresh): a copy settles,
    and an event is late, behind_ms below the newest event (the job: its watermark, the newest
    less the out-of-orderness, less the allowed lateness)."""
    users, items, newest = {}, {}, 0
    for line in lines:
        event = parse_event(line)
        if not isinstance(event, Event):
            continue
        newest = max(newest, event.timestamp)
        settled_ms = newest - behind_ms
        if event.timestamp < settled_ms:
            continue  # late: dead-lettered
        state = users.get(event.user_id)
        if state is None:
            state = users[event.user_id] = user_state.bootstrap(policy, {})
        category = user_state.needs_category(state, event, policy)
        if category is not None:
            user_state.add_category(state, category, None, policy)
        applied = user_state.apply(state, event, policy, settled_ms)
        for item, ts, kinds, sign in applied.item_deltas if applied else ():
            stats.add(items.setdefault(item, stats.empty()), ts, kinds, sign)
    return list(users.values()), list(items.values())


def cost(values: list, rounds: int) -> dict:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        blobs = [pickle.dumps(v) for v in values]
        best = min(best, time.perf_counter() - started)
    return {"keys": len(values), "us_per_key": round(best * 1e6 / len(values), 1),
            "bytes_per_key": round(sum(map(len, blobs)) / len(values))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=150_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    behind_ms = StreamConfig.out_of_orderness_ms + StreamConfig.allowed_lateness_ms  # the defaults, the benchmark's
    users, items = states(synthetic_lines(args.events), FeaturePolicy(), behind_ms)
    print(json.dumps({"events": args.events, "user": cost(users, args.rounds), "item": cost(items, args.rounds)}))


if __name__ == "__main__":
    main()
