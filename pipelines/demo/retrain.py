"""The demo's continuous-training stage: the loop over the stream job's topics, then a poisoned window.

The loop reads the examples and accepted-record topics the stream stage left on the embedded
broker, window by window, from the champions the train stage registered. Then, as a producer
bug would, a window of examples all labeled clicked is produced to the examples topic; the
data gate quarantines it and the champions keep serving.
"""
from __future__ import annotations

import json

from pipelines.retrain.config import RetrainConfig
from pipelines.retrain.loop import run_retrain
from pipelines.stream.config import KafkaSettings


def retrain_stage(run) -> None:
    from pipelines.cli.retrain import window_line

    topic_examples = run.labels.kind == "impression_click"
    cfg = RetrainConfig(workdir=run.work, kafka=run.broker.kafka(),
                        examples="topic" if topic_examples else "next_item", window=run.cfg.retrain_window,
                        seed=run.cfg.synthetic.seed,
                        **({} if topic_examples else {"labels": run.labels}))  # the backfill's negatives policy
    records = run_retrain(cfg, say=lambda line: None)
    if run.cfg.poison_window and topic_examples and records:
        poison(run.broker, cfg.kafka, size=max(cfg.window.min_records, 300))
        records += run_retrain(cfg, say=lambda line: None)
    for record in records:
        run.say(f"    {window_line(record)}")
    run.summary["retrain"] = summarize(records)


def poison(broker, kafka: KafkaSettings, size: int) -> None:
    """``size`` examples copied from the topic with every label set to 1 and new event_ids."""
    from pipelines.embedded.kafka import Record

    client = broker.client()
    try:
        ends = client.end_offsets(kafka.examples_topic)
        sample = client.read(kafka.examples_topic, sum(ends.values()))[-size:]  # the newest: not stale
        bad = []
        for i, rec in enumerate(sample):
            example = json.loads(rec.value)
            example.update(label=1, event_id=f"poison-{i}")
            bad.append(Record(value=json.dumps(example).encode(), key=rec.key, timestamp=rec.timestamp))
        client.produce(kafka.examples_topic, bad)
    finally:
        client.close()


def summarize(records: list[dict]) -> dict:
    """Windows, promotions and rejections per model, and the quarantined windows with their reasons."""
    out = {"windows": len(records), "promoted": {}, "rejected": {}, "quarantined": []}
    for r in records:
        if not r["data_gate"]["passed"]:
            out["quarantined"].append({"window": r["window"], "reasons": r["data_gate"]["reasons"]})
        for kind, m in r["models"].items():
            key = "promoted" if m.get("decision") == "promoted" else "rejected"
            out[key][kind] = out[key].get(kind, 0) + 1
            if m.get("decision") == "promoted":
                out.setdefault("champions", {})[kind] = m["version"]
    return out
