"""Stream job figures on this machine, through the embedded broker (SQLite online store, or
Redis with --online redis):

1. sustained events/s of the whole job (every online view, item statistics, the example
   stream) following a backlog of every event, against PyFlink's own floor measured in the same
   run: the same Kafka source, validation and key-by into a keyed Python function that does
   nothing;
2. at half the job's rate (or --rate), in follow mode, pushed by a replayer in 50 ms steps:
   freshness (an event produced -> the row that holds it readable through Feast) for
   user_sequence, user_stats and item_stats, and example-stream lag (the record that lets the
   watermark pass an impression's label time produced -> its example readable in the topic).

    .venv/bin/python bench/stream_bench.py [--events 150000] [--warmup 20] [--seconds 20] [--online sqlite|redis] [--parallelism 1]
        [--flush-ms 100] [--item-flush-ms 250] [--bundle-ms 100] [--checkpoint-ms 10000] [--rate R] [--kafka-property K=V]
        [--python-mode thread|process] [--no-item-stats] [--samples FILE]

The freshness run produces at the rate for --warmup seconds, then --seconds more; the figures are
of the events produced after the warm-up (the warm-up's own p99 is printed apart).
--samples FILE keeps every measured freshness and example-lag sample for `recstream report --bench FILE`,
and every sample with its produce time (s from the start) under "timeline".
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stream_floor import floor_rate  # noqa: E402
from features.schema import Event  # noqa: E402
from features.validate import parse_event  # noqa: E402
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker  # noqa: E402
from pipelines.store.feature_store import OnlineStore, apply, open_store, read_rows  # noqa: E402
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream  # noqa: E402
from pipelines.stream.config import StreamConfig  # noqa: E402
from pipelines.stream.driver import StreamProcess, keyed_functions  # noqa: E402


def synthetic_lines(n_events: int) -> list[str]:
    syn = SyntheticConfig(users=2000, items=5000, days=30, sessions_per_user=n_events / 2000 / 9, seed=3)
    return [line for lines, _ in SyntheticStream(syn).windows() for line in lines][:n_events]


def sustained_rate(broker, lines: list[str], work: Path, online: OnlineStore, knobs: dict) -> dict:
    """The job following the topic (as in production, with its flush cadence) over a backlog of
    every line: events/s between the first and the last count receipt."""
    kafka = broker.kafka(group_id="tput")
    marks = []

    def progress(counts: dict) -> bool:
        marks.append((time.perf_counter(), counts["read"]))
        return counts["read"] >= len(lines)
    started = time.perf_counter()
    cfg = StreamConfig(workdir=work, kafka=kafka, follow=True, online=online, **knobs)
    counts = StreamProcess(cfg).start().wait(progress)
    (t0, r0), (t1, r1) = marks[0], marks[-1]
    return {"events": len(lines), "job_seconds_with_startup": round(time.perf_counter() - started, 1),
            "events_per_s": (r1 - r0) / (t1 - t0), "rows_by_view": counts["rows_by_view"],
            "examples": counts["examples"]}


class Freshness:
    """Polls Feast for the sampled events' rows and notes when each becomes readable."""

    VIEWS = {"user_sequence": "last_event_ms", "user_stats": "newest_ms", "item_stats": "newest_ms"}

    def __init__(self, work: Path, online: OnlineStore, item_stats: bool = True):
        self.store = open_store(work, online)
        self.views = {v: f for v, f in self.VIEWS.items() if item_stats or v != "item_stats"}
        self.waiting: dict[tuple[str, int, int], float] = {}  # (view, key, event ms) -> produced at
        self.samples: dict[str, list[tuple[float, float]]] = {view: [] for view in self.views}  # (produced, s)
        self.cycles: list[float] = []  # seconds per poll of every view: the measurement's resolution
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def expect(self, event: Event, sent: float) -> None:
        with self.lock:
            if event.event_type != "impression":
                self.waiting[("user_sequence", event.user_id, event.timestamp)] = sent
            self.waiting[("user_stats", event.user_id, event.timestamp)] = sent
            if "item_stats" in self.views:
                self.waiting[("item_stats", event.item_id, event.timestamp)] = sent

    def _poll(self) -> None:
        while not self.stop.is_set() or self.waiting:
            cycle = time.perf_counter()
            with self.lock:
                pending = dict(self.waiting)
            for view, field in self.views.items():
                keys = sorted({k for v, k, _ in pending if v == view})
                rows = dict(zip(keys, read_rows(self.store, view, keys, [field])))
                now = time.perf_counter()
                for (v, key, ms), sent in pending.items():
                    if v == view and rows.get(key) and rows[key][field] is not None and rows[key][field] >= ms:
                        self.samples[view].append((sent, now - sent))
                        with self.lock:
                            self.waiting.pop((v, key, ms), None)
            self.cycles.append(time.perf_counter() - cycle)
            time.sleep(0.01)
            if self.stop.is_set() and time.perf_counter() - self.stopped > 20:
                break


