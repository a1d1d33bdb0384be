"""Sequence pooling: a target and its (padded) history -> one user-interest vector per row.

Each pooling reads two views of the batch (``Behaviors``): ``value``, the representation
embeddings that get pooled, and ``key``, the embeddings the attention scores are computed from.
They are the same object unless the model uses DARE's decoupled attention embeddings
(trainers/ranking/search.py). ``mask`` [B, L] is 1 at real behaviors, 0 at padding; an empty history
pools to the zero vector (never NaN).

Only TIN reads time (``Pooling.uses_time``): mean pooling and DIN, as in their paper, see the
behaviors' embeddings alone, so the temporal encoding is what tells TIN apart from DIN. Each
pooling also says which target vector the over-arch sees (``Pooling.over_target``), and may hold a
loss of its own from its last training forward (``Pooling.aux_loss``: DIEN's auxiliary loss).
DIEN (trainers/ranking/dien.py) and SDIM (trainers/ranking/sdim.py) live in their own files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

POOLINGS = ("mean", "din", "tin", "dien", "sdim")
TIME_POOLINGS = ("tin",)  # the poolings that read the behaviors' time-gap encodings


@dataclass(frozen=True)
class Behaviors:
    """One embedding space's view: the target [B, d] and history [B, L, d], and their temporal
    encodings (embeddings of the time-gap bucket to the target; the target's own gap is 0),
    None for a model whose pooling does not read time."""

    target: torch.Tensor
    hist: torch.Tensor
    target_time: torch.Tensor | None = None
    hist_time: torch.Tensor | None = None


class Pooling(nn.Module):
    """(value, key, mask) -> the pooled user-interest vector [B, d]."""

    uses_time = False  # True: reads Behaviors.target_time / hist_time (the model then looks the gaps up)
    aux_loss: torch.Tensor | None = None  # a loss of the pooling's own from its last training forward

    def over_target(self, value: Behaviors) -> torch.Tensor:
        """The target vector the over-arch reads beside the pooled vector: the target embedding."""
        return value.target


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the real positions of each row; padding gets 0, and a row with no real
    position gets all zeros."""
    filled = logits.masked_fill(mask <= 0, torch.finfo(logits.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


class MeanPooling(Pooling):
    """Mean of the history, the Embedding&MLP base model's pooling (Zhou et al. 2018, "Deep Interest
    Network for Click-Through Rate Prediction", KDD, Sec. 4.2): u = (1/n) sum_{i<=n} e_i over the n real
    behaviors. Blind to the target and to time."""

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        count = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.einsum("bl,bld->bd", mask, value.hist) / count


class DinPooling(Pooling):
    """DIN target attention (Zhou et al. 2018, "Deep Interest Network for Click-Through Rate
    Prediction", KDD, Sec. 4.3, Eq. 3): v_U(A) = sum_j a(e_j, v_A) e_j, where the activation unit
    a() is an MLP over [e_j, v_A, e_j (.) v_A, e_j - v_A] (Fig. 2: the out product is taken as the
    element-wise product and the difference, as in the authors' code) and the weights are NOT
    normalized by a softmax, so the pooled vector keeps the strength of the user's interest. DIN
    reads no time: a behavior's weight depends on its embedding and the target's only. (The paper's
    activation unit uses PReLU/Dice; this MLP uses ReLU.)"""

    def __init__(self, key_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.score = mlp([4 * key_dim, *hidden, 1])

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        h, t = key.hist, key.target.unsqueeze(1).expand_as(key.hist)
        weights = self.score(torch.cat([h, t, h * t, h - t], dim=-1)).squeeze(-1) * mask
        return torch.einsum("bl,bld->bd", weights, value.hist)


class TinPooling(Pooling):
    """Temporal Interest Network's temporal interest module (Zhou et al. 2024, "Temporal Interest
    Network for User Response Prediction", WWW Companion, Sec. 4; the TTE / TA / TR equations),
    with no parameters of its own:

    - target-aware temporal encoding (TTE): e~_i = e_i + p_{f(X_i, X_t)}, p the embedding of behavior
      i's time-gap bucket relative to the target; the target's own encoding v~_t = v_t + p_t, p_t the
      encoding of gap 0 (as the authors' code adds the target's position embedding);
    - target-aware attention (TA): alpha_i = softmax_i(e~_i^T v~_t / sqrt(d)) over the real behaviors;
    - target-aware representation (TR): u_TIN = sum_i alpha_i (e~_i (.) v~_t), (.) element-wise.

    Expanding (e_i + p_i)^T (v_t + p_t) and (e_i + p_i) (.) (v_t + p_t) gives the 4-way
    semantic-temporal interaction: behavior-target, behavior-target time, behavior time-target and
    time-time terms. The prediction (Sec. 4, the over-arch) reads u_TIN with the temporally encoded
    target v~_t (``over_target``): [v~_t, u_TIN, v~_t (.) u_TIN]. (The authors' public code,
    github.com/zhouxy1003/TIN, pools sum_i alpha_i e~_i and forms the product with v~_t in the
    over-arch input; this follows the paper's TR equation.) With DARE's decoupled embeddings
    the logits come from the ``key`` (attention) view and the representation from the ``value`` view."""

    uses_time = True

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        k = key.hist + key.hist_time
        q = key.target + key.target_time
        logits = torch.einsum("bld,bd->bl", k, q) / math.sqrt(k.shape[-1])
        alpha = masked_softmax(logits, mask)
        e = value.hist + value.hist_time
        return torch.einsum("bl,bld->bd", alpha, e) * self.over_target(value)  # = sum_i alpha_i (e~_i (.) v~_t)

    def over_target(self, value: Behaviors) -> torch.Tensor:
        """v~_t = v_t + p_t, the temporally encoded target."""
        return value.target + value.target_time


def make_pooling(name: str, key_dim: int, hidden: tuple[int, ...], *, value_dim: int | None = None,
                 sdim_hashes: int = 48, sdim_bits: int = 3) -> Pooling:
    """The pooling called ``name`` (one of POOLINGS) for keys of width ``key_dim`` and values of
    width ``value_dim`` (default: ``key_dim``). ``hidden``: DIN's attention MLP; ``sdim_hashes``
    and ``sdim_bits``: SDIM's m hash functions of tau bits."""
    if name == "dien":
        from trainers.ranking.dien import DienPooling  # imports this module

        return DienPooling(key_dim, key_dim if value_dim is None else value_dim)
    if name == "sdim":
        from trainers.ranking.sdim import SdimPooling

        return SdimPooling(key_dim, sdim_hashes, sdim_bits)
    if name == "mean":
        return MeanPooling()
    if name == "din":
        return DinPooling(key_dim, hidden)
    if name == "tin":
        return TinPooling()
    raise ValueError(f"unknown pooling {name!r}; choose one of {POOLINGS}")
