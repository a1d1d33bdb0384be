"""Multi-interest retrieval: user towers over the behavior history, and the item table.

An item's vector is e = E_item[item] + E_category[category] (both TorchRec EmbeddingCollection
tables; the category is MIND's item side information, sum-pooled). A user tower maps the
history H = [e_1 .. e_L] (L <= max_len, padding masked) to K interest vectors V [K, d]:

- ``single`` (K = 1): a YouTube-DNN-style baseline (Covington et al. 2016, "Deep Neural Networks
  for YouTube Recommendations"): the mean of the history through a ReLU MLP.
- ``comirec-sa``: ComiRec-SA (Cen et al. 2020, "Controllable Multi-Interest Framework for
  Recommendation", KDD; the self-attentive method): A = softmax(W2 tanh(W1 (H + P)^T)) over the
  real positions (P: trainable position embeddings, counted back from the newest behavior, as in
  the authors' code; W1, W2 without bias, as in the paper's equation), and V = A H.
- ``mind``: MIND's behavior-to-interest (B2I) dynamic routing (Li et al. 2019, "Multi-Interest
  Network with Dynamic Routing for Recommendation at Tmall", CIKM; its routing algorithm): one
  bilinear map S shared by every (behavior, interest) pair, routing logits b drawn from N(0, 1)
  (fixed at construction, so serving is deterministic), then ``routing_iterations`` of
      w_ij = softmax_j(b_ij);  z_j = sum_i w_ij S e_i;  u_j = squash(z_j);  b_ij += u_j . S e_i
  with squash(z) = |z|^2 / (1 + |z|^2) z / |z|. This is the MIND variant, with a fixed K: MIND's
  adaptive K and its post-routing ReLU layers over user-profile features are left out (there are
  no profile features here), and ComiRec-DR's per-(position, interest) maps are not used.

Training reads one user vector per row by label-aware attention (MIND, label-aware attention layer):
v = V^T softmax(pow(V e_t, p)); p = inf is the hard argmax ComiRec trains with.
An empty history gives zero interest vectors (finite; every item then scores 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

MODELS = ("single", "comirec-sa", "mind")
SQUASH_EPS = 1e-9


@dataclass(frozen=True)
class RetrieverConfig:
    """The model's shape (trainers.retrieval.train.RetrievalConfig validates and builds it)."""

    model: str
    embedding_dim: int
    item_table_size: int
    category_table_size: int
    max_len: int
    interests: int = 4
    attention_hidden: int = 64  # d_a, the width of W1 in ComiRec-SA
    routing_iterations: int = 3
    mlp_hidden: int = 64  # the single-vector tower's hidden layer
    init_scale: float = 0.1  # tables start uniform in [-init_scale, init_scale]

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"RetrieverConfig.model must be one of {MODELS}, got {self.model!r}")
        if min(self.embedding_dim, self.max_len, self.interests, self.attention_hidden, self.routing_iterations,
               self.mlp_hidden) < 1:
            raise ValueError(f"RetrieverConfig sizes must be >= 1: {self}")

    @property
    def num_interests(self) -> int:
        return 1 if self.model == "single" else self.interests


class RetrieverOutput(NamedTuple):
    interests: torch.Tensor  # [B, K, d]
    targets: torch.Tensor  # [number of target values, d]: B in training, 0 when serving
    negatives: torch.Tensor  # [S, d]


