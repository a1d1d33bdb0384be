"""Online read latency of a user's sequence through Feast, on SQLite and on Redis, against the
raw store in the same run.

    .venv/bin/python bench/online_bench.py [--lengths 1000,10000] [--calls 300] [--warmup 50] [--json FILE]

For each store (SQLite in a temporary run folder; Redis on a redis-server this script starts
on 127.0.0.1, a free port, no persistence, and stops by PID) and each sequence length, one
synthetic user is written with pipelines.store.feature_store.write_user_sequences after apply, then:

  feast      pipelines.store.feature_store.read_user_sequences(store, [user]): Feast's online store
             interface (online_read), the row unpacked into Python lists, one user per call
  arrays     read_rows(store, "user_sequence", [user], arrays=True): the same read, the row's
             lists as numpy arrays (what `recstream serve` calls: a model takes arrays)
  raw        the same stored row with the plain client: redis HGETALL of Feast's key / a sqlite3
             SELECT of the entity's rows (bytes only, nothing decoded)
  raw+proto  raw, plus parsing the value (one ValueProto holding the packed row,
             features.packed) and unpacking it into Python lists: the floor without Feast

Latencies are per call, in ms (perf_counter_ns), after warm-up calls; p50/p99 over --calls calls.
Then one brief cProfile of the Feast reads on Redis splits a call's time by stage.
Targets (issues): Redis p99 < 5 ms for 1,000 behaviors; with packed rows, Feast p50 within 2x of
the raw read and p99 under 1 ms on a quiet machine.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from feature_repo.definitions import PACKED  # noqa: E402

TARGET_P99_MS = 5.0
TARGET_LENGTH = 1000
USER_BASE = 4_000_000_000_000_000_000  # synthetic user IDs (stable_id-sized int64)
T0 = 1_735_689_600_000


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_ms[min(len(sorted_ms), max(1, math.ceil(q / 100 * len(sorted_ms)))) - 1]


def timed(fn, calls: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        ms.append((time.perf_counter_ns() - t) / 1e6)
    ms.sort()
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": ms[-1], "calls": calls}


def synthetic_row(user_id: int, n: int, seed: int) -> dict:
    """A finalized user_sequence row with n behaviors: hashed-size item/category IDs (int64, so
    protobuf varints are full width, as with features.ids.stable_id), increasing timestamps."""
    rng = random.Random(seed)
    ts = [T0 - (n - i) * 1000 for i in range(n)]
    return {"user_id": user_id, "seq_item_ids": [rng.getrandbits(63) for _ in range(n)],
            "seq_category_ids": [rng.getrandbits(63) for _ in range(n)],
            "seq_event_types": [rng.randrange(1, 7) for _ in range(n)], "seq_timestamps": ts,
            "seq_length": n, "last_event_ms": ts[-1]}


def empty_offline_tables(work: Path) -> None:
    """apply() points FileSources at work/offline; give each table an empty Parquet file."""
    import pyarrow.parquet as pq

    from features.tables import TABLES

    for name, schema in TABLES.items():
        if "feature_ts" in schema.names:
            (work / "offline" / name).mkdir(parents=True, exist_ok=True)
            pq.write_table(schema.empty_table(), work / "offline" / name / "empty.parquet")


def entity_key(user_id: int):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=user_id)])


def decode_packed(blob: bytes) -> dict:
    """The stored ValueProto bytes -> the row as Python values, the way a client without Feast would."""
    from feast.protos.feast.types.Value_pb2 import Value

    from features.packed import unpack

    return unpack("sequence", Value.FromString(blob).bytes_val)


def check_feast_row(got: dict, row: dict) -> None:
    r = got[row["user_id"]]
    assert r is not None and r["seq_length"] == row["seq_length"] and len(r["seq_item_ids"]) == row["seq_length"], \
        "Feast read back something other than what was written"
    assert list(r["seq_item_ids"][-3:]) == row["seq_item_ids"][-3:]


def bench_store(kind: str, store, rows: list[dict], args, extra) -> list[dict]:
    from pipelines.store.feature_store import read_rows, read_user_sequences

    results = []
    for row in rows:
        user, n = row["user_id"], row["seq_length"]
        check_feast_row(read_user_sequences(store, [user]), row)
        feast = timed(lambda: read_user_sequences(store, [user]), args.calls, args.warmup)
        assert list(read_rows(store, "user_sequence", [user], arrays=True)[0]["seq_item_ids"]) == row["seq_item_ids"]
        arrays = timed(lambda: read_rows(store, "user_sequence", [user], arrays=True), args.calls, args.warmup)
        raw_fn, proto_fn = extra(row)
        raw = timed(raw_fn, args.calls, args.warmup)
        proto = timed(proto_fn, args.calls, args.warmup)
        rec = {"store": kind, "behaviors": n, "feast": feast, "feast_arrays": arrays, "raw": raw, "raw_proto": proto,
               "ratio_p50": feast["p50"] / raw["p50"], "ratio_p99": feast["p99"] / raw["p99"],
               "arrays_ratio_p50": arrays["p50"] / raw["p50"]}
        results.append(rec)
        print(f"  {kind:6} {n:>6}: feast p50 {feast['p50']:.3f} p99 {feast['p99']:.3f} ms; arrays p50 "
              f"{arrays['p50']:.3f}; raw p50 {raw['p50']:.3f} p99 {raw['p99']:.3f} ms", file=sys.stderr)
    return results


def sqlite_extras(store, work: Path):
    from feast.infra.key_encoding_utils import serialize_entity_key

    conn = sqlite3.connect(str(work / "feast" / "online.db"))  # one open connection, as Feast keeps one
    table = f"{store.config.project}_user_sequence"
    sql = f'SELECT feature_name, value FROM "{table}" WHERE entity_key = ?'

    def extra(row):
        key = serialize_entity_key(entity_key(row["user_id"]), entity_key_serialization_version=3)
        assert len(conn.execute(sql, (key,)).fetchall()) == 1, "raw SELECT does not find the Feast row"

        def proto():
            got = decode_packed(conn.execute(sql, (key,)).fetchall()[0][1])
            assert len(got["seq_item_ids"]) == row["seq_length"]
        return (lambda: conn.execute(sql, (key,)).fetchall()), proto
    return extra


def redis_extras(store, client):
    from feast.infra.online_stores.helpers import _mmh3, _redis_key

    field = _mmh3(f"user_sequence:{PACKED}")  # Feast's hash field name of the packed value

    def extra(row):
        key = _redis_key(store.config.project, entity_key(row["user_id"]), entity_key_serialization_version=3)
        fields = client.hgetall(key)
        assert field in fields, f"raw HGETALL does not find the Feast hash's packed value ({len(fields)} fields)"

        def proto():
            got = decode_packed(client.hgetall(key)[field])
            assert len(got["seq_item_ids"]) == row["seq_length"]
        return (lambda: client.hgetall(key)), proto
    return extra


def profile_feast(store, user: int, calls: int) -> dict:
    """cProfile `calls` Feast reads; each stage's share of the profiled time (ms per call)."""
    from pipelines.store.feature_store import read_user_sequences

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        read_user_sequences(store, [user])
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)

    def cum(file_part: str, name: str) -> float:
        return sum(v[3] for (f, _, n), v in stats.items() if file_part in f and n == name)

    def top_level(file_part: str) -> float:  # cumtime of functions under file_part not called from there
        return sum(v[3] for (f, _, _), v in stats.items()
                   if file_part in f and not any(file_part in c[0] for c in v[4]))

    total = cum("pipelines/store/feature_store.py", "read_user_sequences")
    stages = {
        "Redis HMGET round trip (redis-py pipeline)": cum("online_stores/redis.py", "_read_hash_fields"),
        "protobuf parse (ValueProto.ParseFromString)": sum(v[2] for (_, _, n), v in stats.items()
                                                           if "ParseFromString" in n),
        "unpack the row into lists (features.packed)": cum("features/packed.py", "unpack"),
        "entity key protos": cum("pipelines/store/online_rows.py", "entity_key"),
        "redis keys and hash fields (Feast)": cum("online_stores/redis.py", "_generate_redis_keys_for_entities")
        + cum("online_stores/redis.py", "_generate_hset_keys_for_features"),
        "registry lookups": top_level("feast/infra/registry"),
    }
    stages["everything else"] = max(0.0, total - sum(stages.values()))
    per_call = {k: 1e3 * v / calls for k, v in stages.items()}
    return {"calls": calls, "profiled_ms_per_call": 1e3 * total / calls, "stages_ms_per_call": per_call}


