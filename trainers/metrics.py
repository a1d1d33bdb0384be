"""Ranking metrics in numpy (AUC, GAUC, logloss); the baselines to beat are trainers/baselines.py.

GAUC (Zhou et al. 2018, "Deep Interest Network for Click-Through Rate Prediction", KDD, Eq. 1)
is the per-user AUC weighted by the user's number of impressions,
GAUC = sum_u n_u AUC_u / sum_u n_u, over the users whose examples hold both classes (a user with
one class has no AUC and is skipped). Every metric is checked against scikit-learn in
tests/trainers/test_metrics.py."""
from __future__ import annotations

import numpy as np

LOGLOSS_EPS = 1e-7


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.shape[0]} vs {scores.shape[0]}")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return labels, scores


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    first = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]  # exclusive
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[group]
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula; ties count one half. NaN if one class only."""
    labels, scores = _check(labels, scores)
    n_pos = float(labels.sum())
    n_neg = float(len(labels) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[labels == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """sum_u n_u AUC_u / sum_u n_u over users with both classes; NaN if there are none.
    AUC_u by the rank-sum formula within the user's examples (ties count one half)."""
    users = np.asarray(users).ravel()
    labels = np.asarray(labels).astype(np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not users.shape == labels.shape == scores.shape:
        raise ValueError(f"users, labels and scores differ in length: {len(users)}, {len(labels)}, {len(scores)}")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    order = np.lexsort((scores, users))
    u, s, y = users[order], scores[order], labels[order]
    new_user = np.r_[True, u[1:] != u[:-1]]
    group = np.cumsum(new_user) - 1
    start = np.flatnonzero(new_user)
    # Ranks within each user: the global average rank over (user, score) minus the users before it.
    tie_key = np.r_[True, new_user[1:] | (s[1:] != s[:-1])]
    tie = np.cumsum(tie_key) - 1
    ranks = average_ranks(tie.astype(np.float64)) - start[group]
    n = np.bincount(group).astype(np.float64)
    pos = np.bincount(group, weights=y)
    neg = n - pos
    rank_sum = np.bincount(group, weights=ranks * y)
    both = (pos > 0) & (neg > 0)
    if not both.any():
        return float("nan")
    per_user = (rank_sum[both] - pos[both] * (pos[both] + 1) / 2.0) / (pos[both] * neg[both])
    return float(np.sum(n[both] * per_user) / np.sum(n[both]))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
    labels, probs = _check(labels, probs)
    if len(labels) == 0:
        return float("nan")
    p = np.clip(probs, eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p)))


def ranking_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """{auc, gauc, logloss, n, positive_rate} of click probabilities ``probs``; NaN where undefined."""
    labels = np.asarray(labels)
    return {"auc": auc(labels, probs) if len(labels) else float("nan"),
            "gauc": gauc(users, labels, probs) if len(labels) else float("nan"),
            "logloss": logloss(labels, probs), "n": float(len(labels)),
            "positive_rate": float(np.mean(labels)) if len(labels) else float("nan")}
