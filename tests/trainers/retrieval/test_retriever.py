"""The multi-interest retriever: batches, towers against naive loops, serving, and real training runs."""
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from bench.retriever_report import eval_slice, synthetic_tables
from features.ids import fold, stable_ids
from pipelines.config import ConfigError, from_dict
from trainers.spec import FeatureSpec
from trainers.retrieval.batches import RETRIEVAL_KEYS, history_batches, to_retrieval_batch
from trainers.retrieval.metrics import popularity_vectors, recall_at_k
from trainers.retrieval.train import (RetrievalConfig, item_vectors, retrieve, serving_model, train_retriever,
                                      user_vectors)
from trainers.retrieval.model import (MeanPoolTower, Retriever, RetrieverConfig, RoutingTower, SelfAttentiveTower,
                                label_aware, squash)

LOG = pa.table({"user_id": [1, 1, 2], "timestamp": [0, 10, 5], "event_id": ["a", "b", "c"],
                "item_id": [5, 6, 7], "category_id": [1, 2, 1], "event_type_code": pa.array([2, 2, 2], pa.int32())})
EXAMPLES = pa.table({"user_id": [1, 2, 1, 1], "item_id": [6, 5, 7, 8], "category_id": [2, 1, 1, 3],
                     "timestamp": [10, 5, 30, 30], "label": pa.array([1, 1, 0, 1], pa.int8())})
SPEC = FeatureSpec(item_table_size=11, category_table_size=5, max_len=3)  # rows: id % 10 + 1, id % 4 + 1


def as_lists(batch):
    kjt = batch.sparse
    return {k: (kjt[k].lengths().tolist(), kjt[k].values().tolist()) for k in kjt.keys()}


def test_batch_is_drawn_by_hand():
    # Row 0: user 1 at t=10 sees item 5 (t=0); row 1: user 2 at t=5 sees nothing (strictly before);
    # the label-0 row is dropped; row 2: user 1 at t=30 sees items 5, 6. Negatives ride on row 0.
    batch = to_retrieval_batch(EXAMPLES, LOG, SPEC, negatives=(np.array([3, 4]), np.array([1, 1])))
    assert len(batch) == 3 and batch.sparse.keys() == list(RETRIEVAL_KEYS)
    assert as_lists(batch) == {
        "hist_item": ([1, 0, 2], [6, 6, 7]), "hist_category": ([1, 0, 2], [2, 2, 3]),
        "target_item": ([1, 1, 1], [7, 6, 9]), "target_category": ([1, 1, 1], [3, 2, 4]),
        "neg_item": ([2, 0, 0], [3, 4]), "neg_category": ([2, 0, 0], [1, 1])}


def test_serving_batches_have_no_target_and_ids_beyond_the_table_fold():
    big = 2**62 + 12345
    log = pa.table({"user_id": [1], "timestamp": [0], "event_id": ["a"], "item_id": [big], "category_id": [big],
                    "event_type_code": pa.array([2], pa.int32())})
    got = as_lists(next(history_batches(np.array([1, 2]), np.array([100, 100]), log, SPEC, batch_size=8)))
    assert got["hist_item"] == ([1, 0], [big % 10 + 1]) and got["hist_category"] == ([1, 0], [big % 4 + 1])
    assert got["target_item"] == ([0, 0], []) and got["neg_item"] == ([0, 0], [])
    with pytest.raises(ValueError, match="outside the tables"):
        to_retrieval_batch(EXAMPLES, LOG, SPEC, negatives=(np.array([11]), np.array([1])))


