"""DIEN and SDIM against per-row loops of their papers' equations: DIEN's GRU / AUGRU and auxiliary
loss, SDIM's hash-based sampling; padding anywhere changes nothing; the auxiliary loss reaches the
extractor and the trainer's loss; both train for real and reload for predict."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from bench.ranker_report import planted_recency
from pipelines.train import RANKERS
from trainers.metrics import auc
from trainers.ranking.batches import GAP_TABLE_SIZE, SPARSE_KEYS
from trainers.ranking.dien import DienPooling, InterestGRU, auxiliary_loss
from trainers.ranking.model import ModelConfig, SequenceRanker
from trainers.ranking.pooling import POOLINGS, Behaviors, make_pooling
from trainers.ranking.sdim import SdimPooling
from trainers.ranking.train import TrainConfig, predict, train

LENGTHS = [3, 0, 1, 5, 2]  # one empty history, one full
L = 5


def mask_of(lengths: list[int], width: int = L, left: bool = False) -> torch.Tensor:
    pos = torch.arange(width)[None, :]
    n = torch.tensor(lengths)[:, None]
    real = pos >= width - n if left else pos < n
    return real.double()


def randn(gen: torch.Generator, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def views(gen: torch.Generator, value_dim: int, key_dim: int | None = None) -> tuple[Behaviors, Behaviors]:
    """(value, key) for len(LENGTHS) rows of width L; the same object when key_dim is None."""
    B = len(LENGTHS)
    value = Behaviors(randn(gen, B, value_dim), randn(gen, B, L, value_dim))
    return value, (value if key_dim is None else Behaviors(randn(gen, B, key_dim), randn(gen, B, L, key_dim)))


def left_padded(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Right-padded [B, L, ...] -> the same rows left-padded (padding filled with noise, never read)."""
    out = torch.randn_like(x) * 7
    for b, n in enumerate(lengths):
        if n:
            out[b, x.shape[1] - n:] = x[b, :n]
    return out


# --- DIEN -------------------------------------------------------------------------------------


