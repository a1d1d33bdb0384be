"""Flink's Kafka connector jars, which the job hands to Flink when its source is Kafka.

scripts/fetch_stream_deps.sh puts them (and the embedded broker's binary) in
.cache/stream-deps/; $RECSTREAM_STREAM_DEPS names another folder. In production the
official connector release for the cluster's Flink version goes into the job image
(infra/Dockerfile).
"""
from __future__ import annotations

import os
from pathlib import Path

from features.errors import MissingInput

REPO = Path(__file__).resolve().parents[2]
CONNECTOR_JARS = ("flink-connector-kafka-4.0.1-2.0.jar", "kafka-clients-3.9.1.jar")
FETCH_HINT = "run scripts/fetch_stream_deps.sh (make setup does) to fetch it"


def stream_deps() -> Path:
    """The folder with the connector jars and the embedded broker's binary."""
    return Path(os.environ.get("RECSTREAM_STREAM_DEPS") or REPO / ".cache" / "stream-deps")


def kafka_jars() -> list[Path]:
    """The Kafka connector jars to hand to Flink (pipeline.jars)."""
    paths = [stream_deps() / name for name in CONNECTOR_JARS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MissingInput(", ".join(missing), f"the Kafka connector jar(s) are not there; {FETCH_HINT}")
    return paths
