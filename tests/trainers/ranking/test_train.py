"""The golden training run: synthetic stream -> backfill -> DMP training -> beats popularity."""
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist

from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.sources.raw_files import write_json_lines
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream
from features.ids import stable_ids
from features.item_vectors import EmbeddingVersionMismatch
from trainers.item_vectors import META_KEY, ItemVectors
from trainers.metrics import auc
from trainers.ranking.model import SequenceRanker
from trainers.ranking.train import TrainConfig, predict, train


@pytest.fixture(scope="module")
def synthetic_tables(tmp_path_factory):
    """150 users over 10 days: ~28k impressions, ~7.5k behaviors; examples split 80/20 by time."""
    root = tmp_path_factory.mktemp("synthetic")
    stream = SyntheticStream(SyntheticConfig(users=150, days=10, seed=0))
    write_json_lines((line for lines, _ in stream.windows() for line in lines), root / "raw")
    run_backfill(BackfillConfig(input=str(root / "raw" / "*.jsonl"), output=str(root / "tables")))
    examples = pq.read_table(root / "tables" / "examples").sort_by(
        [("timestamp", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")])
    log = pq.read_table(root / "tables" / "behavior_log")
    times = examples.column("timestamp").to_numpy()
    cut = times[int(0.8 * len(times))]  # a time, so one session never straddles the split
    return examples.filter(pa.array(times < cut)), examples.filter(pa.array(times >= cut)), log


@pytest.mark.training
def test_training_beats_popularity_and_state_reloads(synthetic_tables):
    train_ex, eval_ex, log = synthetic_tables
    assert train_ex.num_rows > 15_000 and eval_ex.num_rows > 3_000
    cfg = TrainConfig(steps=250, batch_size=256, seed=0, threads=1)
    calls = []
    result = train(train_ex, eval_ex, log, cfg, progress=lambda step, loss: calls.append((step, loss)))

    assert not dist.is_initialized()  # the group train() made is gone
    assert len(result.losses) == 250 and all(math.isfinite(x) for x in result.losses)
    assert [s for s, _ in calls] == [50, 100, 150, 200, 250]
    assert np.mean(result.losses[-20:]) < np.mean(result.losses[:20])
    m = result.eval_metrics
    assert m["n_eval"] == eval_ex.num_rows
    assert m["auc"] > 0.55
    assert m["auc"] > m["baseline_auc"]
    assert m["logloss"] < m["baseline_logloss"]
    assert result.samples_per_s > 0

    # The unsharded state loads into a plain CPU model and gives the same eval AUC.
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in result.state_dict.values())
    assert result.state_dict["sparse_arch.ec.embeddings.item.weight"].shape == (cfg.item_table_size,
                                                                                cfg.embedding_dim)
    SequenceRanker(cfg.model_config()).load_state_dict(result.state_dict, strict=True)
    scores = predict(result.state_dict, cfg, eval_ex, log)
    assert scores.shape == (eval_ex.num_rows,)
    assert abs(auc(eval_ex.column("label").to_numpy(), scores) - m["auc"]) < 1e-6
    # Serving requests carry no label; the scores do not depend on it.
    assert np.array_equal(predict(result.state_dict, cfg, eval_ex.drop(["label"]), log), scores)


TINY_LOG = pa.table({"user_id": [1, 1, 2], "timestamp": [0, 10, 5], "event_id": ["a", "b", "c"],
                     "item_id": [5, 6, 7], "category_id": [1, 2, 1], "event_type_code": [2, 2, 2]})
TINY_EXAMPLES = pa.table({"user_id": [1, 2, 1, 2], "item_id": [6, 5, 7, 6], "category_id": [2, 1, 1, 2],
                          "timestamp": [20, 20, 30, 30], "label": pa.array([1, 0, 1, 0], pa.int8())})


@pytest.mark.training
def test_diverging_loss_is_an_error_and_an_existing_group_is_reused():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        cfg = TrainConfig(steps=20, batch_size=2, dense_lr=1e12, sparse_lr=1e12, item_table_size=50,
                          category_table_size=10, max_len=4, threads=1)
        with pytest.raises(FloatingPointError, match="training loss is (nan|inf)"):
            train(TINY_EXAMPLES, TINY_EXAMPLES, TINY_LOG, cfg)
        assert dist.is_initialized()  # not ours to destroy
    finally:
        dist.destroy_process_group()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        TrainConfig(batch_size=25.6)
    with pytest.raises(ValueError, match="item_table_size must be >= 2"):
        TrainConfig(item_table_size=1)
    with pytest.raises(ValueError, match="dense_lr must be a finite number > 0"):
        TrainConfig(dense_lr=float("nan"))
    with pytest.raises(ValueError, match="sparse_lr"):
        TrainConfig(sparse_lr=-0.1)
    with pytest.raises(TypeError):
        TrainConfig(setps=10)  # a typo is not silently ignored


def test_inputs_missing_columns_are_refused():
    with pytest.raises(ValueError, match="train_examples lacks columns \\['label'\\]"):
        train(TINY_EXAMPLES.drop(["label"]), TINY_EXAMPLES, TINY_LOG, TrainConfig(steps=1))


def planted_vectors(version: str, dim: int = 16, seed: int = 0) -> ItemVectors:
    """Each synthetic item's vector: its category's direction plus noise, normalized, the way
    content embeddings place similar items near each other."""
    catalog = SyntheticStream(SyntheticConfig(users=150, days=10, seed=0)).catalog()
    ids = stable_ids(catalog.column("item_id"))
    cats = catalog.column("category_id").to_numpy()
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(cats.max() + 1, dim))
    vecs = base[cats] + 0.3 * rng.normal(size=(len(ids), dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    order = np.argsort(ids)
    table = torch.zeros(len(ids) + 1, dim)
    table[1:] = torch.from_numpy(vecs[order].astype(np.float32))
    return ItemVectors(version, ids[order], table)


@pytest.mark.training
def test_item_vectors_with_search_train_and_hold_their_version(synthetic_tables):
    train_ex, eval_ex, log = synthetic_tables
    vectors = planted_vectors("planted-v1")
    cfg = TrainConfig(steps=250, batch_size=256, seed=0, threads=1, item_vectors=True, search="cosine", search_k=10)
    result = train(train_ex, eval_ex, log, cfg, vectors=vectors)
    m = result.eval_metrics
    assert np.mean(result.losses[-20:]) < np.mean(result.losses[:20])
    assert m["auc"] > m["baseline_auc"] and m["auc"] > 0.55
    assert result.metadata() == {META_KEY: "planted-v1"}
    assert "item_vectors" not in result.state_dict  # frozen, versioned apart from the weights

    scores = predict(result.state_dict, cfg, eval_ex, log, vectors=vectors, model_meta=result.metadata())
    assert abs(auc(eval_ex.column("label").to_numpy(), scores) - m["auc"]) < 1e-6
    with pytest.raises(EmbeddingVersionMismatch, match="planted-v1"):
        predict(result.state_dict, cfg, eval_ex, log, vectors=planted_vectors("planted-v2"),
                model_meta=result.metadata())
    with pytest.raises(ValueError, match="pass vectors="):
        train(train_ex, eval_ex, log, cfg)
    with pytest.raises(ValueError, match="set item_vectors = true"):
        TrainConfig(search="cosine", search_k=5)
