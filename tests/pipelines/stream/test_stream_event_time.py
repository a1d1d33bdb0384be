"""Event time through Kafka: watermarks per partition, idleness, allowed lateness and duplicates.

One following job; the test feeds the broker in phases while the job runs:
  1. both partitions: users A (partition 0) and B (partition 1), minutes 0-10
  2. partition 0 only: A, minutes 20-30, each event twice plus a changed copy (same event_id)
  3. after partition 1 has been quiet past the idleness timeout: an A event at minute 15 (late
     only because the idle partition no longer holds the watermark back), a B event at minute 1
     (late anyway), an A event out of order but within the lateness, and a malformed record.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import T0, naive_sequence
from features.schema import Event
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.embedded.broker import create_stream_topics, running_broker
from pipelines.store.feature_store import apply, open_store, read_user_sequences
from pipelines.embedded.kafka import Record
from pipelines.stream.config import KafkaSettings, StreamConfig
from pipelines.stream.driver import StreamProcess

pytestmark = pytest.mark.engine

MIN = 60_000
POLICY = SequencePolicy(max_len=100)
NOW_MS = T0 + 10 * 24 * 3600 * 1000


def _event(n: str, user: str, minute: float, item: int = 1) -> str:
    return json.dumps({"event_id": n, "user_id": user, "item_id": item, "event_type": "click",
                       "timestamp": T0 + int(minute * MIN), "category_id": 3})


def _records(lines: list[str], partition: int) -> list[Record]:
    out = []
    for line in lines:
        got = parse_event(line, NOW_MS)
        out.append(Record(value=line.encode(), partition=partition,
                          timestamp=got.timestamp if isinstance(got, Event) else T0))
    return out


@pytest.mark.parametrize("parallelism", [1, 2])  # two slots: one per partition
def test_watermarks_idleness_lateness_and_duplicates(tmp_path, parallelism):
    phase1_a = [_event(f"a{m}", "A", m) for m in range(11)]
    phase1_b = [_event(f"b{m}", "B", m) for m in range(11)]
    phase2 = [line for m in range(20, 31) for line in [_event(f"a{m}", "A", m)] * 2]
    phase2.insert(phase2.index(_event("a25", "A", 25)) + 2, _event("a25", "A", 25, item=7))  # greatest copy wins
    late_by_idleness, late_anyway = _event("a15", "A", 15), _event("b1-again", "B", 1)
    in_time = _event("a28.8", "A", 28.8)  # behind the newest event, within the lateness
    phase3 = [late_by_idleness, late_anyway, in_time, '{"event_id": "cut", "user_']

    store = open_store(tmp_path)
    apply(store, tmp_path)
    with running_broker() as broker:
        client = broker.client()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, group_id="event-time")
        client.create_topic(kafka.topic, partitions=2)
        create_stream_topics(client, kafka)
        client.produce(kafka.topic, _records(phase1_a, 0) + _records(phase1_b, 1))
        cfg = StreamConfig(workdir=tmp_path, kafka=kafka, sequence=POLICY, follow=True, examples=False,
                           out_of_orderness_ms=MIN, allowed_lateness_ms=MIN // 2, idleness_ms=1000,
                           report_every=1, now_ms=NOW_MS, parallelism=parallelism)
        n1, n2 = len(phase1_a) + len(phase1_b), len(phase2)

        def feed(counts: dict) -> None:
            feed.read = counts["read"]
            if counts["read"] == n1 and not feed.phase:
                feed.phase = 2
                client.produce(kafka.topic, _records(phase2, 0))
            elif counts["read"] == n1 + n2 and feed.phase == 2:
                feed.phase = 3
                time.sleep(2.5)  # partition 1 idle for longer than idleness_ms; watermarks emitted
                client.produce(kafka.topic, _records(phase3, 0))

        def done() -> bool:  # all read, and a checkpoint since (the sinks flush on checkpoints)
            return (feed.read == n1 + n2 + len(phase3)
                    and client.committed_offsets(kafka.group_id, kafka.topic) == client.end_offsets(kafka.topic))
        feed.phase, feed.read = 0, 0
        counts = StreamProcess(cfg).start().wait(feed, until=done)

        assert counts["read"] == n1 + n2 + len(phase3) == counts["accepted"] + counts["rejected_total"]
        assert counts["rejected"] == {"late": 2, "malformed_json": 1}
        dead = [json.loads(r.value) for r in client.read(kafka.dead_letter_topic, 3)]
        assert sorted(d["raw"] for d in dead if d["reason"] == "late") == sorted([late_by_idleness, late_anyway])
        assert all("watermark" in d["detail"] for d in dead if d["reason"] == "late")

        def events(lines):
            return [parse_event(line, NOW_MS) for line in lines]
        users = {"A": events(phase1_a + phase2 + [in_time]), "B": events(phase1_b)}
        online = read_user_sequences(store, [evs[0].user_id for evs in users.values()])
        for evs in users.values():  # duplicates applied once: the same as the naive dedup of every copy
            assert online[evs[0].user_id] == naive_sequence(evs, POLICY.max_len)
        assert online[users["A"][0].user_id]["seq_length"] == 11 + 11 + 1
        client.close()
