"""Model freshness on the embedded defaults: how long from an event entering the broker to (a) a
promoted model that has trained on it and (b) its user's interest vectors online; and whether the
loop keeps up with the stream's example rate.

Everything runs here at once: the embedded broker, the stream job following the events topic
(PyFlink mini-cluster), and `recstream retrain --follow` over the job's example and accepted
topics. A producer sends synthetic events stamped with the wall clock at --rate events/s for
--seconds. Afterwards every example and accepted record is read back from its topic with its
offset; the loop's per-window records say which offsets each window took and when its
candidates were promoted (and the interests published), so each event gets its exact times.

    .venv/bin/python bench/retrain_freshness.py [--rate 100] [--seconds 90] [--window 300]
        [--label-window-ms 2000] [--json runs/bench/freshness.json]

The ranker learns from impressions once their click window (--label-window-ms) has passed and
the watermark moved past it (the job's out-of-orderness, --out-of-orderness-ms): both are part
of its freshness by definition, and are printed beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import toml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.labels import LabelPolicy  # noqa: E402
from features.pit import sort_log  # noqa: E402
from pipelines.batch.backfill import BackfillConfig, run_backfill  # noqa: E402
from pipelines.config import to_dict  # noqa: E402
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker  # noqa: E402
from pipelines.progress import quiet_libraries  # noqa: E402
from pipelines.retrain.state import read_records  # noqa: E402
from pipelines.sources.raw_files import write_json_lines  # noqa: E402
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream  # noqa: E402
from pipelines.store.feature_store import open_store  # noqa: E402
from pipelines.store.publish import publish  # noqa: E402
from pipelines.stream.config import KafkaSettings, StreamConfig  # noqa: E402
from pipelines.stream.driver import StreamProcess  # noqa: E402
from trainers.ranking.train import TrainConfig, train  # noqa: E402
from trainers.registry import Registry  # noqa: E402
from trainers.retrieval.learner import RetrieverLearner  # noqa: E402
from trainers.retrieval.train import RetrievalConfig  # noqa: E402


def prepare(work: Path, now_ms: int, days: int = 6) -> list[str]:
    """A synthetic run backfilled up to now with its champions registered; returns one more day of
    events (their times are rewritten to the wall clock when produced)."""
    cfg = SyntheticConfig(users=300, items=1_500, days=days + 1, start_ms=now_ms - days * DAY_MS, seed=5)
    lines = [line for window, _ in SyntheticStream(cfg).windows() for line in window]
    past = [line for line in lines if json.loads(line).get("timestamp", 0) < now_ms]
    future = [line for line in lines if json.loads(line).get("timestamp", 0) >= now_ms]
    write_json_lines(iter(past), work / "raw")
    run_backfill(BackfillConfig(input=str(work / "raw" / "*.jsonl"), output=str(work / "offline"),
                                stats_as_of_ms=now_ms, labels_until_ms=now_ms))
    publish(open_store(work), work, {"user_sequence": 200, "user_recent": 50, "user_category_sequence": 50})
    examples = ds.dataset(work / "offline" / "examples", format="parquet").to_table()
    log = sort_log(ds.dataset(work / "offline" / "behavior_log", format="parquet").to_table())
    registry, scratch = Registry(work / "registry"), work / "scratch"
    ranker = TrainConfig(model="din", steps=200, batch_size=128)
    got = train(examples, examples.slice(0, 0), log, ranker, checkpoint_dir=scratch / "ranker")
    registry.promote("ranker", registry.register("ranker", got.state_dict, {"config": to_dict(ranker)},
                                                 files={"checkpoint": got.checkpoint}))
    retriever = RetrievalConfig(batch_size=128, steps=200)
    learner = RetrieverLearner(retriever)
    learner.fit(log, log, 0, epochs=3)
    version = registry.register("retriever", learner.state_dict(), {"config": to_dict(retriever)},
                                files={"checkpoint": learner.save(scratch / "retriever")})
    learner.close()
    registry.promote("retriever", version)
    return future


def produce(broker, kafka: KafkaSettings, lines: list[str], rate: float, seconds: float,
            sent: dict[str, float]) -> None:
    """Send events at ``rate`` per second, each stamped with the wall clock as it goes."""
    client = broker.client()
    start, n = time.monotonic(), 0
    try:
        for line in lines:
            due = start + n / rate
            if due - start > seconds:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            event = json.loads(line)
            event["timestamp"] = int(time.time() * 1000)
            raw = json.dumps(event)
            client.produce(kafka.topic, event_records([raw]), last_alone=False)
            sent[event["event_id"]] = time.time()
            n += 1
    finally:
        client.close()


def offsets_of(broker, topic: str) -> list[tuple[int, int, dict]]:
    """(partition, offset, record) of every record in a topic."""
    client = broker.client()
    try:
        ends = client.end_offsets(topic)
        return [(r.partition, r.offset, json.loads(r.value)) for r in client.read(topic, sum(ends.values()))]
    finally:
        client.close()


def window_of(records: list[dict], stream: str, partition: int, offset: int) -> dict | None:
    for r in records:
        lo, hi = r["start"][stream].get(str(partition), 0), r["end"][stream].get(str(partition), 0)
        if lo <= offset < hi:
            return r
    return None


def measure(records, examples, accepted, sent) -> dict:
    """Seconds from each event's produce to its model's promotion and to its interests online."""
    ranker, retriever, interests, labels = [], [], [], []
    for part, off, ex in examples:
        w = window_of(records, "examples", part, off)
        m = w and w["models"].get("ranker")
        if m and m.get("decision") == "promoted" and ex.get("event_id") in sent:
            ranker.append(m["promoted_at"] - sent[ex["event_id"]])
            labels.append(ex["label_ms"] / 1000 - sent[ex["event_id"]])
    for part, off, ev in accepted:
        w = window_of(records, "accepted", part, off)
        m = w and w["models"].get("retriever")
        if m and m.get("decision") == "promoted" and ev.get("event_id") in sent and ev.get("event_type") != "impression":
            retriever.append(m["promoted_at"] - sent[ev["event_id"]])
            interests.append(m["interests_at"] - sent[ev["event_id"]])
    return {name: _quantiles(v) for name, v in (("ranker_promoted", ranker), ("retriever_promoted", retriever),
                                                  ("interests_online", interests), ("label_window", labels))}


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = np.asarray(values)
    return {"n": len(v), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def keeping_up(records: list[dict], seconds: float, examples: int) -> dict:
    """The loop's examples/s while it works on windows, against the stream's example rate."""
    busy = sum(r["committed_at"] - r["closed_at"] for r in records)
    done = sum(r["records"] for r in records)
    capacity = done / busy if busy else float("nan")
    arriving = examples / seconds
    return {"loop_examples_per_s": capacity, "stream_examples_per_s": arriving, "ratio": capacity / arriving,
            "windows": len(records), "busy_s": busy}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0, help="events per second")
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--window", type=int, default=300, help="records per training window")
    p.add_argument("--max-wait-s", type=float, default=5.0, help="the longest a window waits to fill")
    p.add_argument("--label-window-ms", type=int, default=2_000)
    p.add_argument("--out-of-orderness-ms", type=int, default=1_000)
    p.add_argument("--json")
    args = p.parse_args(argv)
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="freshness-")) / "run"
    lines = prepare(work, int(time.time() * 1000))
    print(f"prepared {work}; {len(lines):,} events to send", flush=True)
    with running_broker() as broker:
        kafka = broker.kafka()
        client = broker.client()
        client.create_topic(kafka.topic, partitions=2)
        create_stream_topics(client, kafka)
        client.close()
        job = StreamProcess(StreamConfig(workdir=work, kafka=kafka, follow=True, checkpoints=work / "chk",
                                         labels=LabelPolicy(window_ms=args.label_window_ms),
                                         out_of_orderness_ms=args.out_of_orderness_ms, idleness_ms=2_000)).start()
        config = work / "retrain.toml"
        config.write_text(toml.dumps({"workdir": str(work), "interest_users": "window",
                                      "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                                      "window": {"size": args.window, "min_records": max(20, args.window // 10),
                                                 "idle_s": 1.0, "max_wait_s": args.max_wait_s}}))
        with open(work / "retrain.log", "w") as log:  # a file, not a pipe nobody reads until the end
            loop = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "retrain", "--config", str(config),
                                     "--follow"], stdout=subprocess.DEVNULL, stderr=log, env={**os.environ})
        time.sleep(20)  # the job's and the loop's start-up, outside the clock
        sent: dict[str, float] = {}
        producer = threading.Thread(target=produce, args=(broker, kafka, lines, args.rate, args.seconds, sent))
        producer.start()
        producer.join()
        last, seen = time.monotonic(), 0
        while time.monotonic() - last < 20:  # until the loop has taken everything it will take
            n = len(read_records(work / "retrain"))
            last, seen = (time.monotonic(), n) if n != seen else (last, seen)
            time.sleep(1)
        loop.send_signal(signal.SIGTERM)
        loop.wait(timeout=120)
        examples, accepted = offsets_of(broker, kafka.examples_topic), offsets_of(broker, kafka.accepted_topic)
        job.stop.set()  # the job cancels itself; its driver's final counts end the wait
        job.wait()
    records = read_records(work / "retrain")
    out = {"rate": args.rate, "seconds": args.seconds, "events": len(sent), "examples": len(examples),
           "freshness_s": measure(records, examples, accepted, sent),
           "keeping_up": keeping_up(records, args.seconds, len(examples)),
           "decisions": {k: sum(r["models"].get(k, {}).get("decision") == "promoted" for r in records)
                         for k in ("ranker", "retriever")}}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
