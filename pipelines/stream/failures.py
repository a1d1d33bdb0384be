"""The stream job's failures as one line where the user can fix them: Kafka that cannot be reached.

check_kafka runs before the job starts (a bounded wait, not Flink's minutes of retries on a
wrong address); explain turns a failed job's Java trace whose cause is Kafka's into one line
naming the address. Anything else keeps its trace: it is a bug to report.
"""
from __future__ import annotations

import logging
import re

from features.errors import ServiceError
from pipelines.stream.config import KafkaSettings

PREFLIGHT_S = 10.0
_QUIET = logging.getLogger("recstream.kafka.preflight")  # librdkafka's retries: the one-line error says it
_QUIET.setLevel(logging.CRITICAL)
# "Caused by: org.apache.kafka.common.errors.TimeoutException: Timed out waiting for ..."
_KAFKA_CAUSE = re.compile(r"^Caused by: (org\.apache\.kafka\.\S+?)(?::\s*(.*))?$", re.MULTILINE)


def check_kafka(settings: KafkaSettings, timeout_s: float = PREFLIGHT_S) -> None:
    """The brokers answer and the events topic exists, within ``timeout_s``; else a ServiceError."""
    from pipelines.embedded.kafka import KafkaClient

    with KafkaClient(settings.bootstrap_servers, client_id="recstream-preflight", timeout_s=timeout_s,
                     properties={**settings.librdkafka_properties(), "logger": _QUIET}) as client:
        client.partitions(settings.topic)


def explain(trace: str, settings: KafkaSettings | None) -> str:
    """One line for a failure caused by Kafka (the deepest Kafka cause in the trace); else the trace."""
    causes = _KAFKA_CAUSE.findall(trace)
    if settings is None or not causes:
        return trace
    kind, message = causes[-1]
    what = f"{kind.rsplit('.', 1)[-1]}: {message}".strip().rstrip(":")
    return str(ServiceError("Kafka", settings.bootstrap_servers, f"the job failed ({what})",
                            "check that the brokers are up and that --kafka names them; with checkpoints, "
                            "restart with --restore latest to go on from the last one"))
