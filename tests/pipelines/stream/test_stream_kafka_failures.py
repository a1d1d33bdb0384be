"""Kafka out of reach: `recstream stream` and the retrain loop's reader say so in one line, after a
bounded wait, naming the address (a closed port) or the topic (one that does not exist); a job
that Kafka fails mid-run is reported the same way."""
from __future__ import annotations

import pytest

from features.errors import ServiceError
from pipelines.cli import main
from pipelines.embedded.broker import running_broker
from pipelines.processes import free_port
from pipelines.retrain.source import KafkaReader
from pipelines.store.feature_store import apply, open_store
from pipelines.stream.config import KafkaSettings
from pipelines.stream.failures import explain

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    apply(open_store(work), work)
    return work


def _stream(work, *flags) -> list[str]:
    return ["stream", "--workdir", str(work), *flags]


def test_a_closed_port_is_one_line_before_the_job_starts(applied, capsys):
    address = f"127.0.0.1:{free_port()}"
    assert main(_stream(applied, "--kafka", address)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"recstream stream: error: Kafka at {address}: describe 'events' failed"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list((applied / "feast").glob("stream-*.lock"))  # refused before the job took its lock


def test_a_missing_topic_is_named(applied, capsys):
    with running_broker() as broker:
        assert main(_stream(applied, "--kafka", broker.bootstrap_servers, "--topic", "no-such-topic")) == 2
    err = capsys.readouterr().err.strip()
    assert f"Kafka at {broker.bootstrap_servers}: topic 'no-such-topic' does not exist" in err, err
    assert len(err.splitlines()) == 1


def test_the_retrain_reader_names_the_address():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError, match=f"Kafka at {address}: no answer about topic 'training-examples' in 2 s"):
        KafkaReader(address, "training-examples", {}, {}, "g", timeout_s=2.0)


def test_a_job_failed_by_kafka_is_one_line_and_any_other_failure_keeps_its_trace():
    settings = KafkaSettings(bootstrap_servers="broker-1:9092")
    trace = ("Traceback (most recent call last):\n  File \"driver.py\", line 248, in run_here\n"
             "py4j.protocol.Py4JJavaError: An error occurred while calling o408.get.\n"
             "Caused by: org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy\n"
             "Caused by: java.lang.RuntimeException: Failed to get metadata for topics [events].\n"
             "Caused by: org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node assignment. "
             "Call: listNodes\n\tat org.apache.kafka.clients.admin.KafkaAdminClient.call(KafkaAdminClient.java:1)\n")
    line = explain(trace, settings)
    assert line == ("Kafka at broker-1:9092: the job failed (TimeoutException: Timed out waiting for a node "
                    "assignment. Call: listNodes); check that the brokers are up and that --kafka names them; "
                    "with checkpoints, restart with --restore latest to go on from the last one")
    other = trace.replace("org.apache.kafka.common.errors.TimeoutException", "java.lang.IllegalStateException")
    assert explain(other, settings) == other
    assert explain(trace, None) == trace  # a files-source job has no Kafka to blame
