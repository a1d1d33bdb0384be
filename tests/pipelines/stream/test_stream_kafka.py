"""The stream job over Kafka (embedded Tansu broker): parity with the backfill and the naive
oracles, dead letters to a topic, the example stream, and a kill -9 / restore that ends with
the online store of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.conftest import naive_dedup, naive_views
from features.labels import LabelPolicy, build_examples
from features.schema import Event
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker
from pipelines.store.feature_store import apply, open_store
from pipelines.store.historical import write_historical
from pipelines.store.publish import publish
from tests.helpers import online_views, views_differences
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream
from pipelines.stream.config import KafkaSettings, StreamConfig
from pipelines.stream.driver import StreamJobError, StreamProcess, latest_checkpoint, run_stream

pytestmark = pytest.mark.engine

SYN = SyntheticConfig(users=30, items=300, categories=10, days=3, sessions_per_user=8, bad_fraction=0.01, seed=11)
NOW_MS = SYN.start_ms + 30 * DAY_MS
POLICY = SequencePolicy(max_len=50)
LABELS = LabelPolicy(window_ms=30 * 60 * 1000)


def _lines() -> list[str]:
    """Synthetic events (with bad_fraction's corrupt records), a burst of duplicates, and bad input."""
    lines = []
    for i, line in enumerate(line for lines, _ in SyntheticStream(SYN).windows() for line in lines):
        lines.append(line)
        if isinstance(parse_event(line, NOW_MS), Event):  # duplicates right behind (a producer's retries)
            if i % 40 == 0:
                lines += [line, line]
            if i % 97 == 5:
                lines.append(json.dumps({**json.loads(line), "item_id": 999_999}))  # same id, new content
    first = json.loads(next(line for line in lines if isinstance(parse_event(line, NOW_MS), Event)))
    bad = [json.dumps({**first, "event_id": "future", "timestamp": NOW_MS + 2 * DAY_MS}),
           json.dumps({**first, "event_id": "seconds", "timestamp": first["timestamp"] // 1000}),
           json.dumps({**first, "event_id": "huge", "request_id": "x" * 70_000}),
           '{"event_id": "cut", "user_id": 1, "item_', "[1, 2, 3]"]
    return lines + bad


def _bad_utf8() -> bytes:
    return b'{"event_id": "bytes-\xff", "user_id": 1, "item_id": 2, "event_type": "click", "timestamp": 1}'


def _oracles(lines: list) -> tuple[dict, Counter, int]:
    """Every online view by the naive definitions, the naive labeled examples over the valid
    events, and a time after every event (where the statistics are compared)."""
    valid = [e for e in (parse_event(line, NOW_MS) for line in lines) if isinstance(e, Event)]
    by_user = defaultdict(list)
    for e in valid:
        by_user[e.user_id].append(e)
    examples = Counter(ex for evs in by_user.values() for ex in build_examples(naive_dedup(evs), LABELS))
    return naive_views(valid, POLICY.max_len, 50, 50), examples, max(e.timestamp for e in valid) + 1


def _fresh_store(work: Path):
    store = open_store(work)
    apply(store, work)  # views registered, nothing online: the stream starts from empty state
    return store


def _kafka(broker, group: str) -> KafkaSettings:
    return broker.kafka(topic="events", group_id=group, dead_letter_topic=f"dead-{group}",
                        examples_topic=f"examples-{group}", accepted_topic=f"accepted-{group}")


def _examples(client, topic: str, count: int) -> list[tuple]:
    rows = [json.loads(r.value) for r in client.read(topic, count, timeout_s=30)]
    return [(r["user_id"], r["item_id"], r["category_id"], r["timestamp"], r["label"], r["label_ms"]) for r in rows]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(p) for p in task.read_text().split()]
    return out


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _wait_for(condition, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s} s")
        time.sleep(0.2)


def _logs(offline: Path) -> dict:
    return {name: sorted(ds.dataset(offline / name, format="parquet").to_table().to_pylist(),
                         key=lambda r: tuple(r.values())) for name in ("behavior_log", "event_log")}


def _assert_accepted_log_is_the_batch_log(client, kafka: KafkaSettings, counts: dict, streamed: list, tmp_path: Path):
    """The accepted records, backfilled, give the batch's logs, so the streamed examples' features
    as of their time (historical over that log) are the batch examples' features."""
    accepted = [r.value for r in client.read(kafka.accepted_topic, counts["accepted"], timeout_s=30)]
    assert len(accepted) == counts["accepted"]
    half = len(accepted) // 2  # in two folders: the backfill takes several globs
    write_json_lines([v.decode() for v in accepted[:half]], tmp_path / "replay" / "a")
    write_json_lines([v.decode() for v in accepted[half:]], tmp_path / "replay" / "b")
    globs = ",".join(str(tmp_path / "replay" / part / "*.jsonl") for part in ("a", "b"))
    run_backfill(BackfillConfig(input=globs,
                                output=str(tmp_path / "replay" / "offline"), sequence=POLICY, labels=LABELS,
                                now_ms=NOW_MS))
    assert _logs(tmp_path / "replay" / "offline") == _logs(tmp_path / "batch" / "offline")
    entities = tmp_path / "streamed.jsonl"
    entities.write_text("".join(json.dumps(dict(zip(("user_id", "item_id", "category_id", "timestamp", "label"),
                                                    ex[:5]))) + "\n" for ex in streamed))
    caps = {"user_sequence": POLICY.max_len, "user_recent": 50, "user_category_sequence": 50}
    for run in ("replay", "batch"):
        write_historical(tmp_path / run, entities, tmp_path / f"{run}.parquet", caps)
    replayed, batch = (pq.read_table(tmp_path / f"{run}.parquet") for run in ("replay", "batch"))
    assert replayed.num_rows == len(streamed) and replayed.equals(batch)
    assert sum(replayed.column("seq_length").to_pylist()) > 0


def test_kafka_stream_parity_dead_letters_examples_and_kill_restore(tmp_path):
    lines = _lines()
    raw = [line.encode() for line in lines] + [_bad_utf8()]
    expected, naive_examples, end_ms = _oracles(lines)

    # The batch path on the same records, published through the gates into a store of its own.
    write_json_lines(lines, tmp_path / "batch" / "raw")
    with open(tmp_path / "batch" / "raw" / "events-00000.jsonl", "ab") as f:
        f.write(_bad_utf8() + b"\n")
    batch = run_backfill(BackfillConfig(input=str(tmp_path / "batch" / "raw" / "*.jsonl"),
                                        output=str(tmp_path / "batch" / "offline"), sequence=POLICY, labels=LABELS,
                                        now_ms=NOW_MS, stats_as_of_ms=end_ms))
    batch_store = open_store(tmp_path / "batch")
    gates, _ = publish(batch_store, tmp_path / "batch", {"user_sequence": POLICY.max_len, "user_recent": 50,
                                                         "user_category_sequence": 50})
    assert all(g.passed for g in gates), [g.summary() for g in gates]
    assert views_differences(online_views(batch_store, expected), expected, end_ms) == []  # backfill == oracle
    backfill_examples = Counter(tuple(r.values()) for r in ds.dataset(
        tmp_path / "batch" / "offline" / "examples", format="parquet").to_table().to_pylist())
    assert backfill_examples == naive_examples

    with running_broker() as broker:
        client = broker.client()
        client.create_topic("events", partitions=2)
        client.produce("events", event_records(raw, NOW_MS))

        # 1. Uninterrupted, bounded: reads the topic to its end and finishes.
        a = _kafka(broker, "a")
        create_stream_topics(client, a)
        store_a = _fresh_store(tmp_path / "a")
        started = time.perf_counter()
        counts = run_stream(StreamConfig(workdir=tmp_path / "a", kafka=a, sequence=POLICY, labels=LABELS,
                                         report_every=100, now_ms=NOW_MS))
        print(f"\nkafka stream: {len(raw)} records in {time.perf_counter() - started:.1f} s")
        assert views_differences(online_views(store_a, expected), expected, end_ms) == []  # stream == oracle
        assert counts["read"] == len(raw) == counts["accepted"] + counts["rejected_total"]
        assert counts["rejected"] == batch["rejected"] and counts["late"] == 0
        dead = [json.loads(r.value) for r in client.read(a.dead_letter_topic, counts["rejected_total"])]
        assert Counter(d["reason"] for d in dead) == Counter(batch["rejected"])
        assert {"timestamp_in_future", "timestamp_too_old", "record_too_large", "malformed_json",
                "not_an_object", "not_utf8"} <= set(batch["rejected"])
        streamed = _examples(client, a.examples_topic, counts["examples"])
        assert Counter(ex[:5] for ex in streamed) == backfill_examples  # the example stream == the batch labels
        assert all(ex[5] == ex[3] + LABELS.window_ms for ex in streamed)  # each carries its label time
        _assert_accepted_log_is_the_batch_log(client, a, counts, streamed, tmp_path)

        # 2. A following run with checkpoints over the same records on a topic of its own: the first
        # half, a checkpoint that covers it, a quarter more, SIGKILL as its rows land online while
        # the next records arrive; then a restore from the last checkpoint, with the rest produced,
        # stopped once the group has committed the topic's end offsets and no receipt came for a
        # few seconds. It must end with the uninterrupted run's store: nothing lost, nothing twice.
        records = event_records(raw, NOW_MS)
        quarter = len(records) // 4
        client.create_topic("events-b", partitions=2)
        client.produce("events-b", records[:2 * quarter])
        half = client.end_offsets("events-b")
        b = replace(_kafka(broker, "b"), topic="events-b")
        create_stream_topics(client, b)
        store_b = _fresh_store(tmp_path / "b")
        # The default idleness (30 s): a partition that starts delivering a second after the other
        # must still hold the watermark back, or its first records would be late.
        cfg = StreamConfig(workdir=tmp_path / "b", kafka=b, sequence=POLICY, labels=LABELS, report_every=1,
                           follow=True, now_ms=NOW_MS, checkpoints=tmp_path / "chk", checkpoint_interval_ms=300,
                           flush_ms=50)
        job = StreamProcess(cfg).start()
        _wait_for(lambda: client.committed_offsets("b", "events-b") == half, "a checkpoint of the first half")
        at_half = online_views(store_b, expected)
        client.produce("events-b", records[2 * quarter:3 * quarter])
        jvm = _children(job.pid)
        _wait_for(lambda: online_views(store_b, expected) != at_half, "third-quarter writes", timeout_s=120)
        client.produce("events-b", records[3 * quarter:3 * quarter + 50])
        os.kill(job.pid, signal.SIGKILL)
        with pytest.raises(StreamJobError, match="exited with code -9"):
            job.wait()
        assert all(_gone(pid, 20) for pid in jvm)  # the JVM went with its driver
        assert views_differences(online_views(store_b, expected), expected, end_ms)  # the kill left the store behind
        assert latest_checkpoint(tmp_path / "chk") is not None
        client.produce("events-b", records[3 * quarter + 50:])

        # Examples are at least once, and come out as the watermark passes their label time: all
        # those whose label time every partition's newest event (less the out-of-orderness) has
        # passed must be in the topic once the restored run has caught up.
        newest = defaultdict(int)
        for record in records:
            p = client._partition_of(record, [0, 1])
            newest[p] = max(newest[p], record.timestamp)
        settled = min(newest.values()) - cfg.out_of_orderness_ms - 1
        due = {ex for ex in streamed if ex[5] <= settled}
        ends, last, deadline = client.end_offsets("events-b"), [time.monotonic()], time.monotonic() + 300

        def examples_b() -> set:
            return set(_examples(client, b.examples_topic, sum(client.end_offsets(b.examples_topic).values())))

        def caught_up() -> bool:
            return time.monotonic() > deadline or (
                time.monotonic() - last[0] > 3 and client.committed_offsets("b", "events-b") == ends
                and due <= examples_b())

        def receipt(c: dict) -> None:
            last[0] = time.monotonic()
        restored = StreamProcess(replace(cfg, restore="latest")).start().wait(receipt, until=caught_up)
        assert 0 < restored["read"] < len(raw)  # resumed from the checkpoint, not from the start
        assert restored["late"] == 0
        assert restored["state_marks"] > 0 and restored["state_saved"] > 0  # checkpoints saved the changed keys
        assert views_differences(online_views(store_b, expected), expected, end_ms) == []  # == uninterrupted
        assert due <= examples_b() <= set(streamed)
        client.close()
