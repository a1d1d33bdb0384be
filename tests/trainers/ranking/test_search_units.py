"""The general search units on hand-built examples (ties, fewer than k real behaviors, empty
histories) and against a naive oracle: top-k selection, SIM category search, MUSE cosine search,
DARE's attention-table search, and the KJT cut that follows the search."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from trainers.ranking.batches import SPARSE_KEYS
from trainers.ranking.model import ModelConfig, SequenceRanker
from trainers.ranking.search import (category_scores, cosine_scores, dare_scores, keep_behaviors, kept_values,
                             padded_scores, top_k_positions)

NEG = float("-inf")


def kjt(rows: list[tuple[int, int, list[tuple[int, int, int]]]]) -> KeyedJaggedTensor:
    """rows: (target item, target category, [(item, category, gap bucket), ...]) in SPARSE_KEYS order."""
    hist = [h for _, _, h in rows]
    columns = {"target_item": [[r[0]] for r in rows], "target_category": [[r[1]] for r in rows],
               "target_gap": [[1] for _ in rows], "hist_item": [[b[0] for b in h] for h in hist],
               "hist_category": [[b[1] for b in h] for h in hist], "hist_gap": [[b[2] for b in h] for h in hist]}
    values = [v for key in SPARSE_KEYS for row in columns[key] for v in row]
    lengths = [len(row) for key in SPARSE_KEYS for row in columns[key]]
    return KeyedJaggedTensor.from_lengths_sync(keys=list(SPARSE_KEYS), values=torch.tensor(values, dtype=torch.long),
                                               lengths=torch.tensor(lengths, dtype=torch.long))


def picked_lists(indices: torch.Tensor, picked: torch.Tensor) -> list[list[int]]:
    return [[int(i) for i, p in zip(row, mask) if p] for row, mask in zip(indices, picked)]


def test_top_k_hand_drawn_ties_short_and_empty_rows():
    scores = torch.tensor([
        [0.5, 0.9, 0.5, 0.1, 0.5],  # 0.9, then two of the three tied 0.5s: the later ones (4 and 2)
        [0.3, NEG, float("nan"), NEG, NEG],  # one eligible behavior (NaN is not eligible)
        [NEG] * 5,  # an empty history
        [1.0] * 5,  # all tied: the three most recent
    ])
    indices, picked = top_k_positions(scores, 3)
    assert indices.shape == picked.shape == (4, 3)
    assert picked_lists(indices, picked) == [[1, 2, 4], [0], [], [2, 3, 4]]
    assert picked.tolist() == [[True] * 3, [True, False, False], [False] * 3, [True] * 3]  # picked slots first
    indices, picked = top_k_positions(scores, 10)  # k over L keeps every eligible behavior
    assert indices.shape == (4, 5)
    assert picked_lists(indices, picked) == [[0, 1, 2, 3, 4], [0], [], [0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_positions(scores, 0)


def naive_top_k(row: list[float], k: int) -> list[int]:
    """Best score first, the later position first among equals; then in time order."""
    eligible = [(s, i) for i, s in enumerate(row) if s > NEG and not math.isnan(s)]
    best = sorted(eligible, key=lambda si: (-si[0], -si[1]))[:k]
    return sorted(i for _, i in best)


def test_top_k_matches_a_naive_oracle_with_many_ties():
    rng = np.random.default_rng(0)
    for k in (1, 3, 7, 20):
        scores = rng.integers(0, 4, size=(30, 15)).astype(np.float32)  # few values: ties everywhere
        scores[rng.random(scores.shape) < 0.3] = NEG
        scores[:5] = NEG  # empty histories
        indices, picked = top_k_positions(torch.from_numpy(scores), k)
        assert picked_lists(indices, picked) == [naive_top_k(row.tolist(), k) for row in scores]


# Three users' histories (item, category, gap bucket) and their targets.
ROWS = [
    (100, 5, [(1, 5, 20), (2, 6, 18), (3, 5, 12), (4, 5, 6), (5, 7, 2)]),
    (101, 5, [(6, 6, 9), (7, 5, 3)]),  # one behavior of the target's category: fewer than k
    (102, 5, []),  # empty history
    (103, 9, [(8, 1, 4), (9, 2, 3)]),  # nothing of the target's category
]


def test_category_search_keeps_the_most_recent_behaviors_of_the_target_category():
    sparse = kjt(ROWS)
    lengths = sparse["hist_item"].lengths()
    scores = category_scores(sparse)
    indices, picked = top_k_positions(padded_scores(scores, lengths, max_len=5), 2)
    assert picked_lists(indices, picked) == [[2, 3], [1], [], []]  # row 0: categories 5 at 0, 2, 3
    take, kept = kept_values(lengths, indices, picked)
    assert take.tolist() == [2, 3, 6] and kept.tolist() == [2, 1, 0, 0]  # row 1 starts at value 5
    cut = keep_behaviors(sparse, take, kept)
    assert cut.keys() == list(SPARSE_KEYS)
    assert cut["hist_item"].values().tolist() == [3, 4, 7]
    assert cut["hist_item"].lengths().tolist() == [2, 1, 0, 0]
    assert cut["hist_category"].values().tolist() == [5, 5, 5]
    assert cut["hist_gap"].values().tolist() == [12, 6, 3]
    for key in ("target_item", "target_category", "target_gap"):
        assert torch.equal(cut[key].values(), sparse[key].values())


def test_cosine_search_ties_unknown_items_and_chunks():
    # Vector rows: 0 unknown (zero), 1 = [1, 0], 2 = [0, 1], 3 = [1, 1], 4 = [-1, 0].
    vectors = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0], [-1.0, 0.0]])
    target_rows = torch.tensor([1, 1, 2])
    hist_rows = torch.tensor([1, 2, 1, 3, 0, 4,  4, 2])  # row 0: six behaviors; row 1: none; row 2: two
    lengths = torch.tensor([6, 0, 2])
    scores = cosine_scores(vectors, target_rows, hist_rows, lengths)
    np.testing.assert_allclose(scores.numpy(), [1, 0, 1, math.sqrt(0.5), 0, -1, 0, 1], atol=1e-6)
    chunked = cosine_scores(vectors, target_rows, hist_rows, lengths, chunk=3, table_max=0)  # the other path
    torch.testing.assert_close(chunked, scores)
    padded = padded_scores(scores, lengths, max_len=6)
    indices, picked = top_k_positions(padded, 1)
    assert picked_lists(indices, picked) == [[2], [], [1]]  # positions 0 and 2 tie at 1.0: the later wins
    indices, picked = top_k_positions(padded, 3)
    assert picked_lists(indices, picked) == [[0, 2, 3], [], [0, 1]]


def test_dare_scores_are_scaled_inner_products_of_attention_embeddings():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([3, 0, 2])
    a = 4

    def jt(rows_per: torch.Tensor, width: int) -> JaggedTensor:
        return JaggedTensor(values=torch.randn(int(rows_per.sum()), width, generator=gen), lengths=rows_per)

    ones = torch.ones(3, dtype=torch.long)
    att = {"target_item": jt(ones, a), "target_category": jt(ones, a), "target_gap": jt(ones, 2 * a),
           "hist_item": jt(lengths, a), "hist_category": jt(lengths, a), "hist_gap": jt(lengths, 2 * a)}
    got = dare_scores(att)
    expected, n = [], 0
    for b, length in enumerate(lengths.tolist()):
        q = torch.cat([att["target_item"].values()[b], att["target_category"].values()[b]]) \
            + att["target_gap"].values()[b]
        for _ in range(length):
            k = torch.cat([att["hist_item"].values()[n], att["hist_category"].values()[n]]) \
                + att["hist_gap"].values()[n]
            expected.append(float(k @ q) / math.sqrt(2 * a))
            n += 1
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert not got.requires_grad


def test_dare_model_searches_with_its_attention_tables_not_its_representation():
    cfg = ModelConfig(embedding_dim=4, item_table_size=20, category_table_size=10, max_len=5, pooling="tin",
                      search="dare", search_k=2, attention_dim=4)
    model = SequenceRanker(cfg, torch.device("cpu"))
    arch = model.sparse_arch
    tables = {name: module.weight for collection in (arch.attention, arch.attention_temporal, arch.ec)
              for name, module in collection.embeddings.items()}
    with torch.no_grad():
        for name in ("category_att", "gap_att"):
            tables[name].zero_()
        tables["item_att"].zero_()
        tables["item_att"][10] = torch.tensor([1.0, 0, 0, 0])  # the target, item 10
        tables["item_att"][2] = torch.tensor([3.0, 0, 0, 0])  # item 2 scores highest,
        tables["item_att"][5] = torch.tensor([2.0, 0, 0, 0])  # item 5 next; the rest score 0
        tables["item"].copy_(-tables["item_att"])  # representation ranks the other way round
    sparse = kjt([(10, 5, [(1, 5, 20), (2, 6, 18), (3, 5, 12), (4, 5, 6), (5, 7, 2)]), (0, 5, [])])
    cut, att = model._search(sparse, sparse["hist_item"].lengths(), None, 2)
    assert cut["hist_item"].values().tolist() == [2, 5]  # time order
    assert cut["hist_item"].lengths().tolist() == [2, 0]
    # The logits' attention view is looked up for the kept behaviors only.
    torch.testing.assert_close(att["hist_item"].values(), tables["item_att"][[2, 5]])
    assert torch.isfinite(model(sparse)).all()


def test_long_histories_search_on_ids_and_look_up_only_k():
    """10^4 behaviors per row: the representation tables see the k kept behaviors only."""
    rng = np.random.default_rng(1)
    B, L, k = 4, 10_000, 50
    rows = [(int(rng.integers(1, 999)), 3, [(int(i), int(c), int(g)) for i, c, g in
                                           zip(rng.integers(1, 999, L), rng.integers(1, 8, L), rng.integers(1, 31, L))])
            for _ in range(B - 1)] + [(5, 3, [])]
    sparse = kjt(rows)
    for search in ("category", "dare"):
        cfg = ModelConfig(embedding_dim=4, item_table_size=1000, category_table_size=10, max_len=L, pooling="tin",
                          search=search, search_k=k, attention_dim=4)
        model = SequenceRanker(cfg, torch.device("cpu"))
        cut, _ = model._search(sparse, sparse["hist_item"].lengths(), None, B)
        assert cut["hist_item"].lengths().tolist() == [k, k, k, 0]
        if search == "category":
            cats = cut["hist_category"].values().reshape(B - 1, k)
            assert bool((cats == 3).all())
            last = [[j for j, (_, c, _) in enumerate(r[2]) if c == 3][-k:] for r in rows[:-1]]
            items = [[rows[b][2][j][0] for j in last[b]] for b in range(B - 1)]
            assert cut["hist_item"].values().reshape(B - 1, k).tolist() == items
        assert torch.isfinite(model(sparse)).all()


def test_histories_longer_than_max_len_are_refused():
    with pytest.raises(ValueError, match="exceeds the model's max_len=2"):
        padded_scores(torch.zeros(3), torch.tensor([3]), max_len=2)
    model = SequenceRanker(ModelConfig(embedding_dim=4, item_table_size=20, category_table_size=10, max_len=2),
                           torch.device("cpu"))
    with pytest.raises(ValueError, match="max_len=2"):
        model(kjt([(1, 1, [(1, 1, 1)] * 3)]))
