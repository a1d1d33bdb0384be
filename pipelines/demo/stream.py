"""The demo's stream stage: the held-back events through the embedded broker and the stream job."""
from __future__ import annotations

from pathlib import Path

from features.labels import LabelPolicy
from pipelines.demo.config import DemoConfig


def stream_through_broker(cfg: DemoConfig, work: Path, labels: LabelPolicy, broker) -> dict:
    """The held-back events through the embedded Kafka broker and the stream job: produced keyed by
    user and stamped with their event time, read to the end; the dead-letter, example and
    accepted-record topics are copied to work/stream_rejected, stream_examples and stream_accepted
    (JSON lines). The topics stay on the broker for the continuous-training stage."""
    from pipelines.embedded.broker import create_stream_topics, event_records
    from pipelines.stream.config import StreamConfig
    from pipelines.stream.driver import run_stream

    lines = [line for path in sorted((work / "raw" / "stream").glob("*.jsonl"))
             for line in path.read_bytes().splitlines()]
    client = broker.client()
    try:
        kafka = broker.kafka()
        client.create_topic(kafka.topic, partitions=2)
        create_stream_topics(client, kafka)
        client.produce(kafka.topic, event_records(lines))
        examples = labels.kind == "impression_click"
        counts = run_stream(StreamConfig(workdir=work, kafka=kafka, sequence=cfg.sequence, recent_len=cfg.recent_len,
                                         category_len=cfg.category_len, labels=labels, examples=examples))
        for topic, folder, n in ((kafka.dead_letter_topic, "stream_rejected", counts["rejected_total"]),
                                 (kafka.examples_topic, "stream_examples", counts["examples"]),
                                 (kafka.accepted_topic, "stream_accepted", counts["accepted"])):
            (work / folder).mkdir(parents=True, exist_ok=True)
            values = [r.value.decode() for r in client.read(topic, n)] if n else []
            (work / folder / f"{topic}.jsonl").write_text("".join(v + "\n" for v in values))
    finally:
        client.close()
    return counts
