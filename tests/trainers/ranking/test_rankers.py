"""The ranker family: each pooling against a per-row loop of its equations, TIN's temporal
encoding (the only pooling that reads time), every model x search combination on bad input (empty histories, IDs beyond the
tables) and trained for real through trainers.ranking.train.train, and config typos refused."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from bench.ranker_report import planted_recency
from features.labels import EXAMPLE_SCHEMA
from features.pit import sort_log
from features.tables import BEHAVIOR_LOG_SCHEMA
from pipelines.config import ConfigError, from_dict
from trainers.spec import FeatureSpec
from trainers.ranking.batches import to_batch
from trainers.item_vectors import ItemVectors
from trainers.metrics import auc
from trainers.ranking.model import ModelConfig, SequenceRanker
from trainers.ranking.pooling import (TIME_POOLINGS, Behaviors, DinPooling, MeanPooling, TinPooling, make_pooling,
                              masked_softmax)
from trainers.ranking.train import TrainConfig, predict, train

COMBOS = list(itertools.product(("mean", "din", "tin"), ("none", "category", "cosine", "dare")))
LENGTHS = [3, 0, 1, 4]  # one empty history


def random_view(gen: torch.Generator, dim: int, L: int = 4) -> Behaviors:
    B = len(LENGTHS)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return Behaviors(target=r(B, dim), hist=r(B, L, dim), target_time=r(B, dim), hist_time=r(B, L, dim))


def mask_of(lengths: list[int], L: int = 4) -> torch.Tensor:
    return (torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]).double()


def test_mean_pooling_is_the_masked_mean():
    value = random_view(torch.Generator().manual_seed(0), 6)
    got = MeanPooling()(value, value, mask_of(LENGTHS))
    for b, n in enumerate(LENGTHS):
        want = sum(value.hist[b, i] for i in range(n)) / n if n else torch.zeros(6, dtype=torch.float64)
        torch.testing.assert_close(got[b], want)


def test_din_pooling_against_a_per_row_loop():
    gen = torch.Generator().manual_seed(1)
    value, key = random_view(gen, 6), random_view(gen, 4)  # decoupled views, as with DARE
    pool = DinPooling(key_dim=4, hidden=(8, 5)).double()
    got = pool(value, key, mask_of(LENGTHS))
    timeless = Behaviors(key.target, key.hist)  # DIN reads no time: the same output without any
    torch.testing.assert_close(pool(Behaviors(value.target, value.hist), timeless, mask_of(LENGTHS)), got)
    for b, n in enumerate(LENGTHS):
        want = torch.zeros(6, dtype=torch.float64)
        for j in range(n):
            e, v = key.hist[b, j], key.target[b]
            w = pool.score(torch.cat([e, v, e * v, e - v]))  # a(e_j, v_A), unnormalized, no time
            want += w * value.hist[b, j]
        torch.testing.assert_close(got[b], want)


def test_tin_pooling_against_a_per_row_loop():
    gen = torch.Generator().manual_seed(2)
    coupled = random_view(gen, 6)
    for value, key in [(coupled, coupled), (random_view(gen, 6), random_view(gen, 4))]:
        got = TinPooling()(value, key, mask_of(LENGTHS))
        d = key.hist.shape[-1]
        for b, n in enumerate(LENGTHS):
            q = key.target[b] + key.target_time[b]  # v~_t (attention view)
            logits = [float((key.hist[b, i] + key.hist_time[b, i]) @ q) / math.sqrt(d) for i in range(n)]
            top = max(logits, default=0.0)
            weights = [math.exp(x - top) for x in logits]
            alphas = [w / sum(weights) for w in weights]
            v_t = value.target[b] + value.target_time[b]
            want = torch.zeros(6, dtype=torch.float64)
            for i, a in enumerate(alphas):
                want += a * (value.hist[b, i] + value.hist_time[b, i]) * v_t  # alpha_i (e~_i (.) v~_t)
            torch.testing.assert_close(got[b], want)
        torch.testing.assert_close(TinPooling().over_target(value), value.target + value.target_time)  # v~_t


def test_only_tin_reads_time_and_only_its_model_has_a_gap_table():
    for name in ("mean", "din", "tin"):
        assert make_pooling(name, 4, (8,)).uses_time == (name in TIME_POOLINGS) == (name == "tin")
        assert (small_model(name, "none").sparse_arch.temporal is not None) == (name == "tin")


def test_masked_softmax_ignores_padding_and_empty_rows_are_zero():
    logits = torch.tensor([[1.0, 2.0, 50.0], [3.0, 3.0, 3.0]])
    got = masked_softmax(logits, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    e = math.exp(1.0)
    torch.testing.assert_close(got, torch.tensor([[1 / (1 + e), e / (1 + e), 0.0], [0.0, 0.0, 0.0]]))


# Tiny drawn tables: user 1 has three behaviors, user 2 none.
SPEC = FeatureSpec(item_table_size=50, category_table_size=10, max_len=6)
BIG = 2**62 + 12345  # far beyond the tables: must fold, never index out of range
LOG = sort_log(pa.Table.from_pylist([
    {"user_id": 1, "timestamp": 1_000, "event_id": "a", "item_id": 7, "category_id": 2, "event_type_code": 2},
    {"user_id": 1, "timestamp": 90_000, "event_id": "b", "item_id": BIG, "category_id": BIG, "event_type_code": 2},
    {"user_id": 1, "timestamp": 99_000, "event_id": "c", "item_id": 9, "category_id": 2, "event_type_code": 2},
], schema=BEHAVIOR_LOG_SCHEMA))
EXAMPLES = pa.Table.from_pylist([
    {"user_id": 1, "item_id": 8, "category_id": 2, "timestamp": 100_000, "label": 1},
    {"user_id": 2, "item_id": BIG + 1, "category_id": BIG, "timestamp": 100_000, "label": 0},
    {"user_id": 1, "item_id": BIG, "category_id": 3, "timestamp": 100_000, "label": 0},
], schema=EXAMPLE_SCHEMA)
VECTORS = ItemVectors("v", np.array([7, 8, 9], dtype=np.int64),
                      torch.randn(4, 8, generator=torch.Generator().manual_seed(3)))


def small_model(pooling: str, search: str, max_len: int = 6) -> SequenceRanker:
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=4, item_table_size=50, category_table_size=10, max_len=max_len, pooling=pooling,
                      search=search, search_k=0 if search == "none" else 2, attention_dim=4,
                      item_vector_dim=8 if search == "cosine" else 0)
    return SequenceRanker(cfg, torch.device("cpu"), item_vectors=VECTORS.table if search == "cosine" else None)


@pytest.mark.parametrize("pooling,search", COMBOS)
def test_empty_histories_and_huge_ids_give_finite_outputs(pooling, search):
    model = small_model(pooling, search)
    vectors = VECTORS if search == "cosine" else None
    batch = to_batch(EXAMPLES, LOG, SPEC, vectors)
    assert batch.sparse["hist_item"].lengths().tolist() == [3, 0, 3]
    logits = model(batch.sparse, batch.vector_rows)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    alone = to_batch(EXAMPLES.slice(1, 1), LOG, SPEC, vectors)  # the empty row alone: same logit
    torch.testing.assert_close(model(alone.sparse, alone.vector_rows), logits[1:2].detach())


def test_tin_output_changes_when_only_the_gaps_change():
    older = LOG.set_column(1, "timestamp", pa.array([t - 86_400_000 for t in LOG.column("timestamp").to_pylist()]))
    near, far = to_batch(EXAMPLES, LOG, SPEC), to_batch(EXAMPLES, older, SPEC)
    for key in ("hist_item", "hist_category"):  # same behaviors, in the same order
        assert torch.equal(near.sparse[key].values(), far.sparse[key].values())
    assert not torch.equal(near.sparse["hist_gap"].values(), far.sparse["hist_gap"].values())
    tin, din, mean = small_model("tin", "none"), small_model("din", "none"), small_model("mean", "none")
    with torch.no_grad():
        assert (tin(near.sparse) - tin(far.sparse)).abs()[[0, 2]].min() > 1e-6  # rows with a history
        assert torch.equal(tin(near.sparse)[1], tin(far.sparse)[1])  # the empty history has no gap
        assert torch.equal(din(near.sparse), din(far.sparse))  # DIN, as in its paper, is blind to time
        assert torch.equal(mean(near.sparse), mean(far.sparse))  # and so is mean pooling


@pytest.fixture(scope="module")
def planted():
    """One tiny planted-recency dataset (bench/ranker_report.py) shared by every combination."""
    return planted_recency(users=250, history=16, seed=0)


@pytest.mark.training
@pytest.mark.parametrize("pooling,search", COMBOS)
def test_every_model_and_search_trains_and_its_loss_falls(planted, pooling, search):
    cfg = TrainConfig(steps=40, batch_size=64, threads=1, seed=0, item_table_size=planted.items + 1,
                      category_table_size=planted.categories + 1, max_len=16, sparse_lr=0.05, progress_every=40,
                      model=pooling, search=search, search_k=0 if search == "none" else 6,
                      item_vectors=search == "cosine")
    vectors = planted.vectors if search == "cosine" else None
    result = train(planted.train, planted.eval, planted.log, cfg, vectors=vectors)
    assert len(result.losses) == 40 and all(math.isfinite(x) for x in result.losses)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10]) - 0.05
    # The unsharded weights (attention tables included) score the eval rows as the sharded model did.
    scores = predict(result.state_dict, cfg, planted.eval, planted.log, vectors=vectors, model_meta=result.metadata())
    assert abs(auc(planted.eval.column("label").to_numpy(), scores) - result.eval_metrics["auc"]) < 1e-6


def test_config_typos_are_refused_by_name():
    with pytest.raises(ValueError, match=r"TrainConfig.model must be one of \('mean', 'din', 'tin', 'dien', 'sdim'\), got 'tim'"):
        TrainConfig(model="tim")
    with pytest.raises(ValueError, match="TrainConfig.search must be one of .*'dare'.*, got 'cosin'"):
        TrainConfig(search="cosin")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['modle'\]"):
        from_dict(TrainConfig, {"modle": "tin"})
    with pytest.raises(ConfigError, match="train: TrainConfig.search must be one of"):
        from_dict(TrainConfig, {"search": "SIM"}, "train")
    with pytest.raises(ValueError, match="ModelConfig.pooling 'dein' is not one of"):
        ModelConfig(4, 10, 10, 5, pooling="dein")
    with pytest.raises(ValueError, match="ModelConfig.search 'soft' is not one of"):
        ModelConfig(4, 10, 10, 5, search="soft")
    with pytest.raises(ValueError, match="search_k=5 needs a search unit"):
        TrainConfig(search_k=5)
    with pytest.raises(ValueError, match="search='category' needs search_k >= 1"):
        TrainConfig(search="category")
    with pytest.raises(ValueError, match="set item_vectors = true"):
        TrainConfig(search="cosine", search_k=5)
    with pytest.raises(ValueError, match="attention_dim must be a multiple of 4"):
        TrainConfig(search="dare", search_k=5, attention_dim=6)
    assert TrainConfig(model="tin", search="dare", search_k=5).model_config().search == "dare"
