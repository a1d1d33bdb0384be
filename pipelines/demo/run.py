"""The demo's stages in order; each takes the run so far and adds its part to the summary."""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from features.labels import LabelPolicy
from features.pit import sort_log
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.config import to_dict
from pipelines.demo.config import DemoConfig, caps
from pipelines.demo.report import jsonable, report
from pipelines.embedded.broker import running_broker
from pipelines.gates.model import model_gate
from pipelines.gates.tables import validate_table
from pipelines.progress import Stages
from pipelines.sources.ingest import ingest
from pipelines.store.feature_store import open_store, read_user_sequences
from pipelines.store.publish import publish


@dataclass
class Run:
    """What the stages share: the config, the run folder, the summary and a way to print."""

    cfg: DemoConfig
    work: Path
    say: Callable[[str], None]
    summary: dict = field(default_factory=dict)
    labels: LabelPolicy | None = None
    vectors: object = None
    store: object = None
    broker: object = None  # the embedded Kafka broker, from the stream stage to the end of the run

    @property
    def offline(self) -> Path:
        return self.work / "offline"


def run_demo(cfg: DemoConfig) -> dict:
    """Every stage once on the embedded defaults; returns the summary (also WORKDIR/summary.json).

    Example:
        >>> summary = run_demo(DemoConfig(workdir="runs/demo"))   # doctest: +SKIP
        >>> summary["model_version"]                              # doctest: +SKIP
        'v0001'
    """
    work = Path(cfg.workdir).resolve()
    for name in ("feast", "stream_rejected", "stream_examples", "stream_accepted", "retrain", "offline/user_interests"):
        # a rerun replaces them (the registry keeps every version)
        shutil.rmtree(work / name, ignore_errors=True)
    steps = [("ingest events", ingest_stage), ("backfill", backfill_stage),
             ("item embeddings (Beam + encoders)", embed_stage),
             ("feature store (Feast): gate, apply, materialize", store_stage),
             ("train (TorchRec) and gate", train_stage),
             ("stream (PyFlink + Kafka): later events -> online features, examples", stream_stage)]
    if cfg.retrain:
        from pipelines.demo.retrain import retrain_stage

        steps.append(("continuous training: windows -> gates -> registry (MLflow)", retrain_stage))
    stages = Stages(len(steps) + 1)
    run = Run(cfg, work, stages.say, {"workdir": str(work), "config": to_dict(cfg)})
    with ExitStack() as stack:
        run.broker = stack.enter_context(running_broker())
        for title, stage in steps:
            with stages.stage(title):
                stage(run)
    with stages.stage("summary"):
        run.summary["seconds"] = stages.seconds
        (work / "summary.json").write_text(json.dumps(run.summary, indent=2, default=jsonable))
        stages.say(report(run.summary))
    return run.summary


def ingest_stage(run: Run) -> None:
    cfg = run.cfg
    got = ingest(cfg.dataset, Path(cfg.path) if cfg.path else None, cfg.synthetic, run.work, cfg.stream_fraction)
    run.labels = cfg.labels if cfg.dataset == "synthetic" else replace(cfg.labels, kind=got.label_kind)
    run.summary["ingest"] = vars(got)
    run.say(f"    {got.backfill_records:,} records for the backfill, {got.stream_records:,} held for the "
            f"stream, {got.catalog_items:,} catalog items")


def backfill_stage(run: Run) -> None:
    cfg, cutoff = run.cfg, run.summary["ingest"]["cutoff_ms"]
    counts = run_backfill(BackfillConfig(input=str(run.work / "raw" / "backfill" / "*.jsonl"), output=str(run.offline),
                                         catalog=str(run.work / "catalog.parquet"), sequence=cfg.sequence,
                                         labels=run.labels, stats_as_of_ms=cutoff, labels_until_ms=cutoff,
                                         recent_len=cfg.recent_len, category_len=cfg.category_len))
    run.summary["backfill"] = counts
    run.say(f"    read {counts['read']:,}, accepted {counts['accepted']:,}, rejected "
            f"{counts['rejected_total']:,} {counts['rejected']}, duplicates {counts['duplicates']:,}, "
            f"examples {counts['examples']:,}; dead letters in {run.offline / 'rejected'}")


def embed_stage(run: Run) -> None:
    if not run.cfg.embed:
        run.say("    skipped (embed = false)")
        return
    from pipelines.embed.job import EmbedConfig, run_embed
    from trainers.item_vectors import load_item_vectors

    embedded = run_embed(EmbedConfig(workdir=str(run.work)))
    run.summary["embed"] = embedded
    run.say(f"    {embedded}")
    run.vectors = load_item_vectors(run.work) if run.cfg.train.item_vectors else None


def store_stage(run: Run) -> None:
    run.store = open_store(run.work)
    gates, online = publish(run.store, run.work, caps(run.cfg))
    for gate in gates:
        run.say(f"    {gate.summary()}")
    run.summary.update(feature_gates=[vars(g) for g in gates], materialized=online,
                       materialized_users=online.get("user_sequence", 0))
    if run.cfg.embed:
        from pipelines.store.feature_store import materialize_item_vectors

        online["item_content"] = materialize_item_vectors(run.store, run.work)
    run.say(f"    online rows: {', '.join(f'{view} {n:,}' for view, n in online.items())} in "
            f"{run.work / 'feast' / 'online.db'}")


