"""Drift of a window's key features against the windows before it, as TFDV and Evidently measure it.

Categorical features (the item category): the Jensen-Shannon distance between the two
frequency distributions (scipy, base 2: 0 = the same, 1 = disjoint). Numeric features (the
history length at each example): the two-sample Kolmogorov-Smirnov statistic
(scale-free, in [0, 1]) and the Wasserstein distance (in the feature's own unit), both from
scipy. The label rate: the absolute difference. Every window gets every figure; the gate fires
only where a figure passes its bound.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

CATEGORICAL = ("category_id",)
NUMERIC = ("seq_length",)


@dataclass(frozen=True)
class DriftBounds:
    """The largest drift a window may show before the gate calls it drifted."""

    max_js: float = 0.7
    max_ks: float = 0.7
    max_label_rate_change: float = 0.5


def drift(current: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Every figure for the features both hold: js_<categorical>, ks_<numeric>, wasserstein_<numeric>,
    label_rate_change. Empty when there is no reference yet (the first window)."""
    out: dict[str, float] = {}
    for name in CATEGORICAL:
        if len(current.get(name, ())) and len(reference.get(name, ())):
            out[f"js_{name}"] = js_distance(current[name], reference[name])
    for name in NUMERIC:
        a, b = current.get(name), reference.get(name)
        if a is not None and b is not None and len(a) and len(b):
            out[f"ks_{name}"] = float(ks_2samp(a, b).statistic)
            out[f"wasserstein_{name}"] = float(wasserstein_distance(a, b))
    if len(current.get("label", ())) and len(reference.get("label", ())):
        out["label_rate_change"] = abs(float(np.mean(current["label"])) - float(np.mean(reference["label"])))
    return out


def js_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between the value frequencies of two samples."""
    values = np.union1d(np.unique(a), np.unique(b))
    pa = np.bincount(np.searchsorted(values, a), minlength=len(values)).astype(float)
    pb = np.bincount(np.searchsorted(values, b), minlength=len(values)).astype(float)
    return float(jensenshannon(pa / pa.sum(), pb / pb.sum(), base=2))


def drifted(figures: dict[str, float], bounds: DriftBounds) -> list[str]:
    """The figures past their bound, as readable reasons."""
    out = []
    for name, value in sorted(figures.items()):
        bound = (bounds.max_js if name.startswith("js_") else bounds.max_ks if name.startswith("ks_")
                 else bounds.max_label_rate_change if name == "label_rate_change" else None)
        if bound is not None and value > bound:
            out.append(f"{name} {value:.3f} > {bound}")
    return out
