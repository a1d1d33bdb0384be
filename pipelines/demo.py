"""The demo: every component once, end to end, on the embedded defaults."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from features.labels import LabelPolicy
from features.pit import sort_log
from features.sequence import SequencePolicy
from pipelines.backfill import BackfillConfig, run_backfill
from pipelines.config import to_dict
from pipelines.feature_store import open_store, read_user_sequences
from pipelines.gates import model_gate, validate_table
from pipelines.publish import publish
from pipelines.ingest import ingest
from pipelines.progress import Stages
from pipelines.sources.synthetic import SyntheticConfig
from trainers.train import TrainConfig


@dataclass(frozen=True)
class DemoConfig:
    workdir: str = "runs/demo"
    dataset: str = "synthetic"
    path: str | None = None
    synthetic: SyntheticConfig = field(default_factory=lambda: SyntheticConfig(bad_fraction=0.001))
    sequence: SequencePolicy = field(default_factory=lambda: SequencePolicy(max_len=200))  # lifelong
    recent_len: int = 50
    category_len: int = 50
    labels: LabelPolicy = field(default_factory=LabelPolicy)
    # The ranker reads the embedded item vectors: a side feature, and a MUSE-style search over the history.
    # DIN + cosine search: eval AUC 0.719 on the demo's data (popularity 0.524); TIN + cosine with
    # sparse_lr 0.1 reached 0.717 (2026-12-04, `recstream demo` with train.model = "tin").
    train: TrainConfig = field(default_factory=lambda: TrainConfig(model="din", item_vectors=True, search="cosine",
                                                                   search_k=20))
    stream_fraction: float = 0.1  # the latest share of time, replayed through the stream job
    eval_fraction: float = 0.2  # the latest share of backfilled examples, held out for evaluation
    min_auc: float = 0.55
    min_lift: float = 0.0  # over the popularity baseline
    show_users: int = 3
    embed: bool = True  # embed the catalog (text encoder) and serve item_content vectors

    def __post_init__(self) -> None:
        if self.train.item_vectors and not self.embed:
            raise ValueError("train.item_vectors needs the embed stage: set embed = true or train.item_vectors = false")
        for name in ("stream_fraction", "eval_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def caps(cfg: DemoConfig) -> dict[str, int]:
    """Each sequence table's length cap, for its gate."""
    return {"user_sequence": cfg.sequence.max_len, "user_recent": cfg.recent_len,
            "user_category_sequence": cfg.category_len}


def load_tables(offline: Path, name: str):
    return ds.dataset(offline / name, format="parquet").to_table()


def time_split(examples, eval_fraction: float):
    """Train on the past, evaluate on the latest eval_fraction of the time range."""
    ts = examples.column("timestamp")
    lo, hi = pc.min_max(ts).values()
    cut = hi.as_py() - int((hi.as_py() - lo.as_py()) * eval_fraction)
    train = examples.filter(pc.less(ts, cut))
    return train, examples.filter(pc.greater_equal(ts, cut)), cut


