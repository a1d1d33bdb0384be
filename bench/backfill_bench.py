"""Backfill speed and memory: the Beam job against the same computation written directly
(parse_event + features.offline in one process, no Beam), in one run; plus point-in-time
retrieval rows/s. Each measurement runs in its own process so peak memory is its own.

    .venv/bin/python bench/backfill_bench.py --events 1000000 [--events 10000000] [--movielens PATH]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_raw(folder: Path, events: int, seed: int = 0) -> int:
    from pipelines.sources.raw_files import write_json_lines
    from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

    # ~240 events per user over 30 days; users scale with the event count.
    cfg = SyntheticConfig(users=max(10, events // 240), items=max(1000, events // 50), seed=seed)

    def lines():
        n = 0
        for window, _ in SyntheticStream(cfg).windows():
            for line in window:
                if n == events:
                    return
                yield line
                n += 1
    return write_json_lines(lines(), folder)


def beam_job(raw: str, out: str, workers: int) -> dict:
    from pipelines.backfill import BackfillConfig, run_backfill

    args = [] if workers == 1 else [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return run_backfill(BackfillConfig(input=raw, output=out, stats_as_of_ms=1_706_745_600_000), args)


def direct_job(raw: str, out: str, workers: int) -> dict:
    """The reference: the same validation and table builders, one process, no Beam."""
    import glob

    import pyarrow.parquet as pq

    from features import offline
    from features.labels import LabelPolicy
    from features.schema import Rejection, events_to_table
    from features.sequence import SequencePolicy
    from features.validate import parse_event

    events, rejected = [], 0
    for path in sorted(glob.glob(raw)):
        with open(path, "rb") as f:
            for line in f:
                got = parse_event(line.rstrip(b"\n"))
                if isinstance(got, Rejection):
                    rejected += 1
                else:
                    events.append(got)
    table, dropped = offline.dedup(events_to_table(events))
    log = offline.behavior_log(table, SequencePolicy())
    tables = {"behavior_log": log, "event_log": offline.event_log(table),
              "user_sequence": offline.latest_sequences(log, 200), "user_recent": offline.latest_sequences(log, 50),
              "user_category_sequence": offline.latest_category_sequences(log, 50),
              "examples": offline.examples(table, LabelPolicy()),
              "user_stats": offline.latest_stats(table, "user_id", 1_706_745_600_000),
              "item_stats": offline.latest_stats(table, "item_id", 1_706_745_600_000)}
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, t in tables.items():
        pq.write_table(t, Path(out) / f"{name}.parquet")
    return {"read": len(events) + rejected, "accepted": len(events), "duplicates": dropped}


def historical_job(out: str, rows: int) -> dict:
    import numpy as np
    import pyarrow as pa

    from pipelines.historical import historical_features

    users = pa.parquet.read_table(Path(out) / "user_sequence").column("user_id").to_numpy()
    rng = np.random.default_rng(0)
    entities = pa.table({"user_id": rng.choice(users, rows),
                         "timestamp": rng.integers(1_704_067_200_000, 1_706_745_600_000, rows)})
    start = time.perf_counter()
    got = historical_features(Path(out).parent, entities, {"user_sequence": 200, "user_recent": 50,
                                                           "user_category_sequence": 50})
    return {"rows": got.num_rows, "seconds_inner": time.perf_counter() - start}


def _child(fn, args, queue):
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    # This process, or the largest of its own (reaped) workers: Beam's multi-process workers.
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    queue.put((result, seconds, peak))


def measure(fn, *args) -> tuple[dict, float, float]:
    """(result, seconds, peak RSS in MiB) of fn(*args) in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, queue))
    p.start()
    while True:
        try:
            result, seconds, rss_kib = queue.get(timeout=5)
            break
        except Exception:  # queue.Empty: a child that died left nothing to wait for
            if not p.is_alive():
                raise RuntimeError(f"{fn.__name__} failed (exit code {p.exitcode}); its traceback is above") from None
    p.join()
    return result, seconds, rss_kib / 1024


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.parquet"))


def run(events: int, movielens: str | None, workers: int, history_rows: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = [(f"synthetic {events:,}", lambda f: make_raw(f, events))] if events else []
        if movielens:
            def ml(folder, path=movielens):
                from pipelines.ingest import ingest
                from pipelines.sources.synthetic import SyntheticConfig
                got = ingest("ml-latest-small", Path(path), SyntheticConfig(), folder.parent.parent, 0.0)
                return got.backfill_records
            sources.append(("ml-latest-small", ml))
        for name, make in sources:
            raw = tmp / name.split()[0] / "raw" / "backfill"
            start = time.perf_counter()
            n = make(raw)
            gen = time.perf_counter() - start
            glob_ = str(raw / "*.jsonl")
            beam, beam_s, beam_mb = measure(beam_job, glob_, str(raw.parent.parent / "offline"), workers)
            ref, ref_s, ref_mb = measure(direct_job, glob_, str(raw.parent.parent / "direct"), 1)
            assert beam["accepted"] == ref["accepted"], (beam, ref)
            hist, hist_s, _ = measure(historical_job, str(raw.parent.parent / "offline"), history_rows)
            out_bytes = folder_bytes(raw.parent.parent / "offline")
            rows.append({"data": name, "events": n, "generate_s": round(gen, 1),
                         "beam_s": round(beam_s, 1), "beam_events_per_s": round(n / beam_s),
                         "direct_s": round(ref_s, 1), "direct_events_per_s": round(n / ref_s),
                         "beam_over_direct": round(beam_s / ref_s, 2),
                         "beam_peak_mib": round(beam_mb), "direct_peak_mib": round(ref_mb),
                         "output_bytes_per_event": round(out_bytes / max(n, 1), 1),
                         "historical_rows": hist["rows"],
                         "historical_rows_per_s": round(hist["rows"] / hist["seconds_inner"])})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, action="append", help="synthetic event counts (repeatable)")
    p.add_argument("--movielens", help="ml-latest-small folder (e.g. ../shared/data/ml-latest-small)")
    p.add_argument("--workers", type=int, default=1, help="DirectRunner workers for the Beam job")
    p.add_argument("--history-rows", type=int, default=100_000)
    args = p.parse_args()
    results = []
    for i, n in enumerate(args.events or ([0] if args.movielens else [1_000_000])):
        results += run(n, args.movielens if i == 0 else None, args.workers, args.history_rows)
    print("\n| data | events | Beam s | Beam ev/s | direct s | direct ev/s | Beam/direct | Beam MiB | direct MiB "
          "| bytes/event | PIT rows/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['data']} | {r['events']:,} | {r['beam_s']} | {r['beam_events_per_s']:,} | {r['direct_s']} | "
              f"{r['direct_events_per_s']:,} | {r['beam_over_direct']} | {r['beam_peak_mib']} | "
              f"{r['direct_peak_mib']} | {r['output_bytes_per_event']} | {r['historical_rows_per_s']:,} |")


if __name__ == "__main__":
    main()
