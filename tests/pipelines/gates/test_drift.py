"""Drift figures against scipy's own functions and the obvious cases."""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from pipelines.gates.drift import DriftBounds, drift, drifted, js_distance


def test_js_distance_is_scipys_over_the_value_frequencies():
    a, b = np.array([1, 1, 2, 3, 3, 3]), np.array([2, 2, 3, 4])
    p = np.array([2, 1, 3, 0]) / 6
    q = np.array([0, 2, 1, 1]) / 4
    assert js_distance(a, b) == jensenshannon(p, q, base=2)
    assert js_distance(a, a) == 0.0 and js_distance(np.array([1, 1]), np.array([2])) == 1.0


def test_every_figure_and_its_bound():
    rng = np.random.default_rng(0)
    cur = {"category_id": rng.integers(0, 5, 300), "seq_length": rng.normal(10, 2, 300), "label": rng.random(300) < 0.3}
    ref = {"category_id": rng.integers(0, 5, 500), "seq_length": rng.normal(12, 2, 500), "label": rng.random(500) < 0.2}
    got = drift(cur, ref)
    assert got["ks_seq_length"] == ks_2samp(cur["seq_length"], ref["seq_length"]).statistic
    assert got["wasserstein_seq_length"] == wasserstein_distance(cur["seq_length"], ref["seq_length"])
    assert abs(got["label_rate_change"] - abs(cur["label"].mean() - ref["label"].mean())) < 1e-12
    assert drifted(got, DriftBounds()) == []
    assert drifted(got, DriftBounds(max_ks=0.3)) == [f"ks_seq_length {got['ks_seq_length']:.3f} > 0.3"]
