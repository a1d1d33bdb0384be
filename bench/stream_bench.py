"""Stream job figures on this machine: sustained events/s (bounded, embedded broker) and
online freshness (event produced -> its user's row readable through Feast) at half that rate.

    .venv/bin/python bench/stream_bench.py [events]
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from features.schema import Event
from features.validate import parse_event
from pipelines.broker import create_stream_topics, event_records, running_broker
from pipelines.feature_store import apply, open_store, read_user_sequences
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream
from pipelines.stream import StreamConfig, StreamProcess
from pipelines.stream_sources import KafkaSettings


def main(n_events: int) -> None:
    syn = SyntheticConfig(users=2000, items=5000, days=30, sessions_per_user=n_events / 2000 / 12, seed=3)
    lines = [line for lines, _ in SyntheticStream(syn).windows() for line in lines][:n_events]
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    apply(open_store(work), work)
    with running_broker() as broker:
        client = broker.client()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, group_id="tput")
        client.create_topic(kafka.topic, partitions=2)
        create_stream_topics(client, kafka)
        client.produce(kafka.topic, event_records(lines))
        marks = []
        started = time.perf_counter()
        counts = StreamProcess(StreamConfig(workdir=work, kafka=kafka, examples=True)).start().wait(
            lambda c: marks.append((time.perf_counter(), c["read"])))
        total = time.perf_counter() - started
        (t0, r0), (t1, r1) = marks[0], marks[-1]
        rate = (r1 - r0) / (t1 - t0)
        print(json.dumps({"events": len(lines), "job_seconds_with_startup": round(total, 1),
                          "sustained_events_per_s": round(rate), "counts": {k: counts[k] for k in
                          ("read", "applied", "rows_written", "examples")}}))

        # Freshness at half the sustained rate, in follow mode, on a second topic and store.
        work2 = Path(tempfile.mkdtemp(prefix="stream-fresh-"))
        store = open_store(work2)
        apply(store, work2)
        k2 = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic="live", group_id="fresh",
                           dead_letter_topic="live-dead", examples_topic="live-examples")
        client.create_topic(k2.topic, partitions=2)
        create_stream_topics(client, k2)
        job = StreamProcess(StreamConfig(workdir=work2, kafka=k2, follow=True, examples=True)).start()
        half, seconds = rate / 2, 40
        stop, samples, waiting = threading.Event(), [], {}
        lock = threading.Lock()

        def poll() -> None:
            reader = open_store(work2)
            while not stop.is_set() or waiting:
                with lock:
                    pending = dict(waiting)
                if pending:
                    online = read_user_sequences(reader, sorted({u for u, _ in pending}))
                    now = time.perf_counter()
                    for (u, ts), sent in pending.items():
                        if online.get(u) and online[u]["last_event_ms"] >= ts:
                            samples.append(now - sent)
                            with lock:
                                waiting.pop((u, ts), None)
                time.sleep(0.01)
                if stop.is_set() and time.perf_counter() - stop.t > 20:
                    break
        time.sleep(25)  # the job starts
        poller = threading.Thread(target=poll)
        poller.start()
        live = [line for line in lines if isinstance(parse_event(line), Event)]
        step, i, t_start = 0.05, 0, time.perf_counter()
        while time.perf_counter() - t_start < seconds and i < len(live):
            batch = live[i:i + max(1, int(half * step))]
            i += len(batch)
            sent = time.perf_counter()
            client.produce(k2.topic, event_records(batch), last_alone=False)
            last = parse_event(batch[-1])
            if last.event_type != "impression":
                with lock:
                    waiting[(last.user_id, last.timestamp)] = sent
            time.sleep(max(0.0, step - (time.perf_counter() - sent)))
        stop.t = time.perf_counter()
        stop.set()
        poller.join()
        job.stop.set()
        job.wait()
        ms = np.array(samples) * 1000
        print(json.dumps({"rate_events_per_s": round(half), "sent": i, "samples": len(ms),
                          "unseen": len(waiting), "freshness_ms_p50": round(float(np.percentile(ms, 50))),
                          "freshness_ms_p99": round(float(np.percentile(ms, 99)))}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30_000)
