"""Backfill speed and memory: `recstream backfill` (the local engine, --workers threads) against
its Beam engine and against the same computation written directly (features.validate_arrow +
features.offline in one process, no engine), in one run; plus point-in-time retrieval rows/s.
Each measurement runs in its own process so peak memory is its own. Each synthetic event count
runs twice: with the usual ~240 events per user, and with --user-factor times more users (so
~240/factor events each), to show whether memory grows with the number of users beyond the output.

    .venv/bin/python bench/backfill_bench.py --events 1000000 --workers 2 [--events 10000000] [--movielens PATH]

--parquet: the same synthetic events written as Parquet, and on them, each in its own process:
the backfill (local engine, --workers threads), the Beam engine (DirectRunner; --workers N > 1
adds N multi-processing workers), the direct reference, and DuckDB computing the core outputs in
SQL (bench/backfill_duckdb.py: validation, dedup, user sequences, user and item statistics) on
--workers threads (SET threads; DuckDB's own default is every core). DuckDB's outputs must equal
both engines' for every user and item, or the bench fails. It prints events/s of each and each
engine's speed as a fraction of DuckDB's (target for the backfill: >= 0.5).

    .venv/bin/python bench/backfill_bench.py --events 1000000 --parquet --user-factor 1 [--workers 2]
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


def make_raw(folder: Path, events: int, seed: int = 0, user_factor: int = 1) -> int:
    from pipelines.sources.raw_files import write_json_lines
    from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

    # ~240 events per user over 30 days; users scale with the event count (and the factor: the
    # stream is cut at the event count, so more users means fewer events each, over fewer days).
    cfg = SyntheticConfig(users=max(10, events // 240) * user_factor, items=max(1000, events // 50), seed=seed)

    def lines():
        n = 0
        for window, _ in SyntheticStream(cfg).windows():
            for line in window:
                if n == events:
                    return
                yield line
                n += 1
    return write_json_lines(lines(), folder)


AS_OF_MS = 1_706_745_600_000  # 2024-02-01: after the synthetic month, so every event counts in the statistics
RAW_SCHEMA = {"user_id": "int64", "item_id": "int64", "category_id": "int64", "event_type": "string",
              "timestamp": "int64", "request_id": "string", "position": "int64", "event_id": "string"}


def make_parquet(folder: Path, events: int, seed: int = 0, user_factor: int = 1, duplicates: float = 0.0) -> int:
    """make_raw's events written as Parquet, one file per JSON-lines file, in the synthetic source's
    types (RAW_SCHEMA). ``duplicates``: that fraction of each file's rows appended again, half as
    exact redeliveries and half as copies of the event_id with another item, type and time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    lines = folder.parent / (folder.name + "-jsonl")
    make_raw(lines, events, seed, user_factor)
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in RAW_SCHEMA.items()])
    folder.mkdir(parents=True, exist_ok=True)
    rng, count = np.random.default_rng(seed), 0
    for path in sorted(lines.glob("*.jsonl")):
        table = pj.read_json(path, parse_options=pj.ParseOptions(explicit_schema=schema)).select(schema.names)
        copies = table.take(pa.array(rng.choice(table.num_rows, int(table.num_rows * duplicates))))
        altered = copies.slice(len(copies) // 2)
        altered = altered.set_column(1, "item_id", pc.add(altered.column("item_id"), 1)) \
            .set_column(3, "event_type", pa.array(rng.choice(["impression", "click", "view"], len(altered)))) \
            .set_column(4, "timestamp", pc.add(altered.column("timestamp"), pa.array(rng.choice([0, 7], len(altered)))))
        table = pa.concat_tables([table, copies.slice(0, len(copies) // 2), altered])
        pq.write_table(table, folder / f"{path.stem}.parquet")
        count += table.num_rows
        path.unlink()
    lines.rmdir()
    return count


def backfill_job(raw: str, out: str, engine: str, workers: int) -> dict:
    """`recstream backfill` on ``engine``: local with ``workers`` threads, or Beam (beam_args)."""
    from pipelines.batch.backfill import BackfillConfig, run_backfill

    cfg = BackfillConfig(input=raw, output=out, stats_as_of_ms=AS_OF_MS)
    if engine == "beam":
        return run_backfill(cfg, beam_args(workers), engine="beam")
    return run_backfill(cfg, engine="local", workers=workers)


def beam_args(workers: int) -> list[str]:
    """Beam's options for ``workers``: none (DirectRunner as it comes) for 1, else N multi-processing workers."""
    return [] if workers == 1 else [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]


def direct_job(raw: str, out: str, workers: int) -> dict:
    """The reference: the same validation and table builders, one process, no Beam."""
    import glob

    import pyarrow as pa
    import pyarrow.parquet as pq

    from features import offline
    from features.labels import LabelPolicy
    from features.sequence import SequencePolicy
    from features.json_lines import line_blocks
    from features.validate_arrow import TABLE_CHUNK_ROWS, event_columns, parse_lines, parse_table
    from pipelines.batch.shards import is_parquet

    chunks, read = [], 0
    for path in sorted(glob.glob(raw)):
        if is_parquet(path):  # as the backfill tells them apart
            with pq.ParquetFile(path) as reader:
                for batch in reader.iter_batches(TABLE_CHUNK_ROWS, columns=event_columns(reader.schema_arrow, path)):
                    chunks.append(parse_table(pa.Table.from_batches([batch])).events)
                    read += batch.num_rows
            continue
        with open(path, "rb") as f:
            for lines in line_blocks(f, 8 << 20):
                chunks.append(parse_lines(lines).events)
                read += len(lines)
    raw_events = pa.concat_tables(chunks)
    del chunks
    table, dropped = offline.dedup(raw_events)
    policy = SequencePolicy()
    log = offline.behavior_log(raw_events, policy)
    tables = {"behavior_log": log, "event_log": offline.event_log(table),
              "user_sequence": offline.lifelong_sequences(raw_events, log, policy),
              "user_recent": offline.latest_sequences(log, 50),
              "user_category_sequence": offline.latest_category_sequences(log, 50),
              "examples": offline.examples(table, LabelPolicy()),
              "user_stats": offline.latest_stats(table, "user_id", AS_OF_MS),
              "item_stats": offline.latest_stats(table, "item_id", AS_OF_MS)}
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, t in tables.items():
        pq.write_table(t, Path(out) / f"{name}.parquet")
    return {"read": read, "accepted": table.num_rows + dropped, "duplicates": dropped}


def historical_job(out: str, rows: int) -> dict:
    import numpy as np
    import pyarrow as pa

    from pipelines.store.historical import historical_features

    users = pa.parquet.read_table(Path(out) / "user_sequence").column("user_id").to_numpy()
    rng = np.random.default_rng(0)
    entities = pa.table({"user_id": rng.choice(users, rows),
                         "timestamp": rng.integers(1_704_067_200_000, 1_706_745_600_000, rows)})
    start = time.perf_counter()
    got = historical_features(Path(out).parent, entities, {"user_sequence": 200, "user_recent": 50,
                                                           "user_category_sequence": 50})
    return {"rows": got.num_rows, "seconds_inner": time.perf_counter() - start}


def pit_scale_job(log_rows: int, rows: int) -> dict:
    """Point-in-time retrieval alone against a synthetic sorted log of log_rows behaviors (and as
    many events), ~240 per user, for ``rows`` entity rows: what historical_job measures, without
    running a backfill of that size first."""
    import numpy as np
    import pyarrow as pa

    from features.historical import point_in_time
    from features.tables import BEHAVIOR_LOG_SCHEMA, EVENT_LOG_SCHEMA

    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, 2**62, max(1, log_rows // 240)))
    user = np.sort(rng.choice(users, log_rows))
    times = 1_704_067_200_000 + rng.integers(0, 30 * 86_400_000, log_rows)
    order = np.lexsort((times, user))
    user, times = user[order], times[order]
    items, codes = rng.integers(0, 10**6, log_rows), rng.integers(1, 8, log_rows).astype(np.int32)
    log = pa.table({"user_id": user, "timestamp": times, "event_id": pa.array(np.arange(log_rows).astype(str)),
                    "item_id": items, "category_id": items % 40, "event_type_code": codes}, schema=BEHAVIOR_LOG_SCHEMA)
    events = pa.table({"user_id": user, "item_id": items, "timestamp": times, "event_type_code": codes},
                      schema=EVENT_LOG_SCHEMA)
    entities = pa.table({"user_id": rng.choice(users, rows),
                         "timestamp": rng.integers(1_704_067_200_000, 1_706_745_600_000, rows)})
    start = time.perf_counter()
    got = point_in_time(entities, log, events, {"user_sequence": 200, "user_recent": 50, "user_category_sequence": 50})
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


def engines(raw: str, folder: Path, workers: int) -> dict[str, tuple[dict, float, float]]:
    """(counts, seconds, peak MiB) of the local engine, the Beam engine and the direct reference on
    ``raw``, writing under folder/offline, folder/beam and folder/direct; their counts must agree."""
    got = {"backfill": measure(backfill_job, raw, str(folder / "offline"), "local", workers),
           "beam": measure(backfill_job, raw, str(folder / "beam"), "beam", workers),
           "direct": measure(direct_job, raw, str(folder / "direct"), 1)}
    for name in ("beam", "direct"):
        check_counts(got["backfill"][0], got[name][0], f"the {name} run")
    return got


def timings(got: dict[str, tuple[dict, float, float]], n: int) -> dict:
    """<engine>_s, <engine>_events_per_s and <engine>_peak_mib of each measured engine."""
    row = {}
    for name, (_, seconds, peak) in got.items():
        row |= {f"{name}_s": round(seconds, 1), f"{name}_events_per_s": round(n / seconds),
                f"{name}_peak_mib": round(peak)}
    return row


def run(events: int, movielens: str | None, workers: int, history_rows: int, user_factor: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = []
        if events:
            sources.append((f"synthetic {events:,}", max(10, events // 240), lambda f: make_raw(f, events)))
            if user_factor > 1:
                users = max(10, events // 240) * user_factor
                sources.append((f"synthetic {events:,} x{user_factor} users", users,
                                lambda f: make_raw(f, events, user_factor=user_factor)))
        if movielens:
            def ml(folder, path=movielens):
                from pipelines.sources.ingest import ingest
                from pipelines.sources.synthetic import SyntheticConfig
                got = ingest("ml-latest-small", Path(path), SyntheticConfig(), folder.parent.parent, 0.0)
                return got.backfill_records
            sources.append(("ml-latest-small", 610, ml))
        for k, (name, users, make) in enumerate(sources):
            raw = tmp / f"source{k}" / "raw" / "backfill"
            start = time.perf_counter()
            n = make(raw)
            gen = time.perf_counter() - start
            got = engines(str(raw / "*.jsonl"), raw.parent.parent, workers)
            hist, hist_s, _ = measure(historical_job, str(raw.parent.parent / "offline"), history_rows)
            out_bytes = folder_bytes(raw.parent.parent / "offline")
            rows.append({"data": name, "events": n, "users": users, "workers": workers, "generate_s": round(gen, 1),
                         **timings(got, n),
                         "backfill_over_direct": round(got["backfill"][1] / got["direct"][1], 2),  # time ratio
                         "output_bytes_per_event": round(out_bytes / max(n, 1), 1),
                         "historical_rows": hist["rows"],
                         "historical_rows_per_s": round(hist["rows"] / hist["seconds_inner"])})
            print(json.dumps(rows[-1]), flush=True)
    return rows


class BenchMismatch(AssertionError):
    """Two engines of the bench disagree on the same input."""


def check_counts(backfill: dict, got: dict, name: str) -> None:
    """The same events read and kept, the same copies dropped, by the backfill and by ``name``;
    else a BenchMismatch naming the counts (an explicit raise: ``python -O`` drops asserts)."""
    keys = ("read", "accepted", "duplicates")
    if tuple(got[k] for k in keys) != tuple(backfill[k] for k in keys):
        raise BenchMismatch(f"{name} counts differ from the backfill's: "
                            + ", ".join(f"{k} {got[k]} vs {backfill[k]}" for k in keys))


def run_parquet(events: int, workers: int, user_factor: int, duplicates: float = 0.0) -> list[dict]:
    """Both engines, the direct reference and DuckDB on the same synthetic events as Parquet, each in
    its own process; DuckDB runs on as many threads as the backfill has workers. DuckDB's user
    sequences and statistics must equal both engines', and every run's counts the backfill's (else
    a BenchMismatch or AssertionError)."""
    from bench.backfill_duckdb import compare, duckdb_job
    from features.sequence import SequencePolicy

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, factor in enumerate(sorted({1, user_factor})):
            folder = Path(tmp) / f"source{k}"
            start = time.perf_counter()
            n = make_parquet(folder / "raw", events, user_factor=factor, duplicates=duplicates)
            gen = time.perf_counter() - start
            files = str(folder / "raw" / "*.parquet")
            got = engines(files, folder, workers)
            got["duckdb"] = measure(duckdb_job, files, str(folder / "duckdb"), SequencePolicy().max_len, AS_OF_MS,
                                    None, workers)
            check_counts(got["backfill"][0], got["duckdb"][0], "DuckDB")
            equal = compare(folder / "offline", folder / "duckdb")  # raises where any user or item differs
            compare(folder / "beam", folder / "duckdb")
            duck_s = got["duckdb"][1]
            rows.append({"data": f"synthetic {events:,} as Parquet" + (f" x{factor} users" if factor > 1 else ""),
                         "events": n, "users": equal["user_stats"], "workers": workers,
                         "beam_args": " ".join(beam_args(workers)), "generate_s": round(gen, 1),
                         **timings(got, n), "duckdb_threads": got["duckdb"][0]["threads"],
                         # speed as a fraction of DuckDB's (events/s over events/s): the backfill's target is
                         # >= 0.5; unrounded (a small run's may be under 0.005), rounded where printed
                         "backfill_over_duckdb": duck_s / got["backfill"][1],
                         "beam_over_duckdb": duck_s / got["beam"][1],
                         "duplicates": got["backfill"][0]["duplicates"], "equal_to_duckdb": equal})
            print(json.dumps({**rows[-1], **{k: float(ratio(rows[-1][k])) for k in SPEEDS}}), flush=True)
    return rows


SPEEDS = ("backfill_over_duckdb", "beam_over_duckdb")


def ratio(value: float) -> str:
    """A speed ratio as printed: 2 decimals, or 2 significant digits below 0.1 (not 0.00)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def parquet_table(rows: list[dict]) -> str:
    out = ["| data | events | users | workers | backfill s | backfill ev/s | Beam ev/s | direct ev/s | DuckDB s "
           "| DuckDB ev/s | backfill/DuckDB speed | Beam/DuckDB speed | backfill MiB | Beam MiB | DuckDB MiB "
           "| equal (users, items) |", "|---" * 16 + "|"]
    for r in rows:
        out.append(f"| {r['data']} | {r['events']:,} | {r['users']:,} | {r['workers']} | {r['backfill_s']} | "
                   f"{r['backfill_events_per_s']:,} | {r['beam_events_per_s']:,} | {r['direct_events_per_s']:,} | "
                   f"{r['duckdb_s']} | {r['duckdb_events_per_s']:,} | {ratio(r['backfill_over_duckdb'])} | "
                   f"{ratio(r['beam_over_duckdb'])} | {r['backfill_peak_mib']} | {r['beam_peak_mib']} | "
                   f"{r['duckdb_peak_mib']} | {r['equal_to_duckdb']['user_sequence']:,}, "
                   f"{r['equal_to_duckdb']['item_stats']:,} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, action="append", help="synthetic event counts (repeatable)")
    p.add_argument("--movielens", help="ml-latest-small folder (e.g. ../shared/data/ml-latest-small)")
    p.add_argument("--workers", type=int, default=1,
                   help="the backfill's threads, Beam's DirectRunner workers and DuckDB's threads")
    p.add_argument("--history-rows", type=int, default=100_000)
    p.add_argument("--user-factor", type=int, default=10,
                   help="also run each event count with this many times more users (1: do not)")
    p.add_argument("--pit-log", type=int, action="append",
                   help="only time point-in-time retrieval against a synthetic log of this many rows (repeatable)")
    p.add_argument("--parquet", action="store_true",
                   help="the events as Parquet: the backfill against DuckDB (and the direct reference), checked equal")
    p.add_argument("--duplicates", type=float, default=0.0,
                   help="--parquet: this fraction of rows appended again as redeliveries and altered copies")
    args = p.parse_args()
    if args.parquet:
        results = [r for n in args.events or [1_000_000] for r in run_parquet(n, args.workers, args.user_factor,
                                                                             args.duplicates)]
        print("\n" + parquet_table(results))
        return
    if args.pit_log:
        for n in args.pit_log:
            got, _, peak = measure(pit_scale_job, n, args.history_rows)
            rate = round(got["rows"] / got["seconds_inner"])
            print(json.dumps({"log_rows": n, "rows": got["rows"], "rows_per_s": rate, "peak_mib": round(peak)}),
                  flush=True)
        return
    results = []
    for i, n in enumerate(args.events or ([0] if args.movielens else [1_000_000])):
        results += run(n, args.movielens if i == 0 else None, args.workers, args.history_rows, args.user_factor)
    print("\n| data | events | users | workers | backfill s | backfill ev/s | Beam s | Beam ev/s | direct s "
          "| direct ev/s | backfill/direct time | backfill MiB | Beam MiB | direct MiB | bytes/event | PIT rows/s |")
    print("|---" * 16 + "|")
    for r in results:
        print(f"| {r['data']} | {r['events']:,} | {r['users']:,} | {r['workers']} | {r['backfill_s']} | "
              f"{r['backfill_events_per_s']:,} | {r['beam_s']} | {r['beam_events_per_s']:,} | {r['direct_s']} | "
              f"{r['direct_events_per_s']:,} | {r['backfill_over_direct']} | {r['backfill_peak_mib']} | "
              f"{r['beam_peak_mib']} | {r['direct_peak_mib']} | {r['output_bytes_per_event']} | "
              f"{r['historical_rows_per_s']:,} |")


if __name__ == "__main__":
    main()
