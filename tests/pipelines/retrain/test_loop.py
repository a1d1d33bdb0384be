"""The continuous-training loop over the stream's folders: every example once, evaluate-then-train,
promotions through the gates, repeats dropped, new IDs learned without a restart, interests in Feast."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from features.ids import fold
from pipelines.cli import main
from pipelines.retrain.loop import run_retrain
from pipelines.retrain.publish import read_interests
from pipelines.retrain.replay import write_folders
from pipelines.retrain.state import read_records
from tests.pipelines.retrain.conftest import loop_config
from trainers.registry import Registry

pytestmark = pytest.mark.training


def test_windows_cover_every_example_once_and_promote_through_the_gates(run_copy):
    work, accepted, examples = run_copy
    write_folders(work, accepted, examples, files=3)
    records = run_retrain(loop_config(work), say=lambda line: None)
    full, rest = divmod(len(examples), 500)  # full windows of 500; the rest closes on idle if >= 100
    taken = full * 500 + (rest if rest >= 100 else 0)
    assert len(records) == full + (rest >= 100) and [r["window"] for r in records] == list(range(1, len(records) + 1))
    assert sum(r["records"] for r in records) == taken and all(r["duplicates"] == 0 for r in records)
    for before, after in zip(records, records[1:]):  # each window starts where the previous one ended
        assert after["start"] == before["end"]
    logged = pa.concat_tables([pq.read_table(p) for p in sorted((work / "retrain" / "log").glob("*.parquet"))])
    ids = logged.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == sum(r["behaviors"] for r in records) > 0  # each behavior joins the log once
    assert set(ids) <= {json.loads(v)["event_id"] for v in accepted if json.loads(v)["event_type"] != "impression"}
    registry = Registry(work / "registry")
    for kind in ("ranker", "retriever"):
        decisions = [r["models"][kind]["decision"] for r in records]
        promoted = [r["models"][kind]["version"] for r in records if r["models"][kind]["decision"] == "promoted"]
        assert set(decisions) <= {"promoted", "rejected"} and promoted, decisions
        assert registry.champion(kind) == promoted[-1]
        meta = registry.load(kind)[1]
        assert meta["model_gate"]["passed"] and meta["data_gate"]["passed"] and meta["end"] and meta["window"]
        assert (registry.artifacts(kind, promoted[-1]) / "checkpoint").is_dir()
        for r in records:  # evaluate-then-train: the model as it stood scored every window first
            online = r["models"][kind]["online"]
            assert np.isfinite(online["auc"] if kind == "ranker" else online["recall@50"])
    assert [r["window"] for r in read_records(work / "retrain")] == [r["window"] for r in records]


def test_once_takes_one_window_and_the_next_run_the_next(run_copy, capsys):
    work, accepted, examples = run_copy
    write_folders(work, accepted, examples)
    args = ["retrain", "--workdir", str(work), "--once", "--window-size", "500", "--min-records", "100",
            "--models", "ranker"]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "window 1: 500 records" in out and "window 2: 500 records" in out
    records = read_records(work / "retrain")
    assert [r["window"] for r in records] == [1, 2] and records[1]["start"] == records[0]["end"]
    assert set(records[0]["models"]) == {"ranker"}


def test_repeats_are_dropped_and_counted(run_copy):
    work, accepted, examples = run_copy
    write_folders(work, accepted, examples[:600], name="a")
    write_folders(work, [], examples[100:200], name="b")  # at-least-once: sent again after a restore
    write_folders(work, [], examples[600:1100], name="c")
    records = run_retrain(loop_config(work), say=lambda line: None)
    assert [(r["records"], r["duplicates"]) for r in records] == [(500, 0), (500, 100), (200, 0)]
    assert all(r["data_gate"]["passed"] for r in records)  # a few repeats are normal, not a replay

    write_folders(work, [], examples[:500], name="d")  # a whole window again: a replay
    (replayed,) = run_retrain(loop_config(work), say=lambda line: None)
    assert replayed["duplicates"] == 500 and replayed["data_gate"]["reasons"][:1] == ["empty_window"]
    assert "replayed_window" in replayed["data_gate"]["reasons"] and replayed["models"] == {}


def test_items_never_seen_in_the_backfill_are_learned_without_a_restart(run_copy):
    work, accepted, examples = run_copy
    new_item = 987_654_321
    renamed = []
    for value in examples:  # every example of one item now names an item the backfill never saw
        ex = json.loads(value)
        ex["item_id"] = new_item if ex["item_id"] == json.loads(examples[0])["item_id"] else ex["item_id"]
        renamed.append(json.dumps(ex).encode())
    write_folders(work, accepted, renamed)
    registry = Registry(work / "registry")
    before, _ = registry.load("ranker")
    run_retrain(loop_config(work, models=("ranker",)), say=lambda line: None)
    after, meta = registry.load("ranker")
    assert meta["version"] != "1"
    row = int(fold(np.array([new_item]), meta["config"]["item_table_size"])[0])
    key = next(k for k in after if k.endswith("item.weight"))
    assert not torch.equal(before[key][row], after[key][row])  # the hashed row took the new item's gradient


def test_a_promoted_retriever_publishes_interest_vectors_to_feast(run_copy):
    work, accepted, examples = run_copy
    write_folders(work, accepted, examples[:1000])
    records = run_retrain(loop_config(work, models=("retriever",)), say=lambda line: None)
    promoted = [r["models"]["retriever"] for r in records if r["models"]["retriever"]["decision"] == "promoted"]
    assert promoted and promoted[-1]["interests_published"] > 0
    users = [int(json.loads(v)["user_id"]) for v in examples[:5]]
    got = read_interests(work, users)  # through Feast's get_online_features
    version = Registry(work / "registry").champion("retriever")
    for user in users:
        assert got[user] is not None and got[user].shape == (2, 16) and np.isfinite(got[user]).all()
    from pipelines.store.feature_store import open_store, read_rows

    rows = read_rows(open_store(work), "user_interests", users)
    assert {r["model_version"] for r in rows} == {version}

