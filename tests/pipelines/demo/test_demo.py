"""The demo, end to end, on a tiny config: every stage runs for real and the books balance."""
from __future__ import annotations

import json
from dataclasses import replace

import pyarrow.dataset as ds
import pytest

from features.sequence import SequencePolicy
from pipelines.demo import DemoConfig, run_demo
from pipelines.retrain.config import WindowPolicy
from pipelines.store.feature_store import open_store, read_user_sequences
from pipelines.sources.synthetic import SyntheticConfig
from trainers.registry import Registry

pytestmark = pytest.mark.e2e


def tiny(workdir) -> DemoConfig:
    return DemoConfig(workdir=str(workdir),
                      synthetic=SyntheticConfig(users=80, items=300, days=8, bad_fraction=0.005),
                      sequence=SequencePolicy(max_len=30), train=replace(DemoConfig().train, steps=200),
                      stream_fraction=0.15, min_auc=0.5, retrain_window=WindowPolicy(size=400, min_records=100))


def test_demo_end_to_end_twice(tmp_path):
    cfg = tiny(tmp_path / "run")
    first = run_demo(cfg)

    b = first["backfill"]
    assert b["read"] == first["ingest"]["backfill_records"]
    assert b["read"] == b["accepted"] + b["rejected_total"] and b["rejected_total"] > 0
    rejected = ds.dataset(tmp_path / "run" / "offline" / "rejected", format="parquet").to_table()
    assert rejected.num_rows == b["rejected_total"]
    assert all(g["passed"] for g in first["feature_gates"]) and len(first["feature_gates"]) == 5
    assert first["materialized_users"] > 0 and all(n > 0 for n in first["materialized"].values())
    assert first["embed"]["embedded"] == 300 and first["materialized"]["item_content"] == 300

    examples = ds.dataset(tmp_path / "run" / "offline" / "examples", format="parquet").to_table()
    window = cfg.labels.window_ms  # no example whose click window runs past the cutoff (its click may be later)
    assert max(examples.column("timestamp").to_pylist()) + window < first["ingest"]["cutoff_ms"]
    m = first["metrics"]
    assert m["auc"] > m["baseline_auc"], m
    registry = Registry(tmp_path / "run" / "registry")
    assert first["model_version"] == registry.history("ranker")[1]["version"]  # registered, then promoted
    assert registry.load("ranker", first["model_version"])[1]["item_embedding_version"] == \
        first["embed"]["version"]  # the model records the encoder version it read

    s = first["stream"]
    assert s["read"] == first["ingest"]["stream_records"] > 0
    assert s["read"] == s["accepted"] + s["rejected_total"]
    assert s["rows_written"] > 0
    # The stream moved online features forward past the backfill cutoff for someone.
    store = open_store(tmp_path / "run")
    online = read_user_sequences(store, [int(u) for u in ds.dataset(tmp_path / "run" / "offline" / "user_sequence",
                                                                    format="parquet").to_table().column("user_id").to_pylist()])
    assert max(v["last_event_ms"] for v in online.values() if v) >= first["ingest"]["cutoff_ms"]

    # Continuous training over the stream's topics: windows promoted, the poisoned one blocked.
    rt = first["retrain"]
    assert rt["windows"] >= 2 and sum(rt["promoted"].values()) >= 1, rt
    assert [q["window"] for q in rt["quarantined"]] == [rt["windows"]] and "label_rate" in rt["quarantined"][0]["reasons"]
    for kind, version in rt["champions"].items():  # the quarantined window changed no champion
        assert registry.champion(kind) == version
    quarantined = tmp_path / "run" / "retrain" / "quarantine" / f"window-{rt['windows']:06d}"
    assert (quarantined / "verdict.json").is_file() and (quarantined / "records.jsonl").stat().st_size > 0

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["seconds"]) >= {"backfill", "train (TorchRec) and gate"}

    second = run_demo(cfg)  # a rerun replaces the run's tables, embeds nothing new, adds a model version
    assert second["backfill"] == first["backfill"]
    assert second["embed"]["embedded"] == 0 and second["embed"]["skipped_unchanged"] == 300
    assert int(second["model_version"]) > int(rt["champions"].get("ranker", first["model_version"]))