def gru_loop(gru: InterestGRU, x: torch.Tensor, attention: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The paper's GRU (AUGRU with attention) on one unpadded sequence x [n, d], step by step."""
    Wu, Wr, Wh = gru.input.weight.chunk(3, dim=0)
    bu, br, bh = gru.input.bias.chunk(3)
    Uu, Ur, Uh = gru.state.weight.chunk(3, dim=0)
    h = torch.zeros(gru.hidden_dim, dtype=x.dtype)
    states = []
    for t in range(x.shape[0]):
        u = torch.sigmoid(Wu @ x[t] + Uu @ h + bu)
        r = torch.sigmoid(Wr @ x[t] + Ur @ h + br)
        candidate = torch.tanh(Wh @ x[t] + r * (Uh @ h) + bh)
        if attention is not None:
            u = attention[t] * u  # AUGRU: u'_t = a_t * u_t
        h = (1 - u) * h + u * candidate
        states.append(h)
    return states


def dien_loop(pool: DienPooling, value: Behaviors, key: Behaviors, lengths: list[int]) -> torch.Tensor:
    """DIEN per row on the real behaviors alone: extractor GRU, softmax attention over h_t W e_a, AUGRU."""
    out = []
    for b, n in enumerate(lengths):
        if n == 0:
            out.append(torch.zeros(pool.evolver.hidden_dim, dtype=torch.float64))
            continue
        states = gru_loop(pool.extractor, value.hist[b, :n])
        query = pool.attention.weight @ key.target[b]  # W e_a
        logits = torch.stack([h @ query for h in states])
        alpha = torch.softmax(logits, dim=0)
        out.append(gru_loop(pool.evolver, torch.stack(states), alpha)[-1])
    return torch.stack(out)


def aux_loop(states: torch.Tensor, behaviors: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """L_aux over the counted (i, t): t, t + 1 real in row i and t + 1 real in row i + 1 (the negative)."""
    B, terms = len(lengths), []
    for i in range(B):
        j = (i + 1) % B
        for t in range(lengths[i] - 1):
            if t + 1 < lengths[j]:
                h = states[i, t]
                terms.append(-(math.log(torch.sigmoid(h @ behaviors[i, t + 1]))
                               + math.log(1 - torch.sigmoid(h @ behaviors[j, t + 1]))))
    return torch.tensor(sum(terms) / max(len(terms), 1), dtype=torch.float64)


def dien(key_dim: int, value_dim: int, seed: int = 0) -> DienPooling:
    torch.manual_seed(seed)
    return DienPooling(key_dim, value_dim).double()


def test_dien_pooling_against_a_per_row_loop_of_the_equations():
    gen = torch.Generator().manual_seed(0)
    for value, key in [views(gen, 6), views(gen, 6, key_dim=4)]:  # coupled, and DARE-style decoupled views
        pool = dien(key.target.shape[1], 6)
        got = pool(value, key, mask_of(LENGTHS))
        torch.testing.assert_close(got, dien_loop(pool, value, key, LENGTHS))
        assert torch.equal(got[1], torch.zeros(6, dtype=torch.float64))  # the empty history
        states = pool.extractor(value.hist, mask_of(LENGTHS))
        for b, n in enumerate(LENGTHS):  # the extractor's states at real steps, and carried over after
            for t, h in enumerate(gru_loop(pool.extractor, value.hist[b, :n])):
                torch.testing.assert_close(states[b, t], h)
            if 0 < n < L:
                torch.testing.assert_close(states[b, n:], states[b, n - 1].expand(L - n, -1))
        torch.testing.assert_close(pool.aux_loss, aux_loop(states.detach(), value.hist, LENGTHS))


def test_dien_is_the_same_left_padded_right_padded_and_unpadded():
    gen = torch.Generator().manual_seed(1)
    value, _ = views(gen, 6)
    pool = dien(6, 6).eval()
    right = pool(value, value, mask_of(LENGTHS))
    left = pool(Behaviors(value.target, left_padded(value.hist, LENGTHS)), value, mask_of(LENGTHS, left=True))
    torch.testing.assert_close(left, right)
    for b, n in enumerate(LENGTHS):  # each row alone, its history cut to its real behaviors
        alone = Behaviors(value.target[b:b + 1], value.hist[b:b + 1, :n])
        torch.testing.assert_close(pool(alone, alone, torch.ones(1, n, dtype=torch.float64))[0], right[b])


def test_augru_with_all_attention_on_one_step():
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    gru = InterestGRU(4, 4).double()
    x, mask = randn(gen, 1, L, 4), torch.ones(1, L, dtype=torch.float64)
    one_hot = torch.zeros(1, L, dtype=torch.float64)
    one_hot[0, 2] = 1.0
    states = gru(x, mask, one_hot)
    assert torch.equal(states[0, :2], torch.zeros(2, 4, dtype=torch.float64))  # u' = 0: the state stays 0
    want = gru_loop(gru, x[0, 2:3])[0]  # one plain GRU step from h = 0 on x_3: u_3 (.) h~_3
    torch.testing.assert_close(states[0, 2], want)
    torch.testing.assert_close(states[0, 3:], want.expand(2, -1))  # and kept after
    torch.testing.assert_close(gru(x, mask, torch.ones(1, L, dtype=torch.float64)), gru(x, mask))  # a = 1: a GRU


def test_aux_loss_is_positive_finite_and_trains_the_extractor():
    gen = torch.Generator().manual_seed(3)
    value, _ = views(gen, 6)
    hist = value.hist.clone().requires_grad_(True)
    pool = dien(6, 6).train()
    lengths = [5, 4, 3, 5, 2]  # pairs at t >= 1 count, so U (which meets h_0 = 0 at t = 0) gets a gradient
    pool(Behaviors(value.target, hist), value, mask_of(lengths))
    aux = pool.aux_loss
    assert aux.dim() == 0 and math.isfinite(float(aux.detach())) and float(aux.detach()) > 0
    aux.backward()
    for p in pool.extractor.parameters():  # the aux loss reaches every extractor weight ...
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert hist.grad[0, :3].abs().sum(dim=-1).min() > 0  # ... and the behaviors' embeddings
    assert all(p.grad is None for p in pool.evolver.parameters())  # the evolving layer is not its business
    pool.eval()
    pool(value, value, mask_of(LENGTHS))
    assert pool.aux_loss is None  # eval forwards leave no loss behind


def test_aux_loss_counts_only_pairs_with_a_real_next_step_and_a_real_negative():
    gen = torch.Generator().manual_seed(8)
    states, behaviors = randn(gen, 2, 3, 4), randn(gen, 2, 3, 4)
    # row 0 (3 real): t = 0 counts (row 1 has step 1), t = 1 does not (row 1's step 2 is padding);
    # row 1 (2 real): t = 0 counts (row 0 has step 1)
    got = auxiliary_loss(states, behaviors, mask_of([3, 2], width=3))
    torch.testing.assert_close(got, aux_loop(states, behaviors, [3, 2]))
    h, e = states, behaviors
    want = -(F.logsigmoid(h[0, 0] @ e[0, 1]) + F.logsigmoid(-(h[0, 0] @ e[1, 1]))
             + F.logsigmoid(h[1, 0] @ e[1, 1]) + F.logsigmoid(-(h[1, 0] @ e[0, 1]))) / 2
    torch.testing.assert_close(got, want)
    assert float(auxiliary_loss(states, behaviors, mask_of([1, 1], width=3))) == 0.0  # no next step
    alone = torch.randn(1, 3, 4, requires_grad=True)
    zero = auxiliary_loss(alone, torch.randn(1, 3, 4), torch.ones(1, 3))  # one row: no other user's negative
    assert float(zero.detach()) == 0.0 and zero.requires_grad


# --- SDIM -------------------------------------------------------------------------------------


def sdim_loop(pool: SdimPooling, value: Behaviors, key: Behaviors, lengths: list[int]) -> torch.Tensor:
    """Per row and per hash function: the real behaviors whose tau-bit SimHash signature equals the
    target's, summed, L2-normalized (0 if none), averaged over the hashes."""
    R = pool.projections.double()
    d_key, m, tau = R.shape

    def signature(x: torch.Tensor, j: int) -> int:
        return sum(2 ** k for k in range(tau) if float(x @ R[:, j, k]) > 0)

    out = []
    for b, n in enumerate(lengths):
        u = torch.zeros(value.hist.shape[-1], dtype=torch.float64)
        for j in range(m):
            s = sum((value.hist[b, i] for i in range(n) if signature(key.hist[b, i], j) == signature(key.target[b], j)),
                    torch.zeros_like(u))
            u += s / s.norm() if s.norm() > 0 else s
        out.append(u / m)
    return torch.stack(out)


def test_sdim_pooling_against_a_per_row_loop():
    gen = torch.Generator().manual_seed(4)
    for value, key in [views(gen, 6), views(gen, 6, key_dim=4)]:
        pool = SdimPooling(key.target.shape[1], hashes=8, bits=2, seed=5).double()
        got = pool(value, key, mask_of(LENGTHS))
        torch.testing.assert_close(got, sdim_loop(pool, value, key, LENGTHS))
        assert torch.equal(got[1], torch.zeros(6, dtype=torch.float64))


def test_sdim_target_always_collides_its_negation_never_and_padding_never_counts():
    gen = torch.Generator().manual_seed(6)
    B, d = 64, 8
    target, noise = randn(gen, B, d), randn(gen, B, d)
    pool = SdimPooling(d, hashes=48, bits=3).double()
    # history: [target, -target, noise (padding)]: only the target counts, in every hash
    hist = torch.stack([target, -target, noise], dim=1)
    view = Behaviors(target, hist)
    got = pool(view, view, torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64).expand(B, 3))
    torch.testing.assert_close(got, F.normalize(target, dim=-1))
    # the negated target alone never collides; the target alone, but only as padding, never counts
    alone = Behaviors(target, torch.stack([-target, target], dim=1))
    assert torch.equal(pool(alone, alone, torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(B, 2)),
                       torch.zeros(B, d, dtype=torch.float64))


def test_sdim_is_the_same_left_padded_right_padded_and_unpadded():
    gen = torch.Generator().manual_seed(7)
    value, key = views(gen, 6, key_dim=4)
    pool = SdimPooling(4, hashes=16, bits=2).double()
    right = pool(value, key, mask_of(LENGTHS))
    left = pool(Behaviors(value.target, left_padded(value.hist, LENGTHS)),
                Behaviors(key.target, left_padded(key.hist, LENGTHS)), mask_of(LENGTHS, left=True))
    torch.testing.assert_close(left, right)
    for b, n in enumerate(LENGTHS):
        v, k = Behaviors(value.target[b:b + 1], value.hist[b:b + 1, :n]), Behaviors(key.target[b:b + 1], key.hist[b:b + 1, :n])
        torch.testing.assert_close(pool(v, k, torch.ones(1, n, dtype=torch.float64))[0], right[b])


def test_sdim_projections_are_fixed_by_seed_untrained_and_saved():
    a, b, c = SdimPooling(8, 4, 3, seed=0), SdimPooling(8, 4, 3, seed=0), SdimPooling(8, 4, 3, seed=1)
    assert a.projections.shape == (8, 4, 3)
    assert torch.equal(a.projections, b.projections) and not torch.equal(a.projections, c.projections)
    assert list(a.parameters()) == [] and list(a.state_dict()) == ["projections"]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    SdimPooling(8, 4, 3, seed=3)
    assert torch.equal(torch.rand(1), before)  # its own generator: the global RNG stream is untouched
    model = small_model("sdim")
    assert "pooling.projections" in model.state_dict()
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.projections, a.projections)


