"""Model gates: a candidate replaces the champion only if it is no worse where it matters.

- model_gate: the one-shot demo's gate (an AUC floor and a lift over popularity).
- ranker_gate: candidate vs champion on the same recent held-out slice, as TFX's change
  thresholds do: AUC and GAUC may not drop by more than a margin, overall and on slices (new
  users, long-sequence users, cold items); calibration (mean score vs label rate) within a
  bound; every parameter finite; the negative-flip rate (pairs of one user's positive and
  negative the champion ordered right and the candidate orders wrong) under a bound; and a
  candidate too good to be true (a jump past max_auc_gain, or an AUC past max_auc) is held
  back as a suspected label leak.
- retriever_gate: Recall@K and HR@K may not drop by more than a margin; parameters finite.
Each failure is named (``reasons``) and the figures are returned for the record.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.gates.result import GateResult
from trainers.metrics import auc, gauc


@dataclass(frozen=True)
class ModelGatePolicy:
    """Margins of the candidate-vs-champion gates."""

    max_auc_drop: float = 0.01
    max_gauc_drop: float = 0.01
    max_slice_drop: float = 0.03  # AUC on each slice
    min_slice_rows: int = 100  # smaller slices are reported, not gated
    new_user_history: int = 5  # a user with fewer behaviors before the example is new
    long_history: int = 50  # a user with at least this many is a long-sequence user
    cold_item_count: int = 5  # an item taken fewer times before the example is cold
    max_calibration_gap: float = 0.15  # |mean predicted probability - label rate|
    max_flip_rate: float = 0.25
    max_auc_gain: float = 0.15  # over the champion: more is suspected of a label leak
    max_auc: float = 0.995
    max_recall_drop: float = 0.01  # retrievers, at k
    max_hit_rate_drop: float = 0.01
    k: int = 50


def model_gate(metrics: dict, min_auc: float, min_lift: float) -> GateResult:
    """The candidate must reach min_auc and beat the popularity baseline by min_lift."""
    failures = []
    auc_, base = metrics.get("auc", float("nan")), metrics.get("baseline_auc", float("nan"))
    if not auc_ >= min_auc:
        failures.append(f"AUC {auc_:.4f} < required {min_auc:.4f}")
    if not auc_ - base >= min_lift:
        failures.append(f"AUC {auc_:.4f} does not beat popularity {base:.4f} by {min_lift:.4f}")
    return GateResult("model gate", not failures, failures, 2)


@dataclass
class _Checks:
    """Collects failures with their reasons."""

    failures: list
    reasons: list
    checked: int = 0

    def require(self, ok: bool, reason: str, message: str) -> None:
        self.checked += 1
        if not ok:
            self.failures.append(message)
            if reason not in self.reasons:
                self.reasons.append(reason)


def ranker_gate(users: np.ndarray, labels: np.ndarray, history: np.ndarray, item_counts: np.ndarray,
                champion: np.ndarray, candidate: np.ndarray, candidate_state: dict[str, torch.Tensor],
                policy: ModelGatePolicy = ModelGatePolicy()) -> tuple[GateResult, dict]:
    """Candidate vs champion click probabilities on one held-out slice.

    Args:
        users, labels: [n] the slice's user IDs and 0/1 labels.
        history, item_counts: [n] the user's history length and the item's count before each example.
        champion, candidate: [n] probabilities (the champion's may be a baseline's where none serves).
        candidate_state: the candidate's weights (checked for NaN/inf).

    Returns:
        (GateResult with reasons, figures: auc/gauc/slice AUCs of both, calibration, flip rate).
    """
    c = _Checks([], [])
    c.require(_finite(candidate_state) and bool(np.isfinite(candidate).all()), "non_finite_parameters",
              "the candidate holds NaN/inf parameters or scores")
    fig = {"rows": int(len(labels)), "label_rate": float(np.mean(labels)) if len(labels) else float("nan")}
    c.require(len(np.unique(labels)) == 2, "holdout_one_class",
              f"the held-out slice ({len(labels)} rows) does not hold both labels: nothing to compare on")
    if c.failures:
        return GateResult("model gate [ranker]", False, c.failures, c.checked, c.reasons), fig
    for name, scores in (("champion", champion), ("candidate", candidate)):
        fig[f"auc_{name}"], fig[f"gauc_{name}"] = auc(labels, scores), gauc(users, labels, scores)
    c.require(fig["auc_candidate"] >= fig["auc_champion"] - policy.max_auc_drop, "auc_drop",
              f"AUC {fig['auc_candidate']:.4f} < champion {fig['auc_champion']:.4f} - {policy.max_auc_drop}")
    c.require(not fig["gauc_candidate"] < fig["gauc_champion"] - policy.max_gauc_drop, "gauc_drop",
              f"GAUC {fig['gauc_candidate']:.4f} < champion {fig['gauc_champion']:.4f} - {policy.max_gauc_drop}")
    gain = fig["auc_candidate"] - fig["auc_champion"]
    c.require(gain <= policy.max_auc_gain and fig["auc_candidate"] <= policy.max_auc, "too_good_to_be_true",
              f"AUC {fig['auc_candidate']:.4f} ({gain:+.4f} over the champion) is too good to be true: a label "
              f"leak is suspected (bounds: +{policy.max_auc_gain}, {policy.max_auc})")
    slices = {"new_users": history < policy.new_user_history, "long_sequence_users": history >= policy.long_history,
              "cold_items": item_counts < policy.cold_item_count}
    for name, rows in slices.items():
        fig[f"{name}_rows"] = int(rows.sum())
        if rows.sum() < policy.min_slice_rows or len(np.unique(labels[rows])) < 2:
            continue
        a, b = auc(labels[rows], champion[rows]), auc(labels[rows], candidate[rows])
        fig[f"auc_champion_{name}"], fig[f"auc_candidate_{name}"] = a, b
        c.require(b >= a - policy.max_slice_drop, f"slice_drop:{name}",
                  f"AUC on {name} {b:.4f} < champion {a:.4f} - {policy.max_slice_drop}")
    fig["calibration_gap"] = abs(float(np.mean(candidate)) - fig["label_rate"])
    c.require(fig["calibration_gap"] <= policy.max_calibration_gap, "calibration",
              f"mean score {np.mean(candidate):.4f} vs label rate {fig['label_rate']:.4f}: off by more than "
              f"{policy.max_calibration_gap}")
    fig["flip_rate"] = flip_rate(users, labels, champion, candidate)
    c.require(not fig["flip_rate"] > policy.max_flip_rate, "negative_flips",
              f"the candidate misorders {fig['flip_rate']:.1%} of the pairs the champion ordered right "
              f"(bound {policy.max_flip_rate:.0%})")
    return GateResult("model gate [ranker]", not c.failures, c.failures, c.checked, c.reasons), fig


def retriever_gate(champion: dict[str, float], candidate: dict[str, float], candidate_state: dict[str, torch.Tensor],
                   policy: ModelGatePolicy = ModelGatePolicy()) -> tuple[GateResult, dict]:
    """Candidate vs champion retrieval metrics at k (trainers.retrieval.metrics) on one slice."""
    c = _Checks([], [])
    k = policy.k
    c.require(_finite(candidate_state), "non_finite_parameters", "the candidate holds NaN/inf parameters")
    for metric, bound in ((f"recall@{k}", policy.max_recall_drop), (f"hr@{k}", policy.max_hit_rate_drop)):
        a, b = champion[metric], candidate[metric]
        c.require(b >= a - bound, f"{metric.split('@')[0]}_drop", f"{metric} {b:.4f} < champion {a:.4f} - {bound}")
    fig = {**{f"{m}_champion": v for m, v in champion.items()}, **{f"{m}_candidate": v for m, v in candidate.items()}}
    return GateResult("model gate [retriever]", not c.failures, c.failures, c.checked, c.reasons), fig


def flip_rate(users: np.ndarray, labels: np.ndarray, champion: np.ndarray, candidate: np.ndarray) -> float:
    """Of the (positive, negative) pairs within a user that the champion orders right, the share
    the candidate orders wrong (ties count as wrong); 0 when there are none."""
    right = flipped = 0
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    for rows in np.split(order, bounds):
        pos, neg = rows[labels[rows] == 1], rows[labels[rows] == 0]
        if not len(pos) or not len(neg):
            continue
        was = champion[pos][:, None] > champion[neg][None, :]
        now = candidate[pos][:, None] > candidate[neg][None, :]
        right += int(was.sum())
        flipped += int((was & ~now).sum())
    return flipped / right if right else 0.0


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