def train_stage(run: Run) -> None:
    """The ranker on the backfill's examples, gated against popularity; then the retriever. Each
    passing model becomes the champion in the run's MLflow registry (WORKDIR/registry)."""
    from trainers.ranking.train import train
    from trainers.registry import Registry

    cfg, registry = run.cfg, Registry(run.work / "registry")
    examples, log = load_table(run.offline, "examples"), sort_log(load_table(run.offline, "behavior_log"))
    train_set, eval_set, cut = time_split(examples, cfg.eval_fraction)
    data_gate = validate_table(train_set, "examples")
    run.say(f"    {train_set.num_rows:,} training examples before {_iso(cut)}, {eval_set.num_rows:,} after; "
            f"{data_gate.summary()}")
    run.summary["data_gate"] = vars(data_gate)
    if not data_gate.passed:
        run.say("    training skipped: the data gate failed")
        return
    scratch = Path(tempfile.mkdtemp(prefix=".checkpoints-", dir=run.work))  # copied into the registry, then gone
    result = train(train_set, eval_set, log, cfg.train, vectors=run.vectors, checkpoint_dir=scratch / "ranker",
                   progress=lambda step, loss: run.say(f"    step {step:>5}  loss {loss:.4f}"))
    metrics = result.eval_metrics
    gate = model_gate(metrics, cfg.min_auc, cfg.min_lift)
    run.say(f"    ranker AUC {metrics['auc']:.4f} vs popularity {metrics['baseline_auc']:.4f}; {gate.summary()}")
    run.summary.update(metrics=metrics, model_gate=vars(gate), samples_per_s=result.samples_per_s,
                       losses=[round(float(x), 5) for x in result.losses])
    if gate.passed:
        version = registry.register("ranker", result.state_dict,
                                    {"config": to_dict(cfg.train), "metrics": metrics, "sequence": to_dict(cfg.sequence),
                                     "trained_until_ms": int(cut), "dataset": cfg.dataset, **result.metadata()},
                                    files={"checkpoint": result.checkpoint}, metrics=metrics,
                                    why="the demo's backfill model")
        registry.promote("ranker", version, why="beat popularity on the later slice")
        run.summary["model_version"] = version
        run.say(f"    registered ranker version {version} as champion in {registry.root}")
    run.summary["retriever"] = retriever_champion(run, registry, log, cut, scratch)
    shutil.rmtree(scratch, ignore_errors=True)


def retriever_champion(run: Run, registry, log: pa.Table, cut: int, scratch: Path) -> dict:
    """The multi-interest retriever on every behavior before the cut, gated on Recall@50 over
    the later behaviors against recent popularity; registered and promoted if it beats it."""
    from pipelines.gates.model import ModelGatePolicy, retriever_gate
    from pipelines.retrain.evaluate import Log, retriever_metrics
    from trainers.retrieval.learner import RetrieverLearner

    cfg = run.cfg.retriever
    before = log.filter(pc.less(log.column("timestamp"), cut))
    later = log.filter(pc.greater_equal(log.column("timestamp"), cut))
    learner = RetrieverLearner(cfg)  # a learner, so that its checkpoint carries the optimizer state on
    try:
        learner.fit(before, before, cfg.seed, epochs=max(1, cfg.steps * cfg.batch_size // max(before.num_rows, 1)))
        state = learner.state_dict()
        checkpoint = learner.save(scratch / "retriever")
    finally:
        learner.close()
    view = Log(log)
    got = retriever_metrics(state, cfg, later, view, 50)
    popular = retriever_metrics(None, cfg, later, view, 50)
    gate, _ = retriever_gate(popular, got, state, ModelGatePolicy(max_recall_drop=0.0, max_hit_rate_drop=1.0))
    run.say(f"    retriever recall@50 {got['recall@50']:.4f} vs popularity {popular['recall@50']:.4f}; {gate.summary()}")
    out = {"metrics": got, "popularity": popular, "gate": vars(gate)}
    if gate.passed:
        out["version"] = registry.register("retriever", state, {"config": to_dict(cfg), "metrics": got},
                                           files={"checkpoint": checkpoint}, metrics=got,
                                           why="the demo's backfill model")
        registry.promote("retriever", out["version"], why="beat recent popularity on the later slice")
        run.say(f"    registered retriever version {out['version']} as champion")
    return out


def stream_stage(run: Run) -> None:
    from pipelines.demo.stream import stream_through_broker

    users = [int(u) for u in load_table(run.offline, "user_sequence").column("user_id").to_pylist()]
    before = read_user_sequences(run.store, users)
    counts = stream_through_broker(run.cfg, run.work, run.labels, run.broker)
    after = read_user_sequences(open_store(run.work), users)
    moved = [u for u in users if (after[u] or {}).get("last_event_ms") != (before[u] or {}).get("last_event_ms")]
    run.summary["stream"] = {**counts, "users_moved_forward": len(moved)}
    run.say(f"    {len(moved):,} of {len(users):,} users' online sequences moved forward, e.g.:")
    for u in moved[: run.cfg.show_users]:
        b, a = before[u] or {}, after[u] or {}
        run.say(f"    user {u}: {b.get('seq_length')} behaviors to {b.get('last_event_ms')} -> "
                f"{a.get('seq_length')} behaviors to {a.get('last_event_ms')}")
    run.say(f"    {counts}; dead letters in {run.work / 'stream_rejected'}, examples in "
            f"{run.work / 'stream_examples'}")


def _iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


def load_table(offline: Path, name: str) -> pa.Table:
    return ds.dataset(offline / name, format="parquet").to_table()


def time_split(examples: pa.Table, eval_fraction: float) -> tuple[pa.Table, pa.Table, int]:
    """Train on the past, evaluate on the latest eval_fraction of the time range: (train, eval, cut ms)."""
    ts = examples.column("timestamp")
    lo, hi = pc.min_max(ts).values()
    cut = hi.as_py() - int((hi.as_py() - lo.as_py()) * eval_fraction)
    return examples.filter(pc.less(ts, cut)), examples.filter(pc.greater_equal(ts, cut)), cut