# --- the model and the trainer ------------------------------------------------------------------


def small_model(pooling: str, **extra) -> SequenceRanker:
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=4, item_table_size=50, category_table_size=10, max_len=L, pooling=pooling,
                      sdim_hashes=8, sdim_bits=2, **extra)
    return SequenceRanker(cfg, torch.device("cpu"))


def sparse_batch(lengths: list[int], seed: int = 0) -> KeyedJaggedTensor:
    """A KJT in trainers.ranking.batches' layout (SPARSE_KEYS) with the given history lengths."""
    gen = torch.Generator().manual_seed(seed)
    B, N = len(lengths), sum(lengths)

    def ids(n: int, high: int) -> torch.Tensor:
        return torch.randint(1, high, (n,), generator=gen)

    values = torch.cat([ids(B, 50), ids(B, 10), torch.ones(B, dtype=torch.long),
                        ids(N, 50), ids(N, 10), ids(N, GAP_TABLE_SIZE)])
    lens = torch.tensor([1] * (3 * B) + lengths * 3)
    return KeyedJaggedTensor.from_lengths_sync(keys=list(SPARSE_KEYS), values=values, lengths=lens)


@pytest.mark.parametrize("pooling", ["dien", "sdim"])
def test_models_give_finite_logits_and_gradients_and_empty_rows_stand_alone(pooling):
    model = small_model(pooling).train()
    sparse = sparse_batch(LENGTHS)
    logits = model(sparse)
    assert logits.shape == (len(LENGTHS),) and torch.isfinite(logits).all()
    loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)) + model.extra_loss()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("pooling.")}
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())  # every DIEN weight learns
    assert sorted(grads) == ([] if pooling == "sdim" else sorted(n for n, _ in model.pooling.named_parameters(
        prefix="pooling")))
    model.eval()
    with torch.no_grad():
        alone = model(sparse_batch([0]))
        assert torch.isfinite(alone).all()


