"""A checkpoint taken while every changed key still waits for its online write: after kill -9
and a restore, the timers restored from the checkpoint write those keys from their state and
send their item deltas on, so the store ends equal to the naive oracle with no event read again."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest

from tests.conftest import naive_views
from tests.helpers import online_views, views_differences
from features.schema import Event
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.embedded.broker import create_stream_topics, event_records, running_broker
from pipelines.store.feature_store import apply, open_store
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream
from pipelines.stream.config import KafkaSettings, StreamConfig
from pipelines.stream.driver import StreamJobError, StreamProcess, latest_checkpoint

pytestmark = pytest.mark.engine

SYN = SyntheticConfig(users=12, items=80, categories=6, days=2, sessions_per_user=4, seed=5)
NOW_MS = SYN.start_ms + 30 * DAY_MS
POLICY = SequencePolicy(max_len=50)
# The first flush comes this long after the functions start: never before the kill, however slowly
# a loaded machine starts the job (the checkpoint of every record took 14-25 s here).
FLUSH_MS = 90_000


def _wait_for(condition, what: str, timeout_s: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"no {what} within {timeout_s} s")
        time.sleep(0.2)
    return time.monotonic() - started


def test_keys_pending_at_the_checkpoint_are_written_by_their_restored_timers(tmp_path):
    lines = [line for batch, _ in SyntheticStream(SYN).windows() for line in batch]
    valid = [e for e in (parse_event(line, NOW_MS) for line in lines) if isinstance(e, Event)]
    expected = naive_views(valid, POLICY.max_len, 50, 50)
    end_ms = max(e.timestamp for e in valid) + 1
    store = open_store(tmp_path)
    apply(store, tmp_path)
    with running_broker() as broker:
        client = broker.client()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, group_id="pending")
        client.create_topic("events", partitions=2)
        create_stream_topics(client, kafka)
        client.produce("events", event_records([line.encode() for line in lines], NOW_MS))
        ends = client.end_offsets("events")
        cfg = StreamConfig(workdir=tmp_path, kafka=kafka, sequence=POLICY, follow=True, now_ms=NOW_MS,
                           flush_ms=FLUSH_MS, item_flush_ms=FLUSH_MS, checkpoints=tmp_path / "chk",
                           checkpoint_interval_ms=200, report_every=1)
        job = StreamProcess(cfg).start()
        # The group's offsets reach the end only with a completed checkpoint that covers every record.
        try:
            took = _wait_for(lambda: client.committed_offsets("pending", "events") == ends,
                             "checkpoint of every record", timeout_s=FLUSH_MS / 1000 - 10)
        except AssertionError:
            job.stop.set()
            job.wait()
            raise
        online = online_views(store, expected)
        assert all(row is None for rows in online.values() for row in rows.values()), (
            f"rows were written before the kill ({took:.1f} s after the start): the keys were not pending")
        os.kill(job.pid, signal.SIGKILL)
        with pytest.raises(StreamJobError, match="exited with code -9"):
            job.wait()
        assert latest_checkpoint(tmp_path / "chk") is not None

        def online_equal() -> bool:
            return views_differences(online_views(store, expected), expected, end_ms) == []

        deadline = time.monotonic() + FLUSH_MS / 1000 + 60  # the restored timers fire within FLUSH_MS
        restored = StreamProcess(replace(cfg, restore="latest")).start()
        counts = restored.wait(until=lambda: online_equal() or time.monotonic() > deadline)
        client.close()
    assert counts["read"] == 0  # the checkpoint covered every record: nothing was read again
    assert counts["recovered"] > 0  # the keys came back through their restored timers
    assert views_differences(online_views(store, expected), expected, end_ms) == []
