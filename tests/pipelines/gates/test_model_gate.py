"""Candidate vs champion: margins overall and on slices, calibration, flips, leaks, non-finite weights."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from pipelines.gates.model import ModelGatePolicy, flip_rate, ranker_gate, retriever_gate

STATE = {"w": torch.zeros(3)}


def slice_(n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 100, n)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    score = np.clip(0.3 + 0.25 * (labels - 0.3) + rng.normal(0, 0.2, n), 0.01, 0.99)
    return users, labels, rng.integers(5, 40, n), rng.integers(0, 50, n), score  # no new or long-history users


def test_an_equal_candidate_passes_and_a_worse_one_is_named():
    users, labels, history, counts, champion = slice_()
    ok, figures = ranker_gate(users, labels, history, counts, champion, champion, STATE)
    assert ok.passed and figures["flip_rate"] == 0.0 and figures["auc_candidate"] == figures["auc_champion"]
    noisy = np.clip(champion + np.random.default_rng(1).normal(0, 0.3, len(champion)), 0.01, 0.99)
    bad, _ = ranker_gate(users, labels, history, counts, champion, noisy, STATE)
    assert {"auc_drop", "gauc_drop", "negative_flips"} <= set(bad.reasons)


def test_slices_calibration_leaks_and_weights():
    users, labels, history, counts, champion = slice_()
    cold = counts < 5
    hurt = np.where(cold, 1 - champion, champion)  # worse on cold items only
    got, figures = ranker_gate(users, labels, history, counts, champion, hurt, STATE,
                               ModelGatePolicy(max_auc_drop=1, max_gauc_drop=1, max_flip_rate=1))
    assert got.reasons == ["slice_drop:cold_items"] and figures["cold_items_rows"] == int(cold.sum())
    shifted, _ = ranker_gate(users, labels, history, counts, champion, np.clip(champion + 0.4, 0, 1), STATE)
    assert shifted.reasons == ["calibration"]
    leak, _ = ranker_gate(users, labels, history, counts, champion, labels * 0.6 + 0.2, STATE)
    assert "too_good_to_be_true" in leak.reasons
    broken, _ = ranker_gate(users, labels, history, counts, champion, champion, {"w": torch.tensor([np.nan])})
    assert broken.reasons == ["non_finite_parameters"]
    one_class, _ = ranker_gate(users, np.zeros_like(labels), history, counts, champion, champion, STATE)
    assert one_class.reasons == ["holdout_one_class"]


def test_flip_rate_equals_the_pairwise_oracle():
    users, labels, _, _, champion = slice_(300, seed=3)
    candidate = np.random.default_rng(4).random(300)
    right = flipped = 0
    for i, j in itertools.product(range(300), range(300)):
        if users[i] == users[j] and labels[i] == 1 and labels[j] == 0 and champion[i] > champion[j]:
            right += 1
            flipped += candidate[i] <= candidate[j]
    assert abs(flip_rate(users, labels, champion, candidate) - flipped / right) < 1e-12


def test_retriever_gate_margins():
    champion = {"recall@50": 0.40, "hr@50": 0.60}
    assert retriever_gate(champion, {"recall@50": 0.395, "hr@50": 0.61}, STATE)[0].passed
    worse, figures = retriever_gate(champion, {"recall@50": 0.30, "hr@50": 0.50}, STATE)
    assert worse.reasons == ["recall_drop", "hr_drop"] and figures["recall@50_candidate"] == 0.30