def registry_refresh_ms(store) -> float:
    t = time.perf_counter_ns()
    store.refresh_registry()
    return (time.perf_counter_ns() - t) / 1e6


def versions(redis_binary: str) -> dict:
    import feast
    import google.protobuf
    import redis

    server = subprocess.run([redis_binary, "--version"], capture_output=True, text=True).stdout.split()
    return {"python": platform.python_version(), "feast": feast.__version__, "redis_client": redis.__version__,
            "protobuf": google.protobuf.__version__,
            "redis_server": next((w.split("=")[1] for w in server if w.startswith("v=")), "?"),
            "cpus": os.cpu_count(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}


def print_table(results: list[dict]) -> None:
    head = ("| store  | behaviors | Feast p50 | Feast p99 | arrays p50 | arrays p99 | raw p50 | raw p99 | Feast/raw p50 "
            "| arrays/raw p50 | Feast/raw p99 | raw+decode p50 | raw+decode p99 |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in results:
        print(f"| {r['store']:6} | {r['behaviors']:>9,} | {r['feast']['p50']:9.3f} | {r['feast']['p99']:9.3f} "
              f"| {r['feast_arrays']['p50']:10.3f} | {r['feast_arrays']['p99']:10.3f} "
              f"| {r['raw']['p50']:7.3f} | {r['raw']['p99']:7.3f} | {r['ratio_p50']:13.2f} "
              f"| {r['arrays_ratio_p50']:14.2f} | {r['ratio_p99']:13.2f} "
              f"| {r['raw_proto']['p50']:14.3f} | {r['raw_proto']['p99']:14.3f} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1000,10000", help="behaviors per user, comma-separated")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls before each measurement")
    parser.add_argument("--profile-calls", type=int, default=100, help="Feast reads under cProfile (0: none)")
    parser.add_argument("--json", help="also write the results as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",") if x]

    import redis

    from pipelines.store.feature_store import OnlineStore, apply, open_store, write_user_sequences
    from pipelines.embedded.redis import RedisServer, redis_server_binary
    from pipelines.processes import pid_alive

    binary = redis_server_binary()
    if binary is None:
        sys.exit("redis-server not found (/usr/bin/redis-server): apt-get install -y redis-server")
    rows = [synthetic_row(USER_BASE + n, n, seed=n) for n in lengths]
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": "python bench/online_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "versions": versions(binary), "target": {"store": "redis", "behaviors": TARGET_LENGTH,
                                                    "p99_ms_below": TARGET_P99_MS}, "results": []}
    with tempfile.TemporaryDirectory(prefix="online-bench-") as tmp:
        work = Path(tmp)
        empty_offline_tables(work)

        sqlite_store = open_store(work)
        apply(sqlite_store, work)
        assert write_user_sequences(sqlite_store, rows) == len(rows)
        out["results"] += bench_store("sqlite", sqlite_store, rows, args, sqlite_extras(sqlite_store, work))

        server = RedisServer().start()
        try:
            redis_store = open_store(work, OnlineStore(kind="redis", redis_url=server.address))
            apply(redis_store, work)
            assert write_user_sequences(redis_store, rows) == len(rows)
            client = redis.Redis(host="127.0.0.1", port=server.port)
            out["results"] += bench_store("redis", redis_store, rows, args, redis_extras(redis_store, client))
            if args.profile_calls:
                out["profile"] = {str(r["seq_length"]): profile_feast(redis_store, r["user_id"], args.profile_calls)
                                  for r in rows}
            out["registry_refresh_ms"] = registry_refresh_ms(redis_store)
            out["registry_cache_ttl_s"] = redis_store.config.registry.cache_ttl_seconds
            client.close()
        finally:
            pid = server.pid
            server.close()
        assert not pid_alive(pid), f"redis-server pid {pid} still running"

    target = next((r for r in out["results"] if r["store"] == "redis" and r["behaviors"] == TARGET_LENGTH), None)
    out["target"]["p99_ms"] = target["feast"]["p99"] if target else None
    out["target"]["met"] = bool(target and target["feast"]["p99"] < TARGET_P99_MS)
    if target:
        out["target"]["packed_p50_ratio"] = target["ratio_p50"]
        out["target"]["packed_met"] = bool(target["ratio_p50"] <= 2 and target["feast"]["p99"] < 1)
        out["target"]["arrays_p50_ratio"] = target["arrays_ratio_p50"]
        out["target"]["arrays_met"] = bool(target["arrays_ratio_p50"] <= 2 and target["feast_arrays"]["p99"] < 1)

    v = out["versions"]
    print(f"\nonline read latency, one user per call, ms ({args.calls} calls after {args.warmup} warm-up; "
          f"{out['date']}; feast {v['feast']}, redis-py {v['redis_client']}, redis-server {v['redis_server']}, "
          f"python {v['python']}, {v['cpus']} CPUs, load {v['loadavg_1m_at_start']})\n")
    print_table(out["results"])
    if target:
        print(f"\ntarget: Redis p99 < {TARGET_P99_MS:g} ms at {TARGET_LENGTH:,} behaviors: "
              f"{'MET' if out['target']['met'] else 'NOT MET'} (p99 {target['feast']['p99']:.3f} ms)")
        for name, key, ratio in (("lists", "feast", "ratio_p50"), ("arrays", "feast_arrays", "arrays_ratio_p50")):
            met = target[ratio] <= 2 and target[key]["p99"] < 1
            print(f"target: packed rows, Feast p50 within 2x of raw and p99 < 1 ms at {TARGET_LENGTH:,} behaviors, "
                  f"read as {name}: {'MET' if met else 'NOT MET'} ({target[ratio]:.2f}x, p99 {target[key]['p99']:.3f} ms)")
    for n, prof in out.get("profile", {}).items():
        print(f"\nwhere a Feast read on Redis spends its time, {int(n):,} behaviors (cProfile, {prof['calls']} calls, "
              f"{prof['profiled_ms_per_call']:.2f} ms/call with profiler overhead):")
        for stage, ms in sorted(prof["stages_ms_per_call"].items(), key=lambda kv: -kv[1]):
            print(f"  {ms:7.3f} ms  {100 * ms / prof['profiled_ms_per_call']:5.1f}%  {stage}")
    print(f"\nregistry refresh (file registry, every {out['registry_cache_ttl_s']} s on the serving path): "
          f"{out['registry_refresh_ms']:.2f} ms")
    if args.json:
        text = json.dumps(out, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
