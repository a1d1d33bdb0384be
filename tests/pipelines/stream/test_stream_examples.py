"""The stream's click join (no engine) against the batch labels over the naive dedup, and the
stream job's configuration: sources, secrets from the environment, the CLI flags."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from tests.conftest import naive_dedup, random_events
from features.labels import LabelPolicy, impression_click
from pipelines.cli import parser
from pipelines.cli.stream import stream_settings
from pipelines.config import ConfigError, from_dict
from pipelines.stream.config import KafkaSettings, StreamConfig
from pipelines.stream.examples import EXAMPLE_FIELDS, ClickJoin, example_json

WINDOW = 10


def _batch(events) -> Counter:
    deduped = sorted(naive_dedup(events), key=lambda e: (e.timestamp, e.event_id))
    return Counter(impression_click(deduped, WINDOW))


@pytest.mark.parametrize("seed", range(20))
def test_click_join_equals_batch_labels_in_any_arrival_order(seed):
    rng = random.Random(seed)
    events = random_events(rng, 80, users=(5,), items=4, span_ms=60, types=("impression", "click", "view"))
    # Everything at once, in a shuffled order, settled at the end of time.
    join = ClickJoin()
    for e in rng.sample(events, len(events)):
        join.add(e)
    got = join.due(5, 10**15, WINDOW)
    assert Counter(ex[:5] for ex in got) == _batch(events)
    assert all(ex[5] == ex[3] + WINDOW for ex in got)
    assert join.copies == {} and join.emitted == set()  # everything settled is forgotten

    # In time order, settling as a watermark would: an impression comes out once its window is
    # over, never twice, and what can no longer matter is forgotten on the way. (Copies keep their
    # event's time here, as redeliveries do: a copy retimed past an emitted impression's window is
    # the one documented difference.)
    events = random_events(rng, 80, users=(5,), items=4, span_ms=60, types=("impression", "click", "view"),
                           retime_copies=False)
    join, out, peak = ClickJoin(), [], 0
    for e in sorted(events, key=lambda e: e.timestamp):
        join.add(e)
        out += join.due(5, e.timestamp - 1, WINDOW)  # every later event is at or after this time
        peak = max(peak, len(join.copies))
    out += join.due(5, 10**15, WINDOW)
    assert Counter(ex[:5] for ex in out) == _batch(events)
    assert peak < len({e.event_id for e in events})  # the join forgot settled events on the way


def test_an_example_line_is_what_json_dumps_gives_its_fields():
    rng = random.Random(7)
    ids = ["e-1", "", 'quote " and \\ back', "caf\u00e9 \u2603 \U0001f600", "tab\tnew\nline\x00"]
    for _ in range(200):
        ints = [rng.choice([0, -1, 1, 2**62, -(2**63), rng.randrange(-10**15, 10**15)]) for _ in EXAMPLE_FIELDS[:-1]]
        example = (*ints, rng.choice(ids))
        assert example_json(example) == json.dumps(dict(zip(EXAMPLE_FIELDS, example)))


def test_config_needs_one_source_and_reads_secrets_from_the_environment(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="exactly one source"):
        StreamConfig(workdir=tmp_path)
    with pytest.raises(ValueError, match="exactly one source"):
        StreamConfig(workdir=tmp_path, source=tmp_path, kafka={"bootstrap_servers": "h:9092"})
    with pytest.raises(ConfigError, match="unknown key"):
        StreamConfig(workdir=tmp_path, kafka={"bootstrap_servers": "h:9092", "topics": "x"})
    with pytest.raises(ValueError, match="starting_offsets"):
        KafkaSettings(bootstrap_servers="h:9092", starting_offsets="newest")
    with pytest.raises(ValueError, match="checkpoints"):
        StreamConfig(workdir=tmp_path, source=tmp_path, restore="latest")
    with pytest.raises(ValueError, match="impression_click"):
        StreamConfig(workdir=tmp_path, source=tmp_path, labels=LabelPolicy(kind="next_item"))
    with pytest.raises(ValueError, match="allowed_lateness_ms"):
        StreamConfig(workdir=tmp_path, source=tmp_path, allowed_lateness_ms=-1)
    cfg = StreamConfig(workdir=tmp_path, source=tmp_path)
    assert cfg.dead_letter == tmp_path / "stream_rejected" and cfg.kafka is None

    kafka = KafkaSettings(bootstrap_servers="h:9092", properties={"sasl.jaas.config": "user=${K_USER} pw=${K_PW}",
                                                                  "security.protocol": "SASL_SSL"})
    monkeypatch.setenv("K_USER", "svc")
    monkeypatch.delenv("K_PW", raising=False)
    with pytest.raises(ValueError, match="K_PW is not set"):
        kafka.client_properties()
    monkeypatch.setenv("K_PW", "s3cret")
    assert kafka.client_properties() == {"sasl.jaas.config": "user=svc pw=s3cret", "security.protocol": "SASL_SSL"}


def test_the_source_fetch_wait_is_kafkas_unless_set_and_a_property_wins():
    """Tansu answers an empty fetch only when its wait is up: the embedded broker's settings shorten it."""
    assert "fetch.max.wait.ms" not in KafkaSettings(bootstrap_servers="h:9092").source_properties()
    assert KafkaSettings(bootstrap_servers="h:9092", fetch_max_wait_ms=50).source_properties()["fetch.max.wait.ms"] == "50"
    explicit = KafkaSettings(bootstrap_servers="h:9092", fetch_max_wait_ms=50, properties={"fetch.max.wait.ms": 500})
    assert explicit.source_properties()["fetch.max.wait.ms"] == "500"
    with pytest.raises(ConfigError, match="fetch_max_wait_ms"):
        KafkaSettings(bootstrap_servers="h:9092", fetch_max_wait_ms=-1)


