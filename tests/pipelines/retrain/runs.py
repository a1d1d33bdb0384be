"""A small backfilled run with registered champions and a held-back slice replayed as the stream's outputs."""
from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds

from features.labels import LabelPolicy
from features.pit import sort_log
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.config import to_dict
from pipelines.retrain.replay import stream_outputs
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig, SyntheticStream
from trainers.ranking.train import TrainConfig, train
from trainers.registry import Registry
from trainers.retrieval.train import RetrievalConfig, train_retriever

RANKER = TrainConfig(model="din", steps=40, batch_size=128, threads=1, seed=0)
RETRIEVER = RetrievalConfig(model="comirec-sa", steps=40, batch_size=64, interests=2, embedding_dim=16, threads=1)


def small_run(work: Path, users: int = 60, days: int = 6, stream_days: float = 2.0, seed: int = 0
              ) -> tuple[list[bytes], list[bytes]]:
    """Backfill the first days into work/offline and return the later days as the stream would emit
    them: (accepted records, example records)."""
    cfg = SyntheticConfig(users=users, items=200, days=days, seed=seed)
    lines = [line for window, _ in SyntheticStream(cfg).windows() for line in window]
    cutoff = cfg.start_ms + int((days - stream_days) * DAY_MS)
    early, late = [], []
    for line in lines:
        (early if _ts(line) < cutoff else late).append(line)
    write_json_lines(iter(early), work / "raw")
    run_backfill(BackfillConfig(input=str(work / "raw" / "*.jsonl"), output=str(work / "offline"),
                                labels_until_ms=cutoff))
    return stream_outputs(late, LabelPolicy())


def train_champions(work: Path) -> dict:
    """A ranker and a retriever trained briefly on the backfill: {kind: (weights, config)}."""
    examples = ds.dataset(work / "offline" / "examples", format="parquet").to_table()
    log = sort_log(ds.dataset(work / "offline" / "behavior_log", format="parquet").to_table())
    ranked = train(examples, examples.slice(0, 0), log, RANKER)
    retrieved = train_retriever(log, log, RETRIEVER)
    return {"ranker": (ranked.state_dict, RANKER), "retriever": (retrieved.state_dict, RETRIEVER)}


def register_champions(work: Path, champions: dict) -> dict[str, str]:
    """Register and promote each champion in work/registry; returns {kind: version}."""
    registry, out = Registry(work / "registry"), {}
    for kind, (state, cfg) in champions.items():
        out[kind] = registry.register(kind, state, {"config": to_dict(cfg)}, why="the backfill's model")
        registry.promote(kind, out[kind], why="the backfill's model")
    return out


def _ts(line: str) -> int:
    import json

    try:
        ts = json.loads(line).get("timestamp")
    except ValueError:
        return 0
    return ts if isinstance(ts, int) else 0
