"""`recstream train`: train a ranker or a retriever from a run folder the backfill wrote.

Reads ``<workdir>/offline/examples`` and ``<workdir>/offline/behavior_log``,
splits by time (features.splits: row quantiles of time; train on the past,
validate on the next slice, test on the last), sizes the tables from the data
(trainers/sizing.py), trains, and writes the unsharded weights and the
metrics to ``<workdir>/models/<model>/``.

- rankers (mean | din | tin | dien | sdim, any search unit): trainers.ranking.train on the
  labeled examples; AUC, GAUC (per user) and logloss on validation and test, for the
  model and for the point-in-time popularity baselines (trainers/baselines.py:
  all history, and the last week); every validation and test score in
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
from pipelines.store.online_view import iso
from pipelines.train import RANKERS, RETRIEVERS
from trainers.sizing import HEADROOM

OUTPUTS = ("weights.pt", "metrics.json", "predictions.parquet")


def _table(workdir: Path, name: str) -> pa.Table:
    path = workdir / "offline" / name
    if not path.exists():
        raise MissingInput(path, f"run `recstream backfill --output {workdir / 'offline'}` first")
    return ds.dataset(path, format="parquet").to_table()


def run_train(workdir: Path, model: str, steps: int | None = None, seed: int | None = None,
              search: str | None = None, search_k: int | None = None, valid_fraction: float = 0.1, test_fraction: float = 0.1,
              progress=None, sparse_lr: float | None = None, settings: dict | None = None,
              headroom: float | None = None, refit: bool = False) -> dict:
    """Train ``model`` on the run in ``workdir``; returns (and writes) its metrics.

    ``settings``: TrainConfig (rankers) or RetrievalConfig (retrievers) fields, e.g. from a TOML
    file; the named arguments win over them. Table sizes not given come from the data (the distinct
    IDs of the log and the examples times ``headroom``, trainers/sizing.py); every result says how
    many IDs share a row. ``refit``: after the validation scores, train again on train + valid
    and score the test slice with that model. Rankers: ``sparse_lr`` overrides the tables'
    RowWiseAdagrad rate."""
    if model not in RANKERS + RETRIEVERS:
        raise ConfigError(f"model must be one of {RANKERS + RETRIEVERS}, got {model!r}")
    if steps is not None and steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if sparse_lr is not None and not sparse_lr > 0:
        raise ConfigError(f"sparse_lr must be above 0, got {sparse_lr}")
    for flag, value in (("--valid-fraction", valid_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(flag.lstrip("-"), f"{flag} must be in [0, 1), got {value}")
    if valid_fraction + test_fraction >= 1:
        raise ConfigError("valid-fraction", f"--valid-fraction + --test-fraction must be below 1 (rows are left "
                                            f"to train on), got {valid_fraction} + {test_fraction}")
    headroom = HEADROOM if headroom is None else headroom
    if not headroom >= 1:
        raise ConfigError("table-headroom", f"--table-headroom must be at least 1 row per ID, got {headroom}")
    workdir = Path(workdir)
    log = sort_log(_table(workdir, "behavior_log"))
    examples = _table(workdir, "examples") if model in RANKERS else _positives(log)
    split = time_splits(examples, valid_fraction, test_fraction)
    given = {"seed": seed, "steps": steps, "sparse_lr": sparse_lr, "search": search, "search_k": search_k}
    cfg, tables = _config(model, log, examples, headroom, {
        **(settings or {}), "model": model, **{k: v for k, v in given.items() if v is not None}})
    out = workdir / "models" / model
    # Written aside and swapped in whole (pipelines/staged.py): a killed run leaves the previous
    # run's weights, metrics and predictions together, never a mix.
    with staged(out, owned=OUTPUTS) as stage:
        if model in RANKERS:
            result = _ranker(log, cfg, split, progress, refit, stage)
        else:
            result = _retriever(log, cfg, split, progress, refit)
        result = {"model": model, "config": _plain(dataclasses.asdict(cfg)), "tables": tables,
                  "split": {"valid_from": iso(split.valid_from), "test_from": iso(split.test_from),
                            "refit": refit}, **result}
        state = result.pop("state_dict")
        torch.save(state, stage / "weights.pt")
        (stage / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    result["path"] = str(out)
    return result


def _plain(config: dict) -> dict:
    """A config as strict JSON: an infinite or NaN setting (RetrievalConfig.label_power) as its text."""
    return {k: str(v) if isinstance(v, float) and not np.isfinite(v) else v for k, v in config.items()}


def _positives(log: pa.Table) -> pa.Table:
    """Every behavior as a next-item positive: what retrievers train on."""
    return log.select(["user_id", "item_id", "category_id", "timestamp"]).append_column(
        "label", pa.array(np.ones(log.num_rows, np.int8)))


def _config(model: str, log: pa.Table, examples: pa.Table, headroom: float, settings: dict):
    """The model's config from the settings, with table sizes from the data where not given;
    and the tables' collision report."""
    from pipelines.config import from_dict
    from trainers.ranking.train import TrainConfig
    from trainers.retrieval.train import RetrievalConfig
    from trainers.sizing import collisions, rows_for

    cls = TrainConfig if model in RANKERS else RetrievalConfig
    ids = {"item": np.concatenate([log.column("item_id").to_numpy(), examples.column("item_id").to_numpy()]),
           "category": np.concatenate([log.column("category_id").to_numpy(),
                                       examples.column("category_id").to_numpy()])}
    settings = dict(settings)
    for name, values in ids.items():
        settings.setdefault(f"{name}_table_size", rows_for(len(np.unique(values)), headroom))
    cfg = from_dict(cls, settings)
    return cfg, {name: collisions(values, getattr(cfg, f"{name}_table_size")) for name, values in ids.items()}


