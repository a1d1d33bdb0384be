"""Metrics against scikit-learn (AUC, per-user GAUC, logloss), and the popularity baseline on a drawn example."""
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from trainers.metrics import auc, average_ranks, gauc, logloss, ranking_metrics


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=500)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # rounding makes many ties
    assert len(np.unique(scores)) < 30
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_drawn_cases():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts one half
    assert auc([0, 1, 1], [0.2, 0.2, 0.9]) == 0.75


def test_average_ranks_share_ties():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_auc_one_class_is_nan():
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([0, 0], [0.1, 0.2]))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.5, float("nan")])
    with pytest.raises(ValueError, match="0 or 1"):
        logloss([0, 2], [0.5, 0.5])


@pytest.mark.parametrize("seed", range(3))
def test_logloss_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=400)
    probs = np.round(rng.uniform(0.01, 0.99, size=400), 2)
    assert logloss(labels, probs) == pytest.approx(log_loss(labels, probs), rel=1e-12)


def test_logloss_is_clipped():
    assert logloss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7))
    assert math.isfinite(logloss([1], [0.0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauc_matches_sklearn_per_user_weighted_by_impressions(seed):
    rng = np.random.default_rng(seed)
    n = 600
    users = rng.choice(10**9, size=30)[rng.integers(30, size=n)]
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # rounded: ties inside a user
    users[:7], labels[:7] = 42, 1  # a user with positives only: skipped
    assert gauc(users, labels, scores) == pytest.approx(sklearn_gauc(users, labels, scores), abs=1e-12)
    assert gauc(users, labels, scores) != pytest.approx(auc(labels, scores), abs=1e-6)  # per user, not pooled
    assert math.isnan(gauc(np.array([1, 1]), np.array([1, 1]), np.array([0.2, 0.4])))
    with pytest.raises(ValueError, match="differ in length"):
        gauc(users[:-1], labels, scores)


def sklearn_gauc(users, labels, scores) -> float:
    """The slow obvious GAUC: sklearn's AUC per user, weighted by impressions, one-class users skipped."""
    num = den = 0.0
    for u in np.unique(users):
        y, s = labels[users == u], scores[users == u]
        if 0 < y.sum() < len(y):
            num += len(y) * roc_auc_score(y, s)
            den += len(y)
    return num / den


def test_gauc_drawn_cases():
    # user 1: AUC 1 over 2 rows; user 2: AUC 0 over 4 rows; user 3 has one class only: skipped.
    users = np.array([1, 1, 2, 2, 2, 2, 3])
    labels = np.array([0, 1, 1, 1, 0, 0, 1])
    scores = np.array([0.1, 0.9, 0.1, 0.2, 0.3, 0.3, 0.5])
    assert gauc(users, labels, scores) == pytest.approx((2 * 1.0 + 4 * 0.0) / 6)
    # No user holds both classes: undefined.
    assert math.isnan(gauc(np.array([1, 1, 2, 2]), np.array([1, 1, 0, 0]), np.array([0.9, 0.9, 0.1, 0.1])))
    # Not the pooled AUC: scores that only rank the more active user higher earn GAUC 0.5, AUC above it.
    users, labels = np.array([1, 1, 1, 2, 2, 2]), np.array([1, 1, 0, 1, 0, 0])
    between = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    assert gauc(users, labels, between) == 0.5
    assert auc(labels, between) == pytest.approx(roc_auc_score(labels, between)) == pytest.approx(2 / 3)


def test_ranking_metrics_match_sklearn():
    rng = np.random.default_rng(7)
    users = rng.integers(0, 40, size=800)
    labels = (rng.random(800) < 0.4).astype(int)
    probs = np.clip(np.round(rng.random(800) * 0.6 + 0.3 * labels, 2), 0.01, 0.99)
    got = ranking_metrics(users, labels, probs)
    assert got["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert got["gauc"] == pytest.approx(sklearn_gauc(users, labels, probs), abs=1e-12)
    assert got["logloss"] == pytest.approx(log_loss(labels, probs), rel=1e-12)
    assert got["n"] == 800 and got["positive_rate"] == pytest.approx(labels.mean())
    empty = ranking_metrics(np.zeros(0), np.zeros(0), np.zeros(0))
    assert all(math.isnan(empty[k]) for k in ("auc", "gauc", "logloss"))
