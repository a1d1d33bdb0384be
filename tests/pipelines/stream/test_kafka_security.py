"""SASL/TLS settings from the configuration, secrets from the environment, reach both Kafka
clients: Flink's connector (the job's source and sinks, read back from the built Java objects)
and librdkafka (the retrain loop's reader, the embedded client). No secured broker is needed:
what is checked is what each client was given."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import certifi
import pytest

from features.errors import ConfigError
from pipelines.stream.config import KafkaSettings

pytestmark = pytest.mark.engine

SECURED = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
           "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                               'username="${K_USER}" password="${K_PASSWORD}";',
           "ssl.truststore.location": "/etc/kafka/truststore.jks", "ssl.ca.location": certifi.where()}


@pytest.fixture
def kafka(monkeypatch) -> KafkaSettings:
    monkeypatch.setenv("K_USER", "svc-recstream")
    monkeypatch.setenv("K_PASSWORD", "s3cret=with;odd")
    return KafkaSettings(bootstrap_servers="broker-1:9093", properties=SECURED, fetch_max_wait_ms=50)


def _java_props(obj, field: str) -> dict[str, str]:
    """A private java.util.Properties field of a built connector object, by reflection."""
    f = obj.getClass().getDeclaredField(field)
    f.setAccessible(True)
    props = f.get(obj)
    return {name: props.getProperty(name) for name in props.stringPropertyNames()}


def _built_connectors(kafka: KafkaSettings, workdir: str) -> tuple[dict, dict]:
    """The properties the job's Kafka source and a sink are built with (in a child process: the
    PyFlink gateway's JVM goes with it)."""
    from pipelines.stream.config import StreamConfig
    from pipelines.stream.driver import bind_to_parent, environment
    from pipelines.stream.io import kafka_lines, kafka_sink, watermarks

    bind_to_parent()
    env, _ = environment(StreamConfig(workdir=Path(workdir), kafka=kafka))
    stream = kafka_lines(env, kafka, watermarks(1000, 1000), bounded=False)
    source = _java_props(stream._j_data_stream.getTransformation().getSource(), "props")
    sink = _java_props(kafka_sink(kafka, "events-dead-letters", "dead").get_java_function(), "kafkaProducerConfig")
    return source, sink


def test_flink_source_and_sink_get_the_settings_with_secrets_resolved(kafka, tmp_path):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        source, sink = pool.apply(_built_connectors, (kafka, str(tmp_path)))
    expected_jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                     'username="svc-recstream" password="s3cret=with;odd";')
    assert source["sasl.jaas.config"] == expected_jaas
    assert source["security.protocol"] == "SASL_SSL" and source["sasl.mechanism"] == "SCRAM-SHA-512"
    assert source["ssl.truststore.location"] == "/etc/kafka/truststore.jks"
    assert source["bootstrap.servers"] == "broker-1:9093"
    assert sink["sasl.jaas.config"] == expected_jaas and sink["security.protocol"] == "SASL_SSL"
    assert source["fetch.max.wait.ms"] == "50" and "fetch.max.wait.ms" not in sink  # a consumer's setting


def test_librdkafka_gets_the_settings_it_understands(kafka):
    import confluent_kafka

    props = kafka.librdkafka_properties()
    assert props == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                     "sasl.username": "svc-recstream", "sasl.password": "s3cret=with;odd",
                     "ssl.ca.location": certifi.where()}
    # librdkafka checks every key and value when a client is made (it connects later): a Java-only
    # key, or a protocol this build lacks, fails here.
    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "g", **props})
    consumer.close()
    with pytest.raises(confluent_kafka.KafkaException, match="TrustStores"):
        confluent_kafka.Consumer({"bootstrap.servers": "h:1", "group.id": "g", "ssl.truststore.location": "x"})


def test_an_unset_secret_is_named(monkeypatch):
    monkeypatch.delenv("K_PASSWORD", raising=False)
    kafka = KafkaSettings(bootstrap_servers="h:9093", properties={"sasl.jaas.config": 'password="${K_PASSWORD}";'})
    with pytest.raises(ConfigError, match="K_PASSWORD"):
        kafka.librdkafka_properties()