def test_extra_loss_is_alpha_times_the_aux_loss_and_zero_elsewhere():
    sparse = sparse_batch(LENGTHS)
    for alpha in (0.0, 1.0, 2.5):
        model = small_model("dien", aux_loss_weight=alpha).train()
        model(sparse)
        torch.testing.assert_close(model.extra_loss(), alpha * model.pooling.aux_loss)
        model.eval()
        model(sparse)
        assert model.extra_loss() == 0.0
    for pooling in ("mean", "din", "sdim"):
        model = small_model(pooling).train()
        model(sparse)
        assert model.extra_loss() == 0.0


def test_configs_name_and_check_the_new_models():
    assert {"dien", "sdim"} <= set(POOLINGS) and {"dien", "sdim"} <= set(RANKERS)
    cfg = TrainConfig(model="sdim", sdim_hashes=16, sdim_bits=4, aux_loss_weight=0.5).model_config()
    assert (cfg.pooling, cfg.sdim_hashes, cfg.sdim_bits, cfg.aux_loss_weight) == ("sdim", 16, 4, 0.5)
    defaults = TrainConfig()
    assert (defaults.sdim_hashes, defaults.sdim_bits, defaults.aux_loss_weight) == (48, 3, 1.0)
    with pytest.raises(ValueError, match="aux_loss_weight must be a finite number >= 0"):
        TrainConfig(model="dien", aux_loss_weight=-1.0)
    with pytest.raises(ValueError, match="aux_loss_weight must be a finite number >= 0"):
        TrainConfig(model="dien", aux_loss_weight=float("nan"))
    with pytest.raises(ValueError, match="sdim_bits must be >= 1"):
        TrainConfig(model="sdim", sdim_bits=0)
    with pytest.raises(ValueError, match="sdim_bits must be <= 32"):
        TrainConfig(model="sdim", sdim_bits=40)
    with pytest.raises(ValueError, match="sdim_hashes must be >= 1"):
        ModelConfig(4, 10, 10, 5, pooling="sdim", sdim_hashes=0)
    assert isinstance(make_pooling("sdim", 4, (8,), sdim_hashes=2, sdim_bits=1), SdimPooling)