def test_cli_flags_and_config_file_build_one_stream_config(tmp_path):
    toml = tmp_path / "stream.toml"
    toml.write_text('workdir = "w"\nfollow = true\n[kafka]\nbootstrap_servers = "a:1"\ntopic = "t"\n'
                    '[sequence]\nmax_len = 7\n')
    args = parser().parse_args(["stream", "--config", str(toml), "--group-id", "g", "--max-len", "9",
                                "--kafka-property", "security.protocol=SSL", "--checkpoints", "c",
                                "--allowed-lateness-ms", "5", "--no-examples", "--fetch-max-wait-ms", "50"])
    cfg = from_dict(StreamConfig, stream_settings(args))
    assert (cfg.kafka.bootstrap_servers, cfg.kafka.topic, cfg.kafka.group_id) == ("a:1", "t", "g")
    assert cfg.kafka.fetch_max_wait_ms == 50
    assert cfg.kafka.properties == {"security.protocol": "SSL"} and cfg.sequence.max_len == 9
    assert cfg.follow and not cfg.examples and cfg.allowed_lateness_ms == 5 and str(cfg.checkpoints) == "c"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        stream_settings(parser().parse_args(["stream", "--workdir", "w", "--kafka", "a:1",
                                             "--kafka-property", "novalue"]))
    with pytest.raises(ConfigError, match="--workdir"):
        stream_settings(parser().parse_args(["stream", "--kafka", "a:1"]))


def test_cadence_flags_reach_the_config():
    base = ["stream", "--workdir", "w", "--kafka", "a:1"]
    cfg = from_dict(StreamConfig, stream_settings(parser().parse_args(base)))
    assert (cfg.flush_ms, cfg.item_flush_ms, cfg.bundle_ms, cfg.item_stats, cfg.python_mode) == \
        (100, 250, 100, True, "thread")
    cfg = from_dict(StreamConfig, stream_settings(parser().parse_args(
        [*base, "--flush-ms", "50", "--item-flush-ms", "400", "--bundle-ms", "1000", "--no-item-stats",
         "--python-mode", "process"])))
    assert (cfg.flush_ms, cfg.item_flush_ms, cfg.bundle_ms, cfg.item_stats, cfg.python_mode) == \
        (50, 400, 1000, False, "process")
    with pytest.raises(ConfigError, match="bundle_ms"):
        from_dict(StreamConfig, stream_settings(parser().parse_args([*base, "--bundle-ms", "0"])))


def test_online_store_and_view_lengths_come_from_the_file_or_the_flags(tmp_path, monkeypatch, capsys):
    toml = tmp_path / "stream.toml"
    toml.write_text('workdir = "w"\nrecent_len = 20\n[kafka]\nbootstrap_servers = "a:1"\n'
                    '[online]\nkind = "redis"\nredis_url = "r:1"\n')
    cfg = from_dict(StreamConfig, stream_settings(parser().parse_args(["stream", "--config", str(toml)])))
    assert (cfg.online.kind, cfg.online.redis_url, cfg.recent_len, cfg.category_len) == ("redis", "r:1", 20, 50)
    cfg = from_dict(StreamConfig, stream_settings(parser().parse_args(
        ["stream", "--config", str(toml), "--redis-url", "r:2", "--category-len", "9"])))
    assert (cfg.online.redis_url, cfg.category_len, cfg.features().category.max_len) == ("r:2", 9, 9)
    with pytest.raises(ConfigError, match="online: online store kind must be .sqlite. or .redis."):
        from_dict(StreamConfig, {"workdir": "w", "kafka": {"bootstrap_servers": "a:1"}, "online": {"kind": "dynamo"}})
    with pytest.raises(ConfigError, match="recent_len"):
        from_dict(StreamConfig, {"workdir": "w", "kafka": {"bootstrap_servers": "a:1"}, "recent_len": 0})
    monkeypatch.delenv("RECSTREAM_REDIS_URL", raising=False)
    from pipelines.cli import main

    assert main(["materialize", "--workdir", str(tmp_path), "--online", "redis"]) == 2
    assert "RECSTREAM_REDIS_URL" in capsys.readouterr().err  # the error names the way to give the address