def padded(lengths, dim=3, max_len=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    hist = torch.randn(len(lengths), max_len, dim, generator=g)
    mask = (torch.arange(max_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()
    return hist * mask.unsqueeze(-1), mask


def test_self_attentive_tower_matches_the_equations():
    torch.manual_seed(0)
    tower = SelfAttentiveTower(dim=3, hidden=5, interests=2, max_len=4)
    hist, mask = padded([4, 2, 0])
    got = tower(hist, mask).detach()
    w1, w2, pos = tower.w1.weight.detach(), tower.w2.weight.detach(), tower.positions.detach()
    for b, n in enumerate([4, 2, 0]):
        for k in range(2):
            logits = [float(w2[k] @ torch.tanh(w1 @ (hist[b, j] + pos[n - 1 - j]))) for j in range(n)]
            weights = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits]
            want = sum((w * hist[b, j] for j, w in enumerate(weights)), torch.zeros(3))
            assert torch.allclose(got[b, k], want, atol=1e-5)
    assert torch.equal(got[2], torch.zeros(2, 3))  # empty history


def test_routing_tower_matches_the_algorithm():
    torch.manual_seed(0)
    tower = RoutingTower(dim=3, interests=2, max_len=4, iterations=3)
    hist, mask = padded([3, 1, 0])
    got = tower(hist, mask).detach()
    s, b0 = tower.bilinear.weight.detach(), tower.initial_logits
    for b, n in enumerate([3, 1, 0]):
        mapped = [s @ hist[b, i] for i in range(n)]
        logits = [[float(b0[j, i]) for i in range(n)] for j in range(2)]
        for it in range(3):
            caps = []
            for j in range(2):
                z = torch.zeros(3)
                for i in range(n):
                    z = z + math.exp(logits[j][i]) / sum(math.exp(logits[m][i]) for m in range(2)) * mapped[i]
                norm2 = float(z @ z)
                caps.append(z * norm2 / (1 + norm2) / math.sqrt(norm2) if norm2 > 0 else z)
            for j in range(2):
                for i in range(n):
                    logits[j][i] += float(caps[j] @ mapped[i])
        for j in range(2):
            assert torch.allclose(got[b, j], caps[j], atol=1e-5)
    assert torch.equal(got[2], torch.zeros(2, 3))


def test_mean_pool_tower_squash_and_label_aware_attention():
    torch.manual_seed(0)
    tower = MeanPoolTower(dim=3, hidden=4)
    hist, mask = padded([2, 0])
    got = tower(hist, mask)
    assert torch.allclose(got[0, 0], tower.mlp(hist[0, :2].mean(0)), atol=1e-6)
    assert torch.allclose(got[1, 0], tower.mlp(torch.zeros(3)), atol=1e-6)

    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(squash(z), torch.tensor([[0.6 * 25 / 26, 0.8 * 25 / 26], [0.0, 0.0]]))

    interests = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]])
    target = torch.tensor([[1.0, 0.5]])  # scores 1, 1, -0.5
    for p in (2.0, 0.5):
        signed = [1.0, 1.0, -(0.5 ** p)]
        w = [math.exp(x) / sum(math.exp(y) for y in signed) for x in signed]
        want = sum(w[k] * interests[0, k] for k in range(3))
        assert torch.allclose(label_aware(interests, target, p)[0], want, atol=1e-6)
    target = torch.tensor([[0.0, 1.0]])  # scores 0, 2, 1
    assert torch.equal(label_aware(interests, target, math.inf)[0], interests[0, 1])


@pytest.mark.parametrize("model", ["single", "comirec-sa", "mind"])
def test_model_pads_the_jagged_history_and_empty_histories_stay_finite(model):
    torch.manual_seed(0)
    cfg = RetrieverConfig(model, embedding_dim=4, item_table_size=11, category_table_size=5, max_len=3, interests=2)
    net = Retriever(cfg)
    batch = to_retrieval_batch(EXAMPLES, LOG, SPEC)  # histories of 1, 0 and 2
    out = net(batch.sparse)
    items, cats = net.ec.embeddings["item"].weight, net.ec.embeddings["category"].weight
    hist = torch.zeros(3, 3, 4)
    hist[0, 0] = items[6] + cats[2]
    hist[2, 0], hist[2, 1] = items[6] + cats[2], items[7] + cats[3]
    mask = torch.tensor([[1.0, 0, 0], [0, 0, 0], [1, 1, 0]])
    assert torch.allclose(out.interests, net.tower(hist, mask), atol=1e-6)
    assert torch.allclose(out.targets, items[[7, 6, 9]] + cats[[3, 2, 4]])
    assert out.interests.shape == (3, cfg.num_interests, 4) and torch.isfinite(out.interests).all()
    label_aware(out.interests, out.targets, 2.0).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="exceeds max_len=1"):
        Retriever(RetrieverConfig(model, 4, 11, 5, max_len=1))(batch.sparse)