class ExampleLag:
    """Reads the examples topic as the job writes it; lag = arrival - the produce time of the first
    record whose event time lets the watermark pass the example's label time."""

    def __init__(self, client, topic: str, out_of_orderness_ms: int):
        self.client, self.topic, self.ooo = client, topic, out_of_orderness_ms
        self.sent_at: list[tuple[int, float]] = []  # (event ms, produced at), in produce order
        self.lags: list[tuple[float, float]] = []  # (produced, s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        offsets = {p: 0 for p in self.client.partitions(self.topic)}
        while not self.stop.is_set():
            for p in offsets:
                for record in self.client.fetch(self.topic, p, offsets[p], max_wait_ms=50):
                    offsets[p] += 1
                    arrived, due = time.perf_counter(), json.loads(record.value)["label_ms"] + self.ooo
                    produced = next((t for ms, t in list(self.sent_at) if ms > due), None)
                    if produced is not None:
                        self.lags.append((produced, arrived - produced))


def ready(client, topic: str, live: list, read: list[int], first: int = 100, timeout_s: float = 300) -> tuple[float, int]:
    """Produce the first events and wait until the job has read them: the clock starts on a job
    that is running, not on one still starting. Returns (seconds it took, events sent)."""
    started = time.perf_counter()
    client.produce(topic, event_records([line for line, _ in live[:first]]), last_alone=False)
    while read[0] < first:
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"the job read {read[0]} of the first {first} events in {timeout_s:.0f} s; see its log")
        time.sleep(0.1)
    return time.perf_counter() - started, first


def freshness_at(rate: float, warmup_s: float, seconds: float, checkpoint_ms: int, properties: dict, online: OnlineStore, client,
                 broker, lines: list[str], work: Path, knobs: dict) -> dict:
    kafka = broker.kafka(topic="live", group_id="fresh", dead_letter_topic="live-dead", examples_topic="live-examples",
                         properties=properties)
    client.create_topic(kafka.topic, partitions=2)
    create_stream_topics(client, kafka)
    cfg = StreamConfig(workdir=work, kafka=kafka, follow=True, online=online, checkpoints=work / "chk",
                       checkpoint_interval_ms=checkpoint_ms, **knobs)
    job = StreamProcess(cfg).start()
    read, last = [0], {}

    def progress(counts: dict) -> None:
        read[0] = counts["read"]
        last.update(counts)
    waiter = threading.Thread(target=job.wait, args=(progress,), daemon=True)
    waiter.start()
    fresh = Freshness(work, online, knobs["item_stats"])
    lag = ExampleLag(broker.client("lag"), kafka.examples_topic, cfg.out_of_orderness_ms)
    live = [(line, e) for line in lines if isinstance(e := parse_event(line), Event)]
    warm, i = ready(client, kafka.topic, live, read)
    print(json.dumps({"job_ready_s": round(warm, 1)}), file=sys.stderr, flush=True)
    fresh.thread.start()
    lag.thread.start()
    step, t_start = 0.05, time.perf_counter()
    measured = t_start + warmup_s  # samples of events produced from here on are the figures
    while time.perf_counter() - measured < seconds and i < len(live):
        batch = live[i:i + max(1, int(rate * step))]
        i += len(batch)
        sent = time.perf_counter()
        client.produce(kafka.topic, event_records([line for line, _ in batch]), last_alone=False)
        lag.sent_at.append((max(e.timestamp for _, e in batch), sent))
        fresh.expect(batch[-1][1], sent)  # one sample per step: its last event
        time.sleep(max(0.0, step - (time.perf_counter() - sent)))
    measured_s = time.perf_counter() - measured  # under --seconds if the events ran out
    if measured_s <= 0:
        raise SystemExit(f"the {len(live)} events ran out within the warm-up: a bug in this script")
    time.sleep(15)  # the last rows and examples come out
    fresh.stopped = time.perf_counter()
    fresh.stop.set()
    lag.stop.set()
    fresh.thread.join()
    lag.thread.join()
    job.stop.set()
    waiter.join()

    def pct(values: list[float]) -> dict:
        ms = np.array(values) * 1000
        return {"samples": len(ms), "p50_ms": round(float(np.percentile(ms, 50))) if len(ms) else None,
                "p99_ms": round(float(np.percentile(ms, 99))) if len(ms) else None}

    series = {**{f"freshness_{view}": s for view, s in fresh.samples.items()}, "example_lag": lag.lags}
    steady = {name: [x for t, x in s if t >= measured] for name, s in series.items()}
    return {"rate_events_per_s": round(rate), "sent": i, **knobs, "checkpoint_ms": checkpoint_ms,
            "fetch_max_wait_ms": kafka.source_properties().get("fetch.max.wait.ms"),
            "unseen": len(fresh.waiting), "poll_cycle_ms": pct(fresh.cycles), "warmup_s": warmup_s,
            "measured_s": round(measured_s, 1), "state_save": state_save(last, cfg),
            **{name: pct(s) for name, s in steady.items()},
            "warmup_p99_ms": {name: pct([x for t, x in s if t < measured])["p99_ms"] for name, s in series.items()},
            "samples_ms": {name: [round(x * 1000, 1) for x in s] for name, s in steady.items()},
            "timeline": {name: [(round(t - t_start, 2), round(x * 1000, 1)) for t, x in s] for name, s in series.items()}}


