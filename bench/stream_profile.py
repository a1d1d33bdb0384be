"""Where the stream job's time goes: per-thread CPU of the job's JVM and, with py-spy installed
(`.venv/bin/pip install py-spy`), its Python samples by operator thread and function.

    .venv/bin/python bench/stream_profile.py [--events 60000] [--seconds 15] [--python-mode thread] [--raw FILE] [--gil]
        [--online sqlite|redis]
    .venv/bin/python bench/stream_profile.py --rate-only [--events 150000] [--timeline]   # the job's rate, nothing sampled
    ... [--set FIELD=JSON ...]   # a StreamConfig field changed, e.g. --set item_stats=false

The job follows a backlog of synthetic events on the embedded broker (SQLite online store, or
Redis with --online redis),
as bench/stream_bench.py runs it; once it has sent three count receipts, the JVM that runs
the mini-cluster is sampled for --seconds. In thread mode the Python functions run in that
JVM; in process mode they run in Python workers, which py-spy is pointed at instead.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stream_bench import online_stores, synthetic_lines  # noqa: E402
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker  # noqa: E402
from pipelines.store.feature_store import apply, open_store  # noqa: E402
from pipelines.stream.config import StreamConfig  # noqa: E402
from pipelines.stream.driver import StreamProcess  # noqa: E402


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread name of a process."""
    out: Counter = Counter()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] += (int(fields[11]) + int(fields[12])) / 100
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds so far of a whole process (its ended threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def python_summary(raw: Path, top: int) -> None:
    """py-spy's raw stacks: active samples per Python thread, and each function's inclusive share."""
    per_thread: Counter = Counter()
    functions: dict[str, Counter] = {}
    for line in raw.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        if len(frames) < 2:
            continue  # a thread with no Python frame: it is in the JVM
        per_thread[frames[0]] += int(n)
        seen = {f.split(" (")[0] + " " + f.split("/")[-1].split(":")[0] for f in frames[1:]}
        functions.setdefault(frames[0], Counter()).update({f: int(n) for f in seen})
    for thread, samples in per_thread.most_common():
        print(f"\n{thread}: {samples} active Python samples")
        for name, n in functions[thread].most_common(top):
            print(f"  {100 * n / samples:5.1f}%  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--python-mode", choices=("thread", "process"), default="thread")
    p.add_argument("--top", type=int, default=25, help="functions listed per thread")
    p.add_argument("--raw", type=Path, help="also keep py-spy's raw stacks in this file")
    p.add_argument("--gil", action="store_true", help="only the samples of the thread holding the GIL (in thread "
                                                     "mode every Python function shares one)")
    p.add_argument("--rate-only", action="store_true", help="only the job's rate over the backlog (no sampling)")
    p.add_argument("--timeline", action="store_true", help="also print the events read by each second of the run")
    p.add_argument("--online", choices=("sqlite", "redis"), default="sqlite",
                   help="the online store: the run folder's SQLite, or a redis-server this script starts")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="a StreamConfig field for the job, e.g. --set item_stats=false --set hold_ms=20")
    args = p.parse_args()
    knobs = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    py_spy = Path(sys.executable).parent / "py-spy"
    lines = synthetic_lines(args.events)
    with running_broker() as broker, tempfile.TemporaryDirectory(prefix="stream-profile-") as tmp, \
            online_stores(args.online) as (online, _):
        client = broker.client()
        kafka = broker.kafka(group_id="profile")
        client.create_topic(kafka.topic, partitions=2)
        create_stream_topics(client, kafka)
        client.produce(kafka.topic, event_records(lines))
        work = Path(tmp)
        apply(open_store(work, online), work)
        job = StreamProcess(StreamConfig(workdir=work, kafka=kafka, follow=True, python_mode=args.python_mode,
                                         online=online, **knobs)).start()
        receipts, sampled, cpu_at = [], {}, []

        def progress(counts: dict) -> bool:
            receipts.append((time.perf_counter(), counts["read"]))
            if len(receipts) == 3 and not args.rate_only:
                sampled.update(sample(job.pid, args, py_spy, Path(tmp)))
            done = counts["read"] >= len(lines) and (bool(sampled) or args.rate_only)
            if args.rate_only and (len(receipts) == 1 or done):
                jvm = jvm_of(job.pid)
                cpu_at.append((counts["read"], thread_cpu(jvm), process_cpu(jvm)))
            return done
        job.wait(progress)
        (t0, r0), (t1, r1) = receipts[0], receipts[-1]
        print(f"job: {(r1 - r0) / (t1 - t0):,.0f} events/s over the backlog of {len(lines):,} ({args.python_mode} mode)")
        if args.timeline:
            per_second = Counter()
            for (ta, ra), (tb, rb) in zip(receipts, receipts[1:]):
                per_second[int(tb - t0)] += rb - ra
            print("events read per second of the run:", [per_second[s] for s in range(int(t1 - t0) + 1)])
        if args.rate_only:
            (n0, c0, p0), (n1, c1, p1) = cpu_at[0], cpu_at[-1]
            events = max(n1 - n0, 1)
            ops = {name: (c1[name] - c0.get(name, 0)) * 1e6 / events for name in c1
                   if name.startswith(("user feat", "item stat"))}
            print(f"CPU per event: {sum(ops.values()):.1f} us in the Python operators' threads "
                  f"({', '.join(f'{k.split()[0]} {v:.1f}' for k, v in sorted(ops.items()))}), "
                  f"{(p1 - p0) * 1e6 / events:.1f} us in the whole JVM")
            top = sorted(((c1[name] - c0.get(name, 0)) * 1e6 / events, name) for name in c1)[::-1][:8]
            print("  busiest JVM threads (us per event):", ", ".join(f"{name} {us:.1f}" for us, name in top))
            return
        cpu = sampled["cpu"]
        print(f"\nCPU seconds by JVM thread over {args.seconds:g} s (all threads: {sum(cpu.values()):.1f}):")
        for name, seconds in cpu.most_common(10):
            print(f"  {seconds:6.2f}  {name}")
        if sampled.get("raw") and sampled["raw"].exists():
            python_summary(sampled["raw"], args.top)
            if args.raw:
                args.raw.write_text(sampled["raw"].read_text())
        elif not py_spy.exists():
            print("\n(no Python samples: install py-spy in the environment to get them)")