def test_retrieve_merges_interests_keeping_the_best_score():
    interests = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    ids = np.array([10, 20, 30, 40])
    vecs = np.array([[3.0, 0.0], [2.0, 2.5], [0.0, 1.2], [1.0, 0.5]])  # scores (3, 0) (2, 2.5) (0, 1.2) (1, .5)
    got, scores = retrieve(interests, vecs, ids, 2)
    assert got.tolist() == [[10, 20]] and np.allclose(scores, [[3.0, 2.5]])
    got, scores = retrieve(interests, vecs, ids, 3)
    assert got.tolist() == [[10, 20, 30]] and np.allclose(scores, [[3.0, 2.5, 1.2]])
    got, scores = retrieve(interests, vecs, ids, 6, exclude=(np.array([0]), np.array([10])))
    assert got.tolist() == [[20, 30, 40, -1, -1, -1]] and np.isneginf(scores[0, 3:]).all()
    with pytest.raises(ValueError, match="distinct"):
        retrieve(interests, vecs, np.array([10, 10, 30, 40]), 2)


def test_config_rejects_typos_and_bad_values():
    with pytest.raises(TypeError, match="setps"):
        RetrievalConfig(setps=10)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['negative'\]; valid keys: .*'negatives'"):
        from_dict(RetrievalConfig, {"negative": "in-batch"})
    with pytest.raises(ValueError, match="RetrievalConfig.model must be one of"):
        RetrievalConfig(model="comirec")
    with pytest.raises(ValueError, match="RetrievalConfig.negatives must be one of"):
        RetrievalConfig(negatives="uniform")
    with pytest.raises(ValueError, match="RetrievalConfig.label_power must be > 0"):
        RetrievalConfig(label_power=0)
    with pytest.raises(TypeError, match="RetrievalConfig.interests must be an int"):
        RetrievalConfig(interests=2.5)
    with pytest.raises(ValueError, match="RetrievalConfig.sharding must be one of"):
        RetrievalConfig(sharding="data_parallel")


# ---- real training on the planted synthetic stream -------------------------------------------

USERS = 200
RUNS = {  # one run per model; together they cover both negative samplers and three sharding plans
    "single": dict(negatives="in-batch", sharding="table_wise"),
    "comirec-sa": dict(negatives="in-batch", sharding="row_wise"),
    "mind": dict(negatives="log-uniform", sharding="column_wise"),
}


@pytest.fixture(scope="module")
def planted():
    """200 users with 3 planted interest categories each (no drift), 14 days; examples split 80/20
    by time; each model trained on the first 80% for 300 steps."""
    tables, stream = synthetic_tables(USERS, days=14, sessions_per_user=40)
    times = tables.examples.column("timestamp").to_numpy()
    cut = int(np.quantile(times, 0.8))
    train = tables.examples.filter(pa.array(times < cut))
    test = eval_slice(tables, cut, int(times.max()) + 1, exclude_seen=False)
    results = {}
    for model, extra in RUNS.items():
        cfg = RetrievalConfig(model=model, steps=300, batch_size=128, threads=1, item_table_size=8_000,
                              category_table_size=200, validate_every=100 if model == "single" else 0, **extra)
        validate = (lambda state, cfg=cfg: recall50(state, cfg, tables, test)) if model == "single" else None
        results[model] = train_retriever(train, tables.log, cfg, validate=validate)
    return tables, stream, train, test, results


