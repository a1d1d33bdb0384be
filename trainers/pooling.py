"""Sequence pooling: a target and its (padded) history -> one user-interest vector per row.

Each pooling reads two views of the batch (``Behaviors``): ``value``, the representation
embeddings that get pooled, and ``key``, the embeddings the attention scores are computed from.
They are the same object unless the model uses DARE's decoupled attention embeddings
(trainers/search.py). ``mask`` [B, L] is 1 at real behaviors, 0 at padding; an empty history
pools to the zero vector (never NaN).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

POOLINGS = ("mean", "din", "tin")


@dataclass(frozen=True)
class Behaviors:
    """One embedding space's view: the target [B, d] and history [B, L, d], and their temporal
    encodings (embeddings of the time-gap bucket to the target; the target's own gap is 0)."""

    target: torch.Tensor
    hist: torch.Tensor
    target_time: torch.Tensor
    hist_time: torch.Tensor


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


class MeanPooling(nn.Module):
    """Mean of the history, the Embedding&MLP base model's pooling (Zhou et al. 2018, "Deep Interest
    Network for Click-Through Rate Prediction", KDD, Sec. 4.2): u = (1/n) sum_{i<=n} e_i over the n real
    behaviors. Blind to the target and to time."""

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        count = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.einsum("bl,bld->bd", mask, value.hist) / count


class DinPooling(nn.Module):
    """DIN target attention (Zhou et al. 2018, KDD, Eq. 3): v_U(A) = sum_j a(e_j, v_A) e_j, where the
    activation unit a() is an MLP over [e_j, v_A, e_j * v_A, e_j - v_A] (here plus the behavior's
    time-gap encoding p_j) and the weights are NOT normalized by a softmax (Sec. 4.3), so the
    pooled vector keeps the strength of the user's interest."""

    def __init__(self, key_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.score = mlp([5 * key_dim, *hidden, 1])

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        h, t = key.hist, key.target.unsqueeze(1).expand_as(key.hist)
        weights = self.score(torch.cat([h, t, h * t, h - t, key.hist_time], dim=-1)).squeeze(-1) * mask
        return torch.einsum("bl,bld->bd", weights, value.hist)


class TinPooling(nn.Module):
    """Temporal Interest Network's temporal interest module (Zhou et al. 2024, "Temporal Interest
    Network for User Response Prediction", WWW, Sec. 4), with no parameters of its own:

    - target-aware temporal encoding (TTE): e~_i = e_i + p_i, p_i the embedding of behavior i's
      time-gap bucket relative to the target; v~_t = v_t + p_t, p_t the encoding of gap 0;
    - target-aware attention (TA): alpha_i = exp(e~_i . v~_t / sqrt(d)) / sum_j exp(e~_j . v~_t / sqrt(d)),
      the softmax over the real behaviors;
    - target-aware representation (TR): u = sum_i alpha_i (e~_i (.) v~_t), (.) element-wise.

    Expanding (e_i + p_i) . (v_t + p_t) and (e_i + p_i) (.) (v_t + p_t) gives the 4-way
    semantic-temporal interaction. With DARE's decoupled embeddings the logits come from the
    ``key`` (attention) view and the representation from the ``value`` view."""

    def forward(self, value: Behaviors, key: Behaviors, mask: torch.Tensor) -> torch.Tensor:
        k = key.hist + key.hist_time
        q = key.target + key.target_time
        logits = torch.einsum("bld,bd->bl", k, q) / math.sqrt(k.shape[-1])
        alpha = masked_softmax(logits, mask)
        e = value.hist + value.hist_time
        v = value.target + value.target_time
        return torch.einsum("bl,bld->bd", alpha, e) * v  # = sum_i alpha_i (e~_i (.) v~_t)


def make_pooling(name: str, key_dim: int, hidden: tuple[int, ...]) -> nn.Module:
    """The pooling called ``name`` (one of POOLINGS) for keys of width ``key_dim``."""
    if name == "mean":
        return MeanPooling()
    if name == "din":
        return DinPooling(key_dim, hidden)
    if name == "tin":
        return TinPooling()
    raise ValueError(f"unknown pooling {name!r}; choose one of {POOLINGS}")