def jvm_of(driver_pid: int) -> int:
    """The JVM that runs the job's mini-cluster (the gateway JVM under the driver's child)."""
    jvm = subprocess.run(["pgrep", "-P", str(driver_pid), "java"], capture_output=True, text=True).stdout.split()
    if not jvm:
        raise SystemExit(f"no JVM under the driver (pid {driver_pid})")
    return int(jvm[0])


def sample(driver_pid: int, args, py_spy: Path, tmp: Path) -> dict:
    """Sample the job's JVM (the gateway JVM under the driver's child) for args.seconds."""
    jvm = jvm_of(driver_pid)
    target = str(jvm)
    if args.python_mode == "process":
        workers = subprocess.run(["pgrep", "-f", "beam_boot|pyflink.fn_execution"], capture_output=True,
                                 text=True).stdout.split()
        target = workers[0] if workers else target
    raw = tmp / "py-spy.txt"
    spy = None
    if py_spy.exists():
        spy = subprocess.Popen([str(py_spy), "record", "-p", target, "-d", str(int(args.seconds)), "--threads",
                                "-f", "raw", "-o", str(raw), "--nonblocking", *(["--gil"] if args.gil else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = thread_cpu(jvm)
    time.sleep(args.seconds)
    after = thread_cpu(jvm)
    if spy is not None:
        spy.wait(timeout=60)
    return {"cpu": Counter({k: after[k] - before.get(k, 0) for k in after}), "raw": raw if spy else None}


if __name__ == "__main__":
    main()
