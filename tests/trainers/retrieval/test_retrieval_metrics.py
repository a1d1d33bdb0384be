"""Retrieval metrics and GAUC against sklearn and direct loops on random data."""
import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from trainers.retrieval.metrics import (hit_rate_at_k, ndcg_at_k, popularity_vectors, recall_at_k,
                                        retrieval_metrics)
from trainers.retrieval.train import retrieve


def random_case(seed: int, users: int = 40, items: int = 60):
    """Scores over a shared item universe (IDs are large and unordered), each user's ranked list
    (by score, no ties), and 1-12 truth items per user (with repeats)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**12, size=items, replace=False)
    scores = rng.random((users, items))
    ranked = ids[np.argsort(-scores, axis=1)]
    truth = [rng.choice(ids, size=rng.integers(1, 13)) for _ in range(users)]
    return ids, scores, ranked, truth


def loop_metrics(ranked, truth, k):
    recall, hr, ndcg = [], [], []
    for row, t in zip(ranked, truth):
        t = set(t.tolist())
        got = [r for r in row[:k].tolist() if r in t]
        recall.append(len(got) / len(t))
        hr.append(float(bool(got)))
        dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(row[:k].tolist()) if r in t)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(t))))
        ndcg.append(dcg / idcg)
    return np.mean(recall), np.mean(hr), np.mean(ndcg)


@pytest.mark.parametrize("seed,k", [(0, 5), (1, 10), (2, 50), (3, 1)])
def test_recall_hr_ndcg_match_loops_and_sklearn(seed, k):
    ids, scores, ranked, truth = random_case(seed)
    recall, hr, ndcg = loop_metrics(ranked, truth, k)
    assert recall_at_k(ranked, truth, k) == pytest.approx(recall)
    assert hit_rate_at_k(ranked, truth, k) == pytest.approx(hr)
    assert ndcg_at_k(ranked, truth, k) == pytest.approx(ndcg)
    relevance = np.stack([np.isin(ids, t).astype(float) for t in truth])
    assert ndcg_at_k(ranked, truth, k) == pytest.approx(ndcg_score(relevance, scores, k=k))
    assert retrieval_metrics(ranked, truth, k) == {f"recall@{k}": pytest.approx(recall),
                                                   f"hr@{k}": pytest.approx(hr), f"ndcg@{k}": pytest.approx(ndcg)}


def test_empty_slots_never_hit_and_bad_input_is_named():
    ranked = np.array([[5, -1, -1], [7, 8, 9]])
    truth = [np.array([5, 6]), np.array([9])]
    assert recall_at_k(ranked, truth, 3) == pytest.approx((0.5 + 1.0) / 2)
    assert ndcg_at_k(ranked, truth, 3) == pytest.approx(
        (1 / (1 + 1 / math.log2(3)) + (1 / math.log2(4)) / 1) / 2)
    with pytest.raises(ValueError, match="repeats an item"):
        recall_at_k(np.array([[1, 1, 2]]), [np.array([1])], 3)
    with pytest.raises(ValueError, match=r"users \[1\] have no ground-truth"):
        recall_at_k(ranked, [np.array([5]), np.array([], np.int64)], 3)
    with pytest.raises(ValueError, match="one truth array per user"):
        recall_at_k(ranked, truth[:1], 3)


def test_popularity_retrieves_by_training_count_and_skips_excluded():
    candidates = np.array([10, 20, 30, 40])
    users, items = popularity_vectors(np.array([30, 30, 30, 10, 10, 20, 99]), candidates, n_users=2)
    ids, scores = retrieve(users, items, candidates, 3, exclude=(np.array([1]), np.array([30])))
    assert ids.tolist() == [[30, 10, 20], [10, 20, 40]]
    assert scores.tolist() == [[3, 2, 1], [2, 1, 0]]
