"""`recstream train`: train a ranker or a retriever from a run folder the backfill wrote.

Reads ``<workdir>/offline/examples`` and ``<workdir>/offline/behavior_log``,
splits by time (features.splits: train on the past, validate on the next
slice, test on the last), trains, and writes the unsharded weights and the
metrics to ``<workdir>/models/<model>/``.

- rankers (mean | din | tin, any search unit): trainers.ranking.train on the labeled
  examples; AUC, GAUC (per user) and logloss on validation and test, for the
  model and for the popularity baseline; every validation and test score in
  ``predictions.parquet`` (split, user_id, item_id, category_id, timestamp,
  label, score).
- retrievers (single | comirec-sa | mind): trainers.retrieval.train on every
  behavior as a next-item positive; Recall/HR/NDCG@50 on the test slice.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import torch

from features.errors import ConfigError, MissingInput
from features.pit import sort_log
from features.splits import time_splits
from pipelines.staged import staged
from pipelines.train import RANKERS, RETRIEVERS

OUTPUTS = ("weights.pt", "metrics.json", "predictions.parquet")


def _table(workdir: Path, name: str) -> pa.Table:
    path = workdir / "offline" / name
    if not path.exists():
        raise MissingInput(path, f"run `recstream backfill --output {workdir / 'offline'}` first")
    return ds.dataset(path, format="parquet").to_table()


def run_train(workdir: Path, model: str, steps: int | None = None, seed: int = 0, search: str = "none",
              search_k: int = 0, valid_fraction: float = 0.1, test_fraction: float = 0.1,
              progress=None, sparse_lr: float | None = None) -> dict:
    """Train ``model`` on the run in ``workdir``; returns (and writes) its metrics.

    Rankers: ``sparse_lr`` overrides TrainConfig.sparse_lr (the tables' RowWiseAdagrad rate)."""
    if model not in RANKERS + RETRIEVERS:
        raise ConfigError(f"model must be one of {RANKERS + RETRIEVERS}, got {model!r}")
    if steps is not None and steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if sparse_lr is not None and not sparse_lr > 0:
        raise ConfigError(f"sparse_lr must be above 0, got {sparse_lr}")
    workdir = Path(workdir)
    log = sort_log(_table(workdir, "behavior_log"))
    out = workdir / "models" / model
    # Written aside and swapped in whole (pipelines/staged.py): a killed run leaves the previous
    # run's weights, metrics and predictions together, never a mix.
    with staged(out, owned=OUTPUTS) as stage:
        if model in RANKERS:
            result = _ranker(workdir, log, model, steps, seed, search, search_k, valid_fraction, test_fraction,
                             progress, sparse_lr, stage)
        else:
            result = _retriever(log, model, steps, seed, valid_fraction, test_fraction, progress)
        state = result.pop("state_dict")
        torch.save(state, stage / "weights.pt")
        (stage / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    result["path"] = str(out)
    return result


def _ranker(workdir, log, model, steps, seed, search, search_k, valid_fraction, test_fraction, progress,
            sparse_lr, out) -> dict:
    import pyarrow.parquet as pq

    from trainers.metrics import popularity_scores, ranking_metrics
    from trainers.ranking.train import TrainConfig, predict, train

    cfg = TrainConfig(model=model, search=search, search_k=search_k, seed=seed)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    if sparse_lr is not None:
        cfg = dataclasses.replace(cfg, sparse_lr=sparse_lr)
    split = time_splits(_table(workdir, "examples"), valid_fraction, test_fraction)
    res = train(split.train, split.valid, log, cfg, progress=progress)
    scores = {"valid": res.eval_scores,
              "test": predict(res.state_dict, cfg, split.test, log) if split.test.num_rows else np.zeros(0)}
    metrics, rows = {}, []
    for name in ("valid", "test"):
        table = getattr(split, name)
        users, labels = table.column("user_id").to_numpy(), table.column("label").to_numpy()
        metrics[name] = {**ranking_metrics(users, labels, scores[name]),
                         "popularity": ranking_metrics(users, labels, popularity_scores(split.train, table))}
        rows.append(table.select(["user_id", "item_id", "category_id", "timestamp", "label"])
                    .append_column("score", pa.array(scores[name], pa.float64()))
                    .append_column("split", pa.array([name] * table.num_rows, pa.string())))
    pq.write_table(pa.concat_tables(rows), out / "predictions.parquet")
    return {"model": model, "search": search, "search_k": search_k, "sparse_lr": cfg.sparse_lr,
            "rows": [split.train.num_rows, split.valid.num_rows, split.test.num_rows],
            "first_loss": res.losses[0], "last_loss": res.losses[-1], **metrics,
            "samples_per_s": res.samples_per_s, "state_dict": res.state_dict}


def _retriever(log, model, steps, seed, valid_fraction, test_fraction, progress) -> dict:
    from trainers.retrieval.metrics import retrieval_metrics
    from trainers.retrieval.train import RetrievalConfig, item_vectors, retrieve, train_retriever, user_vectors

    cfg = RetrievalConfig(model=model, seed=seed)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    positives = log.select(["user_id", "item_id", "category_id", "timestamp"]).append_column(
        "label", pa.array(np.ones(log.num_rows, np.int8)))
    split = time_splits(positives, valid_fraction, test_fraction)
    res = train_retriever(split.train, log, cfg, progress=progress)
    out = {"model": model, "rows": [split.train.num_rows, split.valid.num_rows, split.test.num_rows],
           "first_loss": res.losses[0], "last_loss": res.losses[-1], "samples_per_s": res.samples_per_s,
           "state_dict": res.state_dict}
    if split.test.num_rows:
        # Each test user is asked at the start of the test slice for the items it takes in the slice.
        users = np.unique(split.test.column("user_id").to_numpy())
        times = np.full(len(users), split.test_from, np.int64)
        items, idx = np.unique(log.column("item_id").to_numpy(), return_index=True)
        cats = log.column("category_id").to_numpy()[idx]
        ranked, _ = retrieve(user_vectors(res.state_dict, cfg, users, times, log),
                             item_vectors(res.state_dict, cfg, items, cats), items, 50)
        test_users = split.test.column("user_id").to_numpy()
        test_items = split.test.column("item_id").to_numpy()
        truth = [np.unique(test_items[test_users == u]) for u in users]
        out["test"] = retrieval_metrics(ranked, truth, 50)
    return out
