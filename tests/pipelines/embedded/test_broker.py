"""The embedded broker (Tansu, started and stopped by PID) and the confluent-kafka toolkit against it."""
from __future__ import annotations

import os

import pytest

from pipelines.embedded import broker as broker_module
from pipelines.stream import connector
from pipelines.embedded.broker import Broker, running_broker
from pipelines.embedded.kafka import KafkaClient, Record
from tests.helpers import produce_in_batches


def test_a_bad_address_is_named():
    with pytest.raises(ValueError, match="host:port"):
        KafkaClient("localhost")


def test_missing_binary_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSTREAM_STREAM_DEPS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="fetch_stream_deps.sh"):
        broker_module.tansu_binary()
    with pytest.raises(FileNotFoundError, match="kafka-clients"):
        connector.kafka_jars()


@pytest.mark.engine
def test_broker_round_trip_and_stop_by_pid():
    with running_broker() as broker:
        pid = broker.pid
        client = broker.client()
        assert client.create_topic("events", partitions=3) is True
        assert client.create_topic("events", partitions=3) is False  # already there: not an error
        assert client.partitions("events") == [0, 1, 2]
        sent = [Record(value=f'{{"n": {i}}}'.encode(), key=f"user-{i % 7}".encode(), timestamp=1_700_000_000_000 + i)
                for i in range(500)]
        sent.append(Record(value=b"\xff bad bytes stay bytes", partition=1, timestamp=1_700_000_001_000))
        client.produce("events", sent)
        got = client.read("events", count=len(sent), timeout_s=10)
        assert sorted((r.value, r.timestamp) for r in got) == sorted((r.value, r.timestamp) for r in sent)
        by_key = {}
        for r in got:  # one key, one partition, in the order sent
            if r.key is not None:
                by_key.setdefault(r.key, []).append((r.partition, r.timestamp))
        assert all(len({p for p, _ in v}) == 1 and [t for _, t in v] == sorted(t for _, t in v)
                   for v in by_key.values())
        ends = client.end_offsets("events")
        assert sum(ends.values()) == len(sent)  # exact, so that a bounded reader stops at the end
        assert ends == {p: 1 + max(r.offset for r in got if r.partition == p) for p in ends}
        with pytest.raises(TimeoutError, match=f"{len(sent)} of {len(sent) + 1}"):
            client.read("events", count=len(sent) + 1, timeout_s=0.5)
        client.close()

        broker.stop()
        assert broker.proc is None and not _alive(pid)
        broker.start()  # a new, empty broker on the same port
        assert broker.pid != pid
        fresh = KafkaClient(broker.bootstrap_servers)
        fresh.create_topic("events", partitions=1)
        assert fresh.end_offsets("events") == {0: 0}
        fresh.close()
    assert not _alive(broker.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.engine
def test_a_taken_port_is_an_error():
    with running_broker() as first:
        with pytest.raises(RuntimeError, match="did not start"):
            Broker(port=first.port, startup_timeout_s=2).start()


@pytest.mark.engine
def test_end_offsets_count_every_record_of_the_last_batch():
    """Tansu lists a partition's end as its last batch's first offset + 1; end_offsets reads past it."""
    with running_broker() as broker:
        client = broker.client()
        client.create_topic("batched", partitions=1)
        listed = produce_in_batches(broker.bootstrap_servers, "batched", [Record(value=b"x", key=b"k")] * 300)
        assert listed < 300  # what the broker lists: the case this test is about
        assert client.end_offsets("batched") == {0: 300}
        client.close()
