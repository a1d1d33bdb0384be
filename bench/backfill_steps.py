"""Where the backfill's time goes: each step of the local engine's stages timed on one thread,
in this process, over synthetic Parquet events (the same as bench/backfill_bench.py --parquet).

    .venv/bin/python bench/backfill_steps.py [--events 1000000]

Prints one line per step (seconds summed over shards) and the total. The steps are the calls
pipelines/batch/shards.py makes, in its order, with the same settings as `recstream backfill`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def steps(raw: Path, out: str, shards_n: int = 16) -> dict[str, float]:
    import pyarrow as pa

    from bench.backfill_bench import AS_OF_MS
    from features import offline
    from features.labels import LabelPolicy
    from features.sequence import SequencePolicy
    from pipelines.batch import shards

    seconds: dict[str, float] = defaultdict(float)
    clock = [time.perf_counter()]

    def tick(name: str) -> None:
        now = time.perf_counter()
        seconds[name] += now - clock[0]
        clock[0] = now

    users = defaultdict(list)
    for n, path in enumerate(sorted(raw.glob("*.parquet"))):
        for shard, table in shards.read_file(n, str(path), out, shards_n, None, lambda name, k: None):
            users[shard].append(table)
    tick("read and validate")
    items = defaultdict(list)
    policy = SequencePolicy()
    for shard in sorted(users):
        events_raw = pa.concat_tables(users[shard])
        clock[0] = time.perf_counter()
        events, _ = offline.dedup(events_raw)
        log = offline.behavior_log(events_raw, policy)
        tick("dedup and behavior log")
        tables = {"behavior_log": log, "user_sequence": offline.lifelong_sequences(events_raw, log, policy),
                  "user_recent": offline.latest_sequences(log, 50),
                  "user_category_sequence": offline.latest_category_sequences(log, 50)}
        tick("sequences")
        tables["examples"] = offline.examples(events, LabelPolicy(), None, None)
        tick("examples")
        tables["event_log"] = offline.event_log(events)
        tables["user_stats"] = offline.latest_stats(events, "user_id", AS_OF_MS)
        tick("event log and user statistics")
        conformed = {name: shards.conform(t, name, AS_OF_MS if name == "user_stats" else None)
                     for name, t in tables.items()}
        tick("schemas and packed online rows")
        for name, table in conformed.items():
            shards.write_part(table, out, name, f"{shard:05d}")
        tick("Parquet writes")
        for item, table in shards.split_by_shard(events.select(["item_id", "event_type", "timestamp"]), "item_id",
                                                 shards_n):
            items[item].append(table)
        tick("split by item")
    for item in sorted(items):
        stats = offline.latest_stats(pa.concat_tables(items[item]), "item_id", AS_OF_MS)
        tick("item statistics")
        shards.write_part(shards.conform(stats, "item_stats", AS_OF_MS), out, "item_stats", f"{item:05d}")
        tick("Parquet writes")
    return dict(seconds)


def main() -> None:
    from bench.backfill_bench import make_parquet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n = make_parquet(Path(tmp) / "raw", args.events, user_factor=1)
        got = steps(Path(tmp) / "raw", str(Path(tmp) / "out"))
    width = max(map(len, got))
    for name, s in got.items():
        print(f"{name:<{width}}  {s:6.3f} s")
    print(f"{'total':<{width}}  {sum(got.values()):6.3f} s  ({n:,} events, one thread)")


if __name__ == "__main__":
    main()
