"""Retrieval metrics (Recall@K, HitRate@K, NDCG@K) and a popularity baseline, in numpy.

For each user, ``ranked`` is the retrieved list (best first, -1 = empty slot) and ``truth`` the
set of items the user interacted with in the evaluation slice (binary relevance):

    Recall@K = |top K & truth| / |truth|          HitRate@K = 1 if |top K & truth| > 0
    NDCG@K   = sum_{r < K, hit} 1 / log2(r + 2)  /  sum_{r < min(K, |truth|)} 1 / log2(r + 2)

each averaged over users. GAUC lives with the ranking metrics (trainers.metrics.gauc).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def hits(ranked: np.ndarray, truth: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(hit [U, k] bool: ranked[u, r] is in truth[u]; |truth[u]| [U]). Truth repeats count once."""
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2 or len(truth) != ranked.shape[0]:
        raise ValueError(f"need ranked [U, N] and one truth array per user; got {ranked.shape} and {len(truth)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = ranked[:, :k]
    real = np.sort(np.where(top < 0, np.iinfo(np.int64).min, top), axis=1)
    if ((real[:, 1:] == real[:, :-1]) & (real[:, 1:] != np.iinfo(np.int64).min)).any():
        raise ValueError("a ranked list repeats an item; deduplicate retrieval results first")
    lengths = np.array([len(t) for t in truth], dtype=np.int64)
    flat = np.concatenate([np.asarray(t, np.int64) for t in truth]) if len(truth) else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(truth)), lengths)
    pairs = np.unique(np.stack([owner, flat], axis=1), axis=0) if len(flat) else np.zeros((0, 2), np.int64)
    n_truth = np.bincount(pairs[:, 0], minlength=len(truth))
    if (n_truth == 0).any():
        raise ValueError(f"users {np.flatnonzero(n_truth == 0)[:5].tolist()} have no ground-truth items; "
                         "evaluate only users with interactions in the slice")
    # Membership of (user, item) pairs: code items densely, then one int64 key per pair.
    codes, inverse = np.unique(np.concatenate([pairs[:, 1], top.ravel()]), return_inverse=True)
    truth_key = pairs[:, 0] * len(codes) + inverse[: len(pairs)]
    top_key = np.repeat(np.arange(len(truth)), top.shape[1]) * len(codes) + inverse[len(pairs):]
    hit = np.isin(top_key, truth_key).reshape(top.shape) & (top >= 0)
    return hit, n_truth


def recall_at_k(ranked: np.ndarray, truth: Sequence[np.ndarray], k: int) -> float:
    hit, n_truth = hits(ranked, truth, k)
    return float(np.mean(hit.sum(1) / n_truth))


def hit_rate_at_k(ranked: np.ndarray, truth: Sequence[np.ndarray], k: int) -> float:
    hit, _ = hits(ranked, truth, k)
    return float(np.mean(hit.any(1)))


def ndcg_at_k(ranked: np.ndarray, truth: Sequence[np.ndarray], k: int) -> float:
    hit, n_truth = hits(ranked, truth, k)
    discount = 1.0 / np.log2(np.arange(hit.shape[1]) + 2.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))[np.minimum(n_truth, k) - 1]
    return float(np.mean((hit * discount).sum(1) / ideal))


def retrieval_metrics(ranked: np.ndarray, truth: Sequence[np.ndarray], k: int) -> dict[str, float]:
    return {f"recall@{k}": recall_at_k(ranked, truth, k), f"hr@{k}": hit_rate_at_k(ranked, truth, k),
            f"ndcg@{k}": ndcg_at_k(ranked, truth, k)}


def popularity_vectors(train_item_ids: np.ndarray, candidate_ids: np.ndarray,
                       n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Popularity as a retriever: one interest of 1.0 per user [U, 1, 1] and each candidate's
    training count as its "vector" [C, 1], so retrieval_train.retrieve ranks by count."""
    uniq, counts = np.unique(np.asarray(train_item_ids, np.int64), return_counts=True)
    candidate_ids = np.asarray(candidate_ids, np.int64)
    count = np.zeros(len(candidate_ids), np.float32)
    if len(uniq):
        pos = np.minimum(np.searchsorted(uniq, candidate_ids), len(uniq) - 1)
        found = uniq[pos] == candidate_ids
        count[found] = counts[pos[found]]
    return np.ones((n_users, 1, 1), np.float32), count.reshape(-1, 1)
