"""Scores and metrics of a model state on a window: what the gates and the per-window record read.

Every model is scored the way serving would score it: unsharded, on CPU, from its weights
(trainers.ranking.train.predict; trainers.retrieval.train.user_vectors + retrieve), with each
example's history taken strictly before the example's time from the log as it stands.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.pit import counts_before
from trainers import baselines
from trainers.baselines import ItemCounts
from trainers.metrics import ranking_metrics
from trainers.ranking.train import predict
from trainers.retrieval.metrics import retrieval_metrics
from trainers.retrieval.train import item_vectors, retrieve, user_vectors


class Log:
    """The behavior log as it stands: user-sorted for histories, item-sorted for point-in-time counts."""

    def __init__(self, log: pa.Table):
        self.table = log  # sorted by (user_id, timestamp, event_id): features.pit.sort_log
        self.users, self.times = log.column("user_id").to_numpy(), log.column("timestamp").to_numpy()
        self.counts = ItemCounts(log)

    def history_lengths(self, users, times) -> np.ndarray:
        """Each (user, time)'s number of behaviors strictly before it."""
        return counts_before(self.users, self.times, users, times)

    def item_counts(self, items, times) -> np.ndarray:
        """Each (item, time)'s number of behaviors strictly before it: the point-in-time popularity."""
        return self.counts.before(items, times)

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """Every item the log holds, with its (latest) category."""
        items, idx = np.unique(self.table.column("item_id").to_numpy()[::-1], return_index=True)
        return items, self.table.column("category_id").to_numpy()[::-1][idx]


def popularity(log: Log, examples: pa.Table) -> np.ndarray:
    """The point-in-time popularity baseline: each example's item count before its time, as a
    probability-like score in (0, 1) (only the order matters to AUC)."""
    return baselines.popularity(log.counts, examples)


def ranker_scores(state, cfg, examples: pa.Table, log: Log, vectors=None, meta=None) -> np.ndarray:
    """Click probabilities from an unsharded ranker state (None: the popularity baseline)."""
    if state is None:
        return popularity(log, examples)
    return predict(state, cfg, examples, log.table, vectors, meta)


def ranker_metrics(examples: pa.Table, scores: np.ndarray) -> dict[str, float]:
    """AUC, GAUC and logloss (trainers.metrics.ranking_metrics); NaN where a class is missing."""
    labels = examples.column("label").to_numpy().astype(np.float64)
    if len(np.unique(labels)) < 2:
        return {"auc": float("nan"), "gauc": float("nan"), "logloss": float("nan"), "rows": len(labels)}
    return {**ranking_metrics(examples.column("user_id").to_numpy(), labels, np.clip(scores, 1e-7, 1 - 1e-7)),
            "rows": len(labels)}


def retriever_metrics(state, cfg, behaviors: pa.Table, log: Log, k: int) -> dict[str, float]:
    """Recall@k and HR@k (hit rate) of a retriever state (None: recent popularity) on a slice of behaviors:
    each user is asked at the slice's start for the items it takes in the slice; candidates are
    every item the log holds."""
    if behaviors.num_rows == 0:
        return {f"recall@{k}": float("nan"), f"hr@{k}": float("nan"), "users": 0}
    b_users = behaviors.column("user_id").to_numpy()
    b_items = behaviors.column("item_id").to_numpy()
    start = int(behaviors.column("timestamp").to_numpy().min())
    users = np.unique(b_users)
    truth = [np.unique(b_items[b_users == u]) for u in users]
    items, cats = log.candidates()
    if state is None:
        ranked = _popular(log, start, items, k, len(users))
    else:
        interests = user_vectors(state, cfg, users, np.full(len(users), start, np.int64), log.table)
        ranked, _ = retrieve(interests, item_vectors(state, cfg, items, cats), items, k)
    got = retrieval_metrics(ranked, truth, k)
    return {f"recall@{k}": got[f"recall@{k}"], f"hr@{k}": got[f"hr@{k}"], "users": len(users)}


def _popular(log: Log, start: int, items: np.ndarray, k: int, n_users: int) -> np.ndarray:
    counts = log.item_counts(items, np.full(len(items), start, np.int64))
    top = items[np.argsort(-counts, kind="stable")[:k]]
    out = np.full((n_users, k), -1, np.int64)
    out[:, : len(top)] = top
    return out