@pytest.fixture(scope="module")
def planted():
    return planted_recency(users=120, history=12, seed=0)


@pytest.mark.training
@pytest.mark.parametrize("pooling", ["dien", "sdim"])
def test_dien_and_sdim_train_and_their_weights_reload_for_predict(planted, pooling):
    cfg = TrainConfig(steps=6, batch_size=32, threads=1, seed=0, item_table_size=planted.items + 1,
                      category_table_size=planted.categories + 1, max_len=12, sparse_lr=0.05, progress_every=6,
                      model=pooling, sdim_hashes=8, sdim_bits=2)
    result = train(planted.train, planted.eval, planted.log, cfg)
    assert len(result.losses) == 6 and all(math.isfinite(x) and x > 0 for x in result.losses)
    scores = predict(result.state_dict, cfg, planted.eval, planted.log)
    assert np.isfinite(scores).all()
    assert abs(auc(planted.eval.column("label").to_numpy(), scores) - result.eval_metrics["auc"]) < 1e-6
    if pooling == "sdim":
        torch.testing.assert_close(result.state_dict["pooling.projections"],
                                   SdimPooling(2 * cfg.embedding_dim, 8, 2).projections)


@pytest.mark.training
def test_the_trainer_adds_the_aux_loss(planted):
    """Same seed, same first batch: the first recorded loss grows by alpha * L_aux with alpha."""
    base = dict(steps=1, batch_size=32, threads=1, seed=0, item_table_size=planted.items + 1,
                category_table_size=planted.categories + 1, max_len=12, model="dien")
    first = {a: train(planted.train, planted.eval, planted.log, TrainConfig(**base, aux_loss_weight=a)).losses[0]
             for a in (0.0, 2.0)}
    assert first[2.0] > first[0.0] + 0.1  # L_aux of ~ 2 log 2 at init, doubled
