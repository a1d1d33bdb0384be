"""The window data gate: the GX suite from feature_repo/expectations, replays, unreadable records, drift."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from pipelines.gates.drift import DriftBounds
from pipelines.gates.window import SUITE, WindowBounds, profile, window_gate

T = 1_704_067_200_000


def frame(n: int = 400, seed: int = 0, **columns) -> pa.Table:
    rng = np.random.default_rng(seed)
    data = {"user_id": rng.integers(1, 50, n), "item_id": rng.integers(1, 500, n),
            "category_id": rng.integers(1, 20, n), "timestamp": T + np.sort(rng.integers(0, 3_600_000, n)),
            "label": (rng.random(n) < 0.2).astype(np.int64), "seq_length": rng.integers(1, 60, n),
            "behind_ms": np.zeros(n, np.int64)}
    data.update(columns)
    return pa.table({k: pa.array(v) for k, v in data.items()})


def test_a_clean_window_passes_and_its_drift_is_recorded():
    reference = profile(frame(seed=1))
    verdict, drift = window_gate(frame(), 400, 3, 0, reference)
    assert verdict.passed and verdict.reasons == [], verdict.failures
    assert set(drift) == {"js_category_id", "ks_seq_length", "wasserstein_seq_length", "label_rate_change"}
    assert all(0 <= drift[k] < 0.2 for k in ("js_category_id", "ks_seq_length"))
    assert window_gate(frame(), 400, 0, 0, {})[1] == {}  # the first window has nothing to drift from


def test_each_bad_window_is_named():
    n = 400
    cases = {
        "label_rate": frame(label=np.ones(n, np.int64)),
        "null_rate": frame(category_id=pa.nulls(n, pa.int64())),
        "timestamp_range": frame(timestamp=(T + np.arange(n)) // 1000),
        "sentinel_ids": frame(user_id=np.where(np.arange(n) % 3, -1, 5)),
        "empty_histories": frame(seq_length=np.zeros(n, np.int64)),
        "stale_window": frame(behind_ms=np.full(n, 3 * 86_400_000)),
        "label_values": frame(label=np.full(n, 2)),
    }
    for reason, table in cases.items():
        verdict, _ = window_gate(table, n, 0, 0, {})
        assert not verdict.passed and reason in verdict.reasons, (reason, verdict.failures)
    assert window_gate(frame(), n, 300, 0, {})[0].reasons == ["replayed_window"]
    assert window_gate(frame(), n, 0, 40, {})[0].reasons == ["unreadable_records"]
    drifted, figures = window_gate(frame(category_id=np.full(n, 999)), n, 0, 0, profile(frame()),
                                   WindowBounds(drift=DriftBounds(max_js=0.5)))
    assert drifted.reasons == ["drift"] and figures["js_category_id"] > 0.9


def test_the_suite_is_data_users_edit(tmp_path):
    suite = json.loads(SUITE.read_text())
    for e in suite["expectations"]:
        if e["meta"]["reason"] == "label_rate":
            e["kwargs"]["max_value"] = 0.1  # this team's windows never click this much
    edited = tmp_path / "suite.json"
    edited.write_text(json.dumps(suite))
    assert window_gate(frame(), 400, 0, 0, {})[0].passed
    verdict, _ = window_gate(frame(), 400, 0, 0, {}, suite=edited)
    assert verdict.reasons == ["label_rate"]