def recall50(state, cfg, tables, s):
    vecs = user_vectors(state, cfg, s.users, np.full(len(s.users), s.start), tables.log)
    ids, _ = retrieve(vecs, item_vectors(state, cfg, tables.item_ids, tables.category_ids), tables.item_ids, 50)
    return recall_at_k(ids, s.truth, 50)


@pytest.mark.training
@pytest.mark.parametrize("model", list(RUNS))
def test_training_lowers_the_loss_and_beats_popularity(planted, model):
    tables, _, train, test, results = planted
    result = results[model]
    assert len(result.losses) == 300 and all(math.isfinite(x) for x in result.losses)
    assert np.mean(result.losses[-30:]) < np.mean(result.losses[:30]) - 0.5
    pop_users, pop_items = popularity_vectors(train.column("item_id").to_numpy(), tables.item_ids, len(test.users))
    pop_ids, _ = retrieve(pop_users, pop_items, tables.item_ids, 50)
    popularity = recall_at_k(pop_ids, test.truth, 50)
    assert len(test.users) > 150
    assert recall50(result.state_dict, result.config, tables, test) > 1.3 * popularity
    serving_model(result.state_dict, result.config)  # the unsharded state loads strictly


@pytest.mark.training
def test_validation_selects_the_returned_state(planted):
    tables, _, _, test, results = planted
    result = results["single"]
    assert [step for step, _ in result.validation] == [100, 200, 300]
    best_step, best = max(result.validation, key=lambda v: v[1])
    assert result.best_step == best_step
    assert recall50(result.state_dict, result.config, tables, test) == pytest.approx(best)


def interest_categories(result, tables, stream, top: int = 10) -> np.ndarray:
    """[U, K]: the most common planted-raw category among each interest's top items."""
    cfg = result.config
    vecs = user_vectors(result.state_dict, cfg, stable_ids(np.arange(USERS)), np.full(USERS, 2**62), tables.log)
    scores = np.einsum("ukd,cd->ukc", vecs, item_vectors(result.state_dict, cfg, tables.item_ids,
                                                         tables.category_ids))
    cats = stream.item_category[np.argsort(-scores, axis=2)[:, :, :top]]  # [U, K, top], catalog order = item index
    counts = (cats[..., None] == np.arange(stream.config.categories)).sum(2)
    return counts.argmax(-1)


def match(found: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    """(precision: share of interests landing on a planted category, coverage: share of planted
    categories some interest lands on)."""
    hits = (found[:, :, None] == planted[:, None, :])
    return float(hits.any(2).mean()), float(hits.any(1).mean())


@pytest.mark.training
def test_interests_recover_the_planted_interests(planted):
    tables, stream, _, _, results = planted
    truth = stream.interests  # [U, 3] raw categories; no drift, so fixed
    assert np.array_equal(fold(stable_ids(stream.catalog().column("item_id")), 8_000),
                          fold(tables.item_ids, 8_000))  # catalog order is item index order
    rng = np.random.default_rng(0)
    random_precision, random_coverage = match(rng.integers(stream.config.categories, size=(USERS, 4)), truth)
    single_precision, single_coverage = match(interest_categories(results["single"], tables, stream), truth)
    assert single_coverage <= 1 / 3 + 1e-9  # one vector lands on one category
    for model in ("comirec-sa", "mind"):
        precision, coverage = match(interest_categories(results[model], tables, stream), truth)
        # measured: precision ~0.8-0.9, coverage ~0.8 (random: ~0.08 and ~0.1)
        assert precision > 0.6 and precision > 4 * random_precision
        assert coverage > 0.6 and coverage > 4 * random_coverage
        assert coverage > single_coverage + 0.25