def state_save(counts: dict, cfg: StreamConfig) -> dict:
    """What the keyed functions' saves at the checkpoint marks cost over the run (the job stalls
    while they pickle; thread mode): before each checkpoint, every upstream subtask marks every
    bucket of each function, so a checkpoint makes parallelism x key_buckets marks per function."""
    saved, cpu_ms = counts.get("state_saved", 0), counts.get("state_save_us", 0) / 1000
    checkpoints = counts.get("state_marks", 0) / (cfg.key_buckets * keyed_functions(cfg))
    return {"checkpoints": round(checkpoints, 1), "states": saved, "cpu_ms": round(cpu_ms),
            "us_per_state": round(cpu_ms * 1000 / saved, 1) if saved else None,
            "ms_per_checkpoint": round(cpu_ms / checkpoints, 1) if checkpoints else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=150_000, help="the backlog of the sustained run")
    p.add_argument("--warmup", type=float, default=20,
                   help="seconds at the freshness rate before the measured ones (the JVM compiles the job's hot "
                        "paths, the state fills); their p99 is reported apart")
    p.add_argument("--seconds", type=float, default=20, help="measured seconds of the freshness run")
    p.add_argument("--flush-ms", type=int, default=100)
    p.add_argument("--item-flush-ms", type=int, default=StreamConfig.item_flush_ms)
    p.add_argument("--bundle-ms", type=int, default=100)
    p.add_argument("--checkpoint-ms", type=int, default=10_000)
    p.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                   help="a consumer property of the freshness run, e.g. fetch.max.wait.ms=100")
    p.add_argument("--rate", type=float, help="measure freshness at this rate only (skip the sustained run)")
    p.add_argument("--parallelism", type=int, default=1, help="slots of the measured job")
    p.add_argument("--no-item-stats", action="store_true", help="the job without its item_stats branch")
    p.add_argument("--python-mode", choices=("thread", "process"), default="thread",
                   help="PyFlink's Python execution mode, for the floor and the job alike")
    p.add_argument("--online", choices=("sqlite", "redis"), default="sqlite",
                   help="the online store: the run folder's SQLite, or a redis-server this script starts")
    p.add_argument("--samples", help="write every freshness and lag sample (ms) and the rates as JSON here, for "
                                     "`recstream report --bench FILE`")
    args = p.parse_args()
    properties = dict(item.split("=", 1) for item in args.kafka_property)
    knobs = {"flush_ms": args.flush_ms, "item_flush_ms": args.item_flush_ms, "bundle_ms": args.bundle_ms,
             "parallelism": args.parallelism, "python_mode": args.python_mode, "item_stats": not args.no_item_stats}
    with running_broker() as broker, online_stores(args.online) as (first, second):
        client = broker.client()
        rate = args.rate
        if rate is None:
            lines = synthetic_lines(args.events)
            work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
            apply(open_store(work, first), work)
            client.create_topic("events", partitions=2)
            create_stream_topics(client, broker.kafka())
            client.produce("events", event_records(lines))
            floor = floor_rate(broker.kafka(group_id="floor"), work, args.python_mode)
            job = sustained_rate(broker, lines, work, first, knobs)
            print(json.dumps({"online": args.online, **knobs,
                              "floor_events_per_s": round(floor),
                              **{k: (round(v) if isinstance(v, float) else v) for k, v in job.items()},
                              "job_over_floor": round(job["events_per_s"] / floor, 3)}), flush=True)
            rate = job["events_per_s"] / 2
        work2 = Path(tempfile.mkdtemp(prefix="stream-fresh-"))
        apply(open_store(work2, second), work2)
        lines = synthetic_lines(int(rate * (args.warmup + args.seconds) * 1.4) + 1000)  # the generator drops some
        fresh = freshness_at(rate, args.warmup, args.seconds, args.checkpoint_ms, properties, second, client, broker,
                             lines, work2, knobs)
        samples, timeline = fresh.pop("samples_ms"), fresh.pop("timeline")
        print(json.dumps({"online": args.online, **fresh}), flush=True)
        if args.samples:
            Path(args.samples).write_text(json.dumps({"rate_events_per_s": fresh["rate_events_per_s"],
                                                      "samples_ms": samples,
                                                      "timeline": timeline}))


@contextlib.contextmanager
def online_stores(kind: str):
    """Two empty online stores, one per measured run: SQLite in each run folder, or two
    databases of one redis-server started here (127.0.0.1, a free port) and stopped by PID."""
    if kind == "sqlite":
        yield OnlineStore(), OnlineStore()
        return
    from pipelines.embedded.redis import RedisServer

    server = RedisServer().start()
    try:
        yield (OnlineStore(kind="redis", redis_url=f"{server.address},db=0"),
               OnlineStore(kind="redis", redis_url=f"{server.address},db=1"))
    finally:
        server.stop()

if __name__ == "__main__":
    main()