class MeanPoolTower(nn.Module):
    """``single``: u = MLP(mean of the real behaviors); one interest."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hist [B, L, d], mask [B, L] (1 = real) -> [B, 1, d]."""
        mean = (hist * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.mlp(mean).unsqueeze(1)


class SelfAttentiveTower(nn.Module):
    """ComiRec-SA: A = softmax over positions of W2 tanh(W1 (h + p)), V = A H (Cen et al. 2020)."""

    def __init__(self, dim: int, hidden: int, interests: int, max_len: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, interests, bias=False)
        self.positions = nn.Parameter(torch.empty(max_len, dim).uniform_(-0.05, 0.05))

    def attention(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, K] weights; each interest's column sums to 1 over the real positions (0 if none)."""
        lengths = mask.sum(1, keepdim=True).long()  # [B, 1]
        back = (lengths - 1 - torch.arange(hist.shape[1], device=hist.device).unsqueeze(0)).clamp(min=0)
        logits = self.w2(torch.tanh(self.w1(hist + self.positions[back])))  # [B, L, K]
        real = mask.unsqueeze(-1) > 0
        weights = torch.softmax(logits.masked_fill(~real, torch.finfo(logits.dtype).min), dim=1)
        return weights * real  # an empty history: uniform weights over padding, zeroed here

    def forward(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("blk,bld->bkd", self.attention(hist, mask), hist)


def squash(z: torch.Tensor) -> torch.Tensor:
    """|z|^2 / (1 + |z|^2) * z / |z| over the last axis (MIND's squash); squash(0) = 0."""
    n2 = (z * z).sum(-1, keepdim=True)
    return z * (n2 / (1.0 + n2)) / torch.sqrt(n2 + SQUASH_EPS)


class RoutingTower(nn.Module):
    """MIND B2I dynamic routing with a shared bilinear map S and fixed Gaussian initial logits."""

    def __init__(self, dim: int, interests: int, max_len: int, iterations: int):
        super().__init__()
        self.iterations = iterations
        self.bilinear = nn.Linear(dim, dim, bias=False)  # S
        # Persistent (in the state_dict) so a reloaded model routes exactly as the trained one.
        self.register_buffer("initial_logits", torch.randn(interests, max_len))

    def forward(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hist [B, L, d], mask [B, L] -> interest capsules [B, K, d]."""
        mapped = self.bilinear(hist)  # S e_i, [B, L, d]
        logits = self.initial_logits[:, : hist.shape[1]].unsqueeze(0).expand(hist.shape[0], -1, -1)
        real = mask.unsqueeze(1)  # [B, 1, L]
        for step in range(self.iterations):
            weights = torch.softmax(logits, dim=1) * real  # over interests, per behavior
            capsules = squash(torch.einsum("bkl,bld->bkd", weights, mapped))
            if step + 1 < self.iterations:
                logits = logits + torch.einsum("bkd,bld->bkl", capsules, mapped)
        return capsules


def label_aware(interests: torch.Tensor, target: torch.Tensor, power: float) -> torch.Tensor:
    """v = V^T softmax(pow(V e_t, p)) per row (MIND); p = inf takes the argmax interest (ComiRec).

    interests [B, K, d], target [B, d] -> [B, d]. pow keeps the sign (sign(s) |s|^p), so it is
    defined and increasing for negative scores too; it equals pow(s, p) for s >= 0."""
    scores = torch.einsum("bkd,bd->bk", interests, target)
    if math.isinf(power):
        best = scores.argmax(dim=1)
        return interests[torch.arange(len(best), device=best.device), best]
    weights = torch.softmax(torch.sign(scores) * scores.abs().pow(power), dim=1)
    return torch.einsum("bk,bkd->bd", weights, interests)


class Retriever(nn.Module):
    """RetrievalBatch.sparse -> RetrieverOutput. Build on device "meta" for DMP, "cpu" unsharded.

    Args:
        cfg: the model (single | comirec-sa | mind), K interests, widths and table sizes.
        sparse_device: where the item and category tables are built.

    Call:
        sparse: KeyedJaggedTensor with hist_item / hist_category (jagged, at most cfg.max_len),
            target_item / target_category (one per row, or none when serving) and optional
            neg_item / neg_category (sampled negatives).

    Returns:
        RetrieverOutput: interests [B, K, d], targets [B, d] ([0, d] when serving), negatives [S, d].

    Example:
        >>> model = Retriever(RetrieverConfig("comirec-sa", embedding_dim=16, item_table_size=1000,
        ...                                   category_table_size=50, max_len=20, interests=4))
        >>> model(history_batch.sparse).interests.shape  # doctest: +SKIP
        torch.Size([128, 4, 16])
    """

    def __init__(self, cfg: RetrieverConfig, sparse_device: torch.device | None = None):
        super().__init__()
        self.max_len = cfg.max_len
        tables = {"item": (cfg.item_table_size, ["hist_item", "target_item", "neg_item"]),
                  "category": (cfg.category_table_size, ["hist_category", "target_category", "neg_category"])}
        self.ec = EmbeddingCollection(
            tables=[EmbeddingConfig(name=name, embedding_dim=cfg.embedding_dim, num_embeddings=rows,
                                    feature_names=features, weight_init_min=-cfg.init_scale,
                                    weight_init_max=cfg.init_scale)
                    for name, (rows, features) in tables.items()],
            device=sparse_device)
        d, k = cfg.embedding_dim, cfg.num_interests
        if cfg.model == "single":
            self.tower: nn.Module = MeanPoolTower(d, cfg.mlp_hidden)
        elif cfg.model == "comirec-sa":
            self.tower = SelfAttentiveTower(d, cfg.attention_hidden, k, cfg.max_len)
        else:
            self.tower = RoutingTower(d, k, cfg.max_len, cfg.routing_iterations)

    def forward(self, sparse: KeyedJaggedTensor) -> RetrieverOutput:
        emb = self.ec(sparse)
        lengths = emb["hist_item"].lengths()
        if lengths.numel() and int(lengths.max()) > self.max_len:
            raise ValueError(f"a history of {int(lengths.max())} behaviors exceeds max_len={self.max_len}; "
                             "build batches with the model's max_len")
        hist_values = emb["hist_item"].values() + emb["hist_category"].values()
        hist = torch.ops.fbgemm.jagged_to_padded_dense(hist_values, [emb["hist_item"].offsets()], [self.max_len], 0.0)
        mask = (torch.arange(self.max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)).to(hist.dtype)
        return RetrieverOutput(self.tower(hist, mask),
                               emb["target_item"].values() + emb["target_category"].values(),
                               emb["neg_item"].values() + emb["neg_category"].values())