def _ranker(log, cfg, split, progress, refit, out) -> dict:
    import pyarrow.parquet as pq

    from trainers.baselines import ItemCounts, baseline_scores
    from trainers.metrics import ranking_metrics
    from trainers.ranking.train import predict, train

    res = train(split.train, split.valid, log, cfg, progress=progress)
    test_state = res.state_dict
    if refit and split.test.num_rows:
        test_state = train(pa.concat_tables([split.train, split.valid]), split.test.slice(0, 0), log, cfg,
                           progress=progress).state_dict
    scores = {"valid": res.eval_scores,
              "test": predict(test_state, cfg, split.test, log) if split.test.num_rows else np.zeros(0)}
    counts = ItemCounts(log)
    metrics, rows = {}, []
    for name in ("valid", "test"):
        table = getattr(split, name)
        users, labels = table.column("user_id").to_numpy(), table.column("label").to_numpy()
        metrics[name] = {**ranking_metrics(users, labels, scores[name]),
                         **{base: ranking_metrics(users, labels, got)
                            for base, got in baseline_scores(counts, table).items()}}
        rows.append(table.select(["user_id", "item_id", "category_id", "timestamp", "label"])
                    .append_column("score", pa.array(scores[name], pa.float64()))
                    .append_column("split", pa.array([name] * table.num_rows, pa.string())))
    pq.write_table(pa.concat_tables(rows), out / "predictions.parquet")
    return {"search": cfg.search, "search_k": cfg.search_k, "sparse_lr": cfg.sparse_lr,
            "rows": [split.train.num_rows, split.valid.num_rows, split.test.num_rows],
            "first_loss": res.losses[0], "last_loss": res.losses[-1], **metrics,
            "samples_per_s": res.samples_per_s, "state_dict": test_state}


def _retriever(log, cfg, split, progress, refit) -> dict:
    from trainers.baselines import RECENT_WINDOW_MS
    from trainers.retrieval.metrics import popularity_vectors, retrieval_metrics
    from trainers.retrieval.train import item_vectors, retrieve, train_retriever, user_vectors

    res = train_retriever(pa.concat_tables([split.train, split.valid]) if refit else split.train, log, cfg,
                          progress=progress)
    out = {"rows": [split.train.num_rows, split.valid.num_rows, split.test.num_rows],
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
        # Baselines: the most taken items before the test slice, over all history and over the
        # week before it (recent popularity, as the rankers' popularity_recent).
        before = log.filter(pa.array(log.column("timestamp").to_numpy() < split.test_from))
        recent = before.filter(pa.array(before.column("timestamp").to_numpy() >= split.test_from - RECENT_WINDOW_MS))
        for name, taken in (("popularity", before), ("popularity_recent", recent)):
            ones, counts = popularity_vectors(taken.column("item_id").to_numpy(), items, len(users))
            out["test"][name] = retrieval_metrics(retrieve(ones, counts, items, 50)[0], truth, 50)
    return out
