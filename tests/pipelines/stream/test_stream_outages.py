"""The stream job through outages of what it talks to: the online store (a real redis-server,
stopped and restarted on its port) and the broker (frozen with SIGSTOP, then resumed). The job
waits for them and ends with every online view equal to the naive oracle: nothing lost, nothing
applied twice."""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import naive_views
from features.schema import Event
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker
from pipelines.store.feature_store import OnlineStore, apply, open_store
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream
from pipelines.stream.config import KafkaSettings, StreamConfig
from pipelines.stream.driver import StreamProcess
from tests.helpers import online_views, views_differences
from pipelines.embedded.redis import RedisServer
from tests.helpers import redis_server_or_skip

pytestmark = pytest.mark.engine

SYN = SyntheticConfig(users=20, items=200, categories=8, days=2, sessions_per_user=6, seed=5)
NOW_MS = SYN.start_ms + 30 * DAY_MS
POLICY = SequencePolicy(max_len=50)


def _wait_for(condition, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s} s")
        time.sleep(0.2)


def test_the_job_waits_out_a_redis_restart_and_a_frozen_broker(tmp_path):
    redis_server_or_skip()
    lines = [line for lines, _ in SyntheticStream(SYN).windows() for line in lines]
    valid = [e for e in (parse_event(line, NOW_MS) for line in lines) if isinstance(e, Event)]
    expected = naive_views(valid, POLICY.max_len, 50, 50)
    end_ms = max(e.timestamp for e in valid) + 1
    records = event_records(lines, NOW_MS)
    third = len(records) // 3
    server = RedisServer(persist=True).start()
    try:
        online = OnlineStore(kind="redis", redis_url=server.address)
        store = open_store(tmp_path, online)
        apply(store, tmp_path)
        with running_broker() as broker:
            client = broker.client()
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            client.create_topic(kafka.topic, partitions=2)
            create_stream_topics(client, kafka)
            client.produce(kafka.topic, records[:third])
            counts: dict = {}
            job = StreamProcess(StreamConfig(workdir=tmp_path, kafka=kafka, sequence=POLICY, follow=True,
                                             online=online, report_every=50, flush_ms=100, now_ms=NOW_MS,
                                             checkpoints=tmp_path / "chk", checkpoint_interval_ms=500)).start()
            try:
                _wait_for(lambda: any(online_views(store, expected)["user_sequence"].values()), "first online rows")

                # Redis goes away while the next third arrives; the job waits and retries its writes.
                pid = server.pid
                server.stop()
                client.produce(kafka.topic, records[third:2 * third])
                down = time.monotonic()
                time.sleep(4)
                assert job.child.is_alive(), "the job died while Redis was away"
                server.start()
                assert server.pid != pid

                # The broker freezes (a hung broker, or a partition between it and the job).
                os.kill(broker.pid, signal.SIGSTOP)
                time.sleep(4)
                os.kill(broker.pid, signal.SIGCONT)
                client.produce(kafka.topic, records[2 * third:])
                _wait_for(lambda: views_differences(online_views(store, expected), expected, end_ms) == [],
                          "online views equal to the oracle after the outages", timeout_s=240)
                assert time.monotonic() - down > 4
            finally:
                job.stop.set()
                counts = job.wait()
        assert views_differences(online_views(store, expected), expected, end_ms) == []
        assert counts["read"] == len(records) and counts["late"] == 0
        assert counts["online_retries"] > 0  # it did meet the outage, and waited it out
    finally:
        server.close()
