"""The stream job's online writes alone: item_stats rows (packed, as the job builds them) written
through OnlineTable.write, per row: wall time and this process's CPU time, on Redis with one
script call per key (the old shape: --chunk 1) and per chunk of keys (the store's default),
in the same run, and on SQLite.

    .venv/bin/python bench/online_write.py [--items 500] [--tiles 100] [--rounds 20]

Each round writes every item once, each a little newer than the round before (so every write
goes through); the first round is not counted (connections, script loading). Redis runs on a
redis-server this script starts (127.0.0.1, a free port) and stops by PID.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stream_bench import online_stores  # noqa: E402
from feature_repo import online_stores as stores  # noqa: E402
from features import stats  # noqa: E402
from pipelines.store.feature_store import OnlineStore, apply, open_store  # noqa: E402
from pipelines.store.online_rows import OnlineTable  # noqa: E402
from pipelines.stream.keyed import _item_row  # noqa: E402

BASE_MS = 1_700_000_000_000


def item_states(items: int, tiles: int) -> list:
    rng = random.Random(7)
    out = []
    for _ in range(items):
        state = stats.empty()
        for k in range(tiles):
            stats.add(state, BASE_MS + k * stats.TILE_MS + rng.randrange(stats.TILE_MS), (0,), 1)
        out.append(state)
    return out


def timed_writes(online: OnlineStore, states: list, rounds: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="online-write-"))
    store = open_store(work, online)
    apply(store, work)
    table = OnlineTable(store, "item_stats")
    wall = cpu = 0.0
    for round_ in range(rounds + 1):
        rows = [_item_row(item, state) for item, state in enumerate(states)]
        w0, c0 = time.perf_counter(), time.process_time()
        written = table.write(rows)
        if round_:
            wall, cpu = wall + time.perf_counter() - w0, cpu + time.process_time() - c0
        if written != len(rows):
            raise SystemExit(f"round {round_}: {written} of {len(rows)} rows written; every row was newer")
        for state in states:
            state.newest_ms += 1
    n = rounds * len(states)
    return {"wall_us": wall * 1e6 / n, "cpu_us": cpu * 1e6 / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=500, help="rows per write call")
    p.add_argument("--tiles", type=int, default=100, help="statistics tiles per item (an hour each)")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    states = item_states(args.items, args.tiles)
    print(f"{args.items} item_stats rows per call, {args.tiles} tiles each, {args.rounds} rounds; per row:")
    chunk = stores._CHUNK
    results = {}
    with online_stores("redis") as (online, _):
        for label, size in (("redis, a script call per key", 1), (f"redis, a call per {chunk} keys", chunk)):
            stores._CHUNK = size
            results[label] = timed_writes(online, states, args.rounds)
        stores._CHUNK = chunk
    results["sqlite"] = timed_writes(OnlineStore(), states, args.rounds)
    for label, r in results.items():
        print(f"  {label:32s} {r['wall_us']:6.1f} us wall, {r['cpu_us']:6.1f} us CPU in this process")
    first, second = list(results.values())[:2]
    print(f"per chunk / per key: {second['wall_us'] / first['wall_us']:.2f} wall, "
          f"{second['cpu_us'] / first['cpu_us']:.2f} CPU")


if __name__ == "__main__":
    main()
