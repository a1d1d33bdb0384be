"""A bounded run over a topic reads it to its true end: Tansu lists a partition's end as its last
batch's first offset + 1, and stopping there (Flink's OffsetsInitializer.latest()) left the rest
of that batch unread; the examples a Flink sink wrote in one batch looked lost the same way."""
from __future__ import annotations

import json

import pytest

from pipelines.embedded.broker import create_stream_topics, running_broker
from pipelines.embedded.kafka import Record
from pipelines.store.feature_store import apply, open_store
from pipelines.stream.config import KafkaSettings, StreamConfig
from pipelines.stream.driver import run_stream
from tests.helpers import produce_in_batches

pytestmark = pytest.mark.engine
T0 = 1_704_067_200_000


def test_a_bounded_run_reads_the_last_batch_whole(tmp_path):
    apply(open_store(tmp_path), tmp_path)
    events = [Record(value=json.dumps({"event_id": f"e{i}", "user_id": i % 9, "item_id": i, "event_type": "click",
                                       "timestamp": T0 + i * 1000}).encode(), key=str(i % 9).encode(),
                     timestamp=T0 + i * 1000) for i in range(400)]
    with running_broker() as broker:
        client = broker.client()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic="batched", group_id="g",
                              dead_letter_topic="dead", examples_topic="examples", accepted_topic="accepted")
        client.create_topic("batched", partitions=1)
        create_stream_topics(client, kafka)
        assert produce_in_batches(broker.bootstrap_servers, "batched", events) < len(events)  # listed short
        counts = run_stream(StreamConfig(workdir=tmp_path, kafka=kafka, now_ms=T0 + 10**9, examples=False))
        accepted = client.read("accepted", count=counts["accepted"], timeout_s=30)
        client.close()
    assert counts["read"] == counts["accepted"] == len(events)
    assert sorted(json.loads(r.value)["event_id"] for r in accepted) == sorted(f"e{i}" for i in range(400))
