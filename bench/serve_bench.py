"""`recstream serve` latency and throughput at 1,000-behavior users, against the online read alone.

    .venv/bin/python bench/serve_bench.py [--users 20] [--behaviors 1000] [--candidates 100] [--calls 300]

Builds a small run (synthetic backfill, a DIN ranker trained for 40 steps, registered and
promoted), writes --users users with --behaviors behaviors each into the online store (SQLite),
starts `recstream serve` as a subprocess on 127.0.0.1 and measures, after warm-up:

  read    pipelines.store.feature_store.read_rows(store, "user_sequence", [user]) in this
          process: the Feast online read each /rank request makes (the floor)
  rank    POST /rank with --candidates items over HTTP (urllib, one connection per call),
          one call at a time: p50/p99 per call
  load    --threads clients calling /rank back to back for --seconds: requests per second

Figures are per call, in ms; ratios are against the read's p50 in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.online_bench import timed  # noqa: E402  (p50 / p99 per call in ms, after warm-up calls)


def build_run(work: Path, users: int, behaviors: int) -> list[str]:
    """A backfilled run with a champion ranker, and ``users`` raw user IDs with ``behaviors`` each online."""
    import pyarrow.dataset as ds

    from features.ids import stable_id
    from features.pit import sort_log
    from pipelines.batch.backfill import BackfillConfig, run_backfill
    from pipelines.config import to_dict
    from pipelines.sources.raw_files import write_json_lines
    from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream
    from pipelines.store.feature_store import apply, open_store, write_user_sequences
    from trainers.ranking.train import TrainConfig, train
    from trainers.registry import Registry

    stream = SyntheticStream(SyntheticConfig(users=60, items=2_000, days=6))
    write_json_lines((line for lines, _ in stream.windows() for line in lines), work / "raw")
    run_backfill(BackfillConfig(input=str(work / "raw" / "*.jsonl"), output=str(work / "offline")))
    examples = ds.dataset(work / "offline" / "examples", format="parquet").to_table()
    log = sort_log(ds.dataset(work / "offline" / "behavior_log", format="parquet").to_table())
    cfg = TrainConfig(model="din", steps=40, batch_size=128, threads=1, seed=0)
    state = train(examples, examples.slice(0, 0), log, cfg).state_dict
    registry = Registry(work / "registry")
    registry.promote("ranker", registry.register("ranker", state, {"config": to_dict(cfg)}, why="bench"), why="bench")
    store = open_store(work)
    apply(store, work)
    items = log.column("item_id").to_numpy()
    cats = log.column("category_id").to_numpy()
    raw, rows, t0 = [f"bench-{n}" for n in range(users)], [], int(log.column("timestamp").to_numpy().max())
    for n, user in enumerate(raw):
        rng = random.Random(n)
        picks = [rng.randrange(len(items)) for _ in range(behaviors)]
        times = [t0 - (behaviors - i) * 60_000 for i in range(behaviors)]
        rows.append({"user_id": stable_id(user), "seq_item_ids": [int(items[p]) for p in picks],
                     "seq_category_ids": [int(cats[p]) for p in picks],
                     "seq_event_types": [2] * behaviors, "seq_timestamps": times, "seq_length": behaviors,
                     "last_event_ms": times[-1]})
    write_user_sequences(store, rows)
    return raw


def post(port: int, body: bytes) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/rank", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.loads(answer.read())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--behaviors", type=int, default=1000)
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)

    from features.ids import stable_id
    from pipelines.processes import free_port
    from pipelines.store.feature_store import open_store, read_rows

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        print("building the run (backfill, a 40-step ranker, online sequences) ...", flush=True)
        users = build_run(work, args.users, args.behaviors)
        store = open_store(work)
        hashed = [stable_id(u) for u in users]
        read = timed(lambda: read_rows(store, "user_sequence", [random.choice(hashed)]), args.calls, 20)
        assert read_rows(store, "user_sequence", [hashed[0]])[0]["seq_length"] == args.behaviors
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--workdir", str(work),
                                   "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            bodies = [json.dumps({"user_id": u, "items": list(range(args.candidates))}).encode() for u in users]
            deadline = time.monotonic() + 120
            while True:
                try:
                    got = post(port, bodies[0])
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        sys.exit("recstream serve did not come up")
                    time.sleep(0.3)
            assert got["history_length"] == args.behaviors and len(got["ranking"]) == args.candidates
            rank = timed(lambda: post(port, random.choice(bodies)), args.calls, 20)
            done, stop = [0] * args.threads, threading.Event()

            def client(i: int) -> None:
                while not stop.is_set():
                    post(port, bodies[i % len(bodies)])
                    done[i] += 1
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.threads)]
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join()
            per_s = sum(done) / args.seconds
        finally:
            server.terminate()
            server.wait(timeout=30)
    out = {"behaviors": args.behaviors, "candidates": args.candidates, "read": read, "rank": rank,
           "requests_per_s": round(per_s, 1), "threads": args.threads,
           "rank_p50_over_read_p50": round(rank["p50"] / read["p50"], 1)}
    print(f"online read alone ({args.behaviors} behaviors): p50 {read['p50']:.2f} ms, p99 {read['p99']:.2f} ms")
    print(f"POST /rank ({args.candidates} candidates):   p50 {rank['p50']:.2f} ms, p99 {rank['p99']:.2f} ms "
          f"({out['rank_p50_over_read_p50']}x the read's p50)")
    print(f"throughput: {out['requests_per_s']} requests/s with {args.threads} clients for {args.seconds:.0f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