def run_demo(cfg: DemoConfig) -> dict:
    from trainers.registry import register, set_champion
    from trainers.train import train

    work = Path(cfg.workdir).resolve()
    offline = work / "offline"
    # a rerun replaces the store and the stream's outputs
    for name in ("feast", "stream_rejected", "stream_examples", "stream_accepted"):
        shutil.rmtree(work / name, ignore_errors=True)
    stages = Stages(7)
    summary: dict = {"workdir": str(work), "config": to_dict(cfg)}

    with stages.stage("ingest events"):
        got = ingest(cfg.dataset, Path(cfg.path) if cfg.path else None, cfg.synthetic, work, cfg.stream_fraction)
        labels = cfg.labels if cfg.dataset == "synthetic" else replace(cfg.labels, kind=got.label_kind)
        summary["ingest"] = vars(got)
        stages.say(f"    {got.backfill_records:,} records for the backfill, {got.stream_records:,} held for the "
                   f"stream, {got.catalog_items:,} catalog items")

    with stages.stage("backfill (Beam)"):
        counts = run_backfill(BackfillConfig(input=str(work / "raw" / "backfill" / "*.jsonl"), output=str(offline),
                                             catalog=str(work / "catalog.parquet"), sequence=cfg.sequence,
                                             labels=labels, stats_as_of_ms=got.cutoff_ms,
                                             labels_until_ms=got.cutoff_ms,
                                             recent_len=cfg.recent_len, category_len=cfg.category_len))
        summary["backfill"] = counts
        stages.say(f"    read {counts['read']:,}, accepted {counts['accepted']:,}, rejected "
                   f"{counts['rejected_total']:,} {counts['rejected']}, duplicates {counts['duplicates']:,}, "
                   f"examples {counts['examples']:,}; dead letters in {offline / 'rejected'}")

    with stages.stage("item embeddings (Beam + encoders)"):
        vectors = None
        if cfg.embed:
            from pipelines.embed import EmbedConfig, run_embed
            from trainers.item_vectors import load_item_vectors

            embedded = run_embed(EmbedConfig(workdir=str(work)))
            summary["embed"] = embedded
            stages.say(f"    {embedded}")
            vectors = load_item_vectors(work) if cfg.train.item_vectors else None
        else:
            stages.say("    skipped (embed = false)")

    with stages.stage("feature store (Feast): gate, apply, materialize"):
        store = open_store(work)
        gates, online = publish(store, work, caps(cfg))
        for gate in gates:
            stages.say(f"    {gate.summary()}")
        summary["feature_gates"] = [vars(g) for g in gates]
        summary["materialized"] = online
        summary["materialized_users"] = online.get("user_sequence", 0)
        if cfg.embed:
            from pipelines.feature_store import materialize_item_vectors

            online["item_content"] = materialize_item_vectors(store, work)
        stages.say(f"    online rows: {online} in {work / 'feast' / 'online.db'}")
        sequences = load_tables(offline, "user_sequence")

    with stages.stage("train (TorchRec) and gate"):
        examples = load_tables(offline, "examples")
        log = sort_log(load_tables(offline, "behavior_log"))
        train_set, eval_set, cut = time_split(examples, cfg.eval_fraction)
        data_gate = validate_table(train_set, "examples")
        stages.say(f"    {train_set.num_rows:,} training examples before {cut}, {eval_set.num_rows:,} after; "
                   f"{data_gate.summary()}")
        summary["data_gate"] = vars(data_gate)
        if data_gate.passed:
            result = train(train_set, eval_set, log, cfg.train, vectors=vectors,
                           progress=lambda step, loss: stages.say(f"    step {step:>5}  loss {loss:.4f}"))
            metrics = result.eval_metrics
            gate = model_gate(metrics, cfg.min_auc, cfg.min_lift)
            stages.say(f"    AUC {metrics['auc']:.4f} vs popularity {metrics['baseline_auc']:.4f}; {gate.summary()}")
            summary.update(metrics=metrics, model_gate=vars(gate), samples_per_s=result.samples_per_s)
            if gate.passed:
                version = register(work / "models", result.state_dict,
                                   {"config": to_dict(cfg.train), "metrics": metrics, "sequence": to_dict(cfg.sequence),
                                    "trained_until_ms": int(cut), "dataset": cfg.dataset, **result.metadata()})
                set_champion(work / "models", version)
                summary["model_version"] = version
                stages.say(f"    registered {version} as champion in {work / 'models'}")
        else:
            stages.say("    training skipped: the data gate failed")

    with stages.stage("stream (PyFlink + Kafka): later events -> online features, examples"):
        users = [int(u) for u in sequences.column("user_id").to_pylist()]
        before = read_user_sequences(store, users)
        stream_counts = stream_through_broker(cfg, work, labels)
        summary["stream"] = stream_counts
        after = read_user_sequences(open_store(work), users)
        moved = [u for u in users if (after[u] or {}).get("last_event_ms") != (before[u] or {}).get("last_event_ms")]
        summary["stream"]["users_moved_forward"] = len(moved)
        stages.say(f"    {len(moved):,} of {len(users):,} users' online sequences moved forward, e.g.:")
        for u in moved[: cfg.show_users]:
            b, a = before[u] or {}, after[u] or {}
            stages.say(f"    user {u}: {b.get('seq_length')} behaviors to {b.get('last_event_ms')} -> "
                       f"{a.get('seq_length')} behaviors to {a.get('last_event_ms')}")
        stages.say(f"    {stream_counts}; dead letters in {work / 'stream_rejected'}, examples in "
                   f"{work / 'stream_examples'}")

    with stages.stage("summary"):
        summary["seconds"] = stages.seconds
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
        stages.say(_report(summary))
    return summary


def stream_through_broker(cfg: DemoConfig, work: Path, labels: LabelPolicy) -> dict:
    """The held-back events through the embedded Kafka broker and the stream job: produced keyed by
    user and stamped with their event time, read to the end; the dead-letter, example and
    accepted-record topics are copied to work/stream_rejected, stream_examples and stream_accepted
    (JSON lines)."""
    from pipelines.broker import create_stream_topics, event_records, running_broker
    from pipelines.stream import StreamConfig, run_stream
    from pipelines.stream_sources import KafkaSettings

    lines = [line for path in sorted((work / "raw" / "stream").glob("*.jsonl"))
             for line in path.read_bytes().splitlines()]
    with running_broker() as broker:
        client = broker.client()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
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
        client.close()
    return counts


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _report(s: dict) -> str:
    b = s["backfill"]
    lines = [
        "recstream demo summary",
        f"  events read {b['read']:,}  accepted {b['accepted']:,}  rejected {b['rejected_total']:,}",
        f"  users online {s.get('materialized_users', 0):,}",
    ]
    if "metrics" in s:
        m = s["metrics"]
        lines.append(f"  AUC {m['auc']:.4f} vs popularity {m['baseline_auc']:.4f} "
                     f"(model {s.get('model_version', 'not promoted')})")
    st = s.get("stream", {})
    lines.append(f"  stream: read {st.get('read', 0):,}, rejected {st.get('rejected_total', 0):,}, "
                 f"late {st.get('late', 0):,}, rows written {st.get('rows_written', 0):,}")
    lines.append("  seconds per stage: " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items()))
    lines.append(f"  artifacts: {s['workdir']} (summary.json, offline/, feast/, models/)")
    return "\n".join(lines)
