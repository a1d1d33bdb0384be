"""A small sequence ranker: embeddings -> target attention over the history -> MLP -> logit.

The history is pooled with target attention as in DIN (Zhou et al. 2018, "Deep
Interest Network for Click-Through Rate Prediction", KDD): a small MLP scores
each behavior from [h, t, h*t, h-t] (here plus the behavior's time-gap
embedding) and the pooled vector is the weighted sum of the behaviors, without
softmax normalization. Padding positions get weight 0, so an empty history
pools to the zero vector (no NaN).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from trainers.batches import GAP_TABLE_SIZE
from trainers.item_vectors import general_search_unit, select


@dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int
    item_table_size: int
    category_table_size: int
    max_len: int
    attention_hidden: tuple[int, ...] = (64, 32)
    over_hidden: tuple[int, ...] = (128, 64)
    init_scale: float = 0.2  # tables start uniform in [-init_scale, init_scale]
    item_vector_dim: int = 0  # > 0: frozen multimodal item vectors feed a side feature (and the search)
    search_k: int = 0  # > 0: attend over the k behaviors nearest the target by item-vector cosine (MUSE GSU)

    def __post_init__(self) -> None:
        if self.item_vector_dim < 0 or self.search_k < 0:
            raise ValueError(f"ModelConfig.item_vector_dim and search_k must be >= 0: {self}")
        if self.search_k and not self.item_vector_dim:
            raise ValueError("ModelConfig.search_k needs item vectors (item_vector_dim > 0) to search by")
        if min(self.embedding_dim, self.max_len, *self.attention_hidden, *self.over_hidden) < 1:
            raise ValueError(f"ModelConfig sizes must be >= 1: {self}")
        if min(self.item_table_size, self.category_table_size) < 2:
            raise ValueError(f"ModelConfig table sizes must be >= 2 (row 0 is padding): {self}")
        if not self.init_scale > 0:
            raise ValueError(f"ModelConfig.init_scale must be > 0, got {self.init_scale}")


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class SparseArch(nn.Module):
    """Tables "item" (target_item, hist_item), "category" (target_category, hist_category), "gap" (hist_gap)."""

    def __init__(self, cfg: ModelConfig, device: torch.device | None = None):
        super().__init__()
        tables = {"item": (cfg.item_table_size, ["target_item", "hist_item"]),
                  "category": (cfg.category_table_size, ["target_category", "hist_category"]),
                  "gap": (GAP_TABLE_SIZE, ["hist_gap"])}
        self.ec = EmbeddingCollection(
            tables=[EmbeddingConfig(name=name, embedding_dim=cfg.embedding_dim, num_embeddings=rows,
                                    feature_names=features, weight_init_min=-cfg.init_scale,
                                    weight_init_max=cfg.init_scale)
                    for name, (rows, features) in tables.items()],
            device=device,
        )

    def forward(self, sparse: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        return self.ec(sparse)


class SequenceArch(nn.Module):
    """DIN target attention: weight each behavior by an MLP, sum the weighted behaviors."""

    def __init__(self, dim: int, gap_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.score = mlp([4 * dim + gap_dim, *hidden, 1])

    def forward(self, target: torch.Tensor, hist: torch.Tensor, gap: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """target [B, d], hist [B, L, d], gap [B, L, g], mask [B, L] (1 = real) -> pooled [B, d]."""
        t = target.unsqueeze(1).expand_as(hist)
        weights = self.score(torch.cat([hist, t, hist * t, hist - t, gap], dim=-1)).squeeze(-1)
        weights = weights * mask
        return torch.einsum("bl,bld->bd", weights, hist)


class OverArch(nn.Module):
    """MLP over [target, pooled, target*pooled, side features] -> one logit per row."""

    def __init__(self, dim: int, hidden: tuple[int, ...], side_dim: int = 0):
        super().__init__()
        self.net = mlp([3 * dim + side_dim, *hidden, 1])

    def forward(self, target: torch.Tensor, pooled: torch.Tensor, side: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat([target, pooled, target * pooled, *side], dim=-1)).squeeze(-1)


class SequenceRanker(nn.Module):
    """Batch.sparse (+ Batch.vector_rows) -> click logits. Build on device "meta" for DMP, "cpu" unsharded.

    With item vectors (MUSE, Wu et al. 2024, "MUSE: A Multi-modal Target Attention Model
    for CTR Prediction"), the frozen vectors enter twice: a general search unit keeps the
    search_k behaviors whose vectors are nearest the target's (cosine), so the DIN
    attention runs over those; and the target's vector, projected to the embedding size,
    is a side input of the over-arch. The vectors are a non-persistent buffer: they are
    not trained and not in the state_dict; trainers.item_vectors holds models to their version.
    """

    def __init__(self, cfg: ModelConfig, sparse_device: torch.device | None = None,
                 item_vectors: torch.Tensor | None = None):
        super().__init__()
        self.max_len, self.search_k = cfg.max_len, cfg.search_k
        d = cfg.embedding_dim
        self.sparse_arch = SparseArch(cfg, sparse_device)
        self.sequence_arch = SequenceArch(2 * d, d, cfg.attention_hidden)
        self.vector_arch = None
        if cfg.item_vector_dim:
            if item_vectors is None or item_vectors.dim() != 2 or item_vectors.shape[1] != cfg.item_vector_dim:
                shape = None if item_vectors is None else tuple(item_vectors.shape)
                raise ValueError(f"the model expects item vectors of shape [n, {cfg.item_vector_dim}], got {shape}")
            self.register_buffer("item_vectors", item_vectors.detach().float(), persistent=False)
            self.vector_arch = nn.Linear(cfg.item_vector_dim, d)
        self.over_arch = OverArch(2 * d, cfg.over_hidden, d if cfg.item_vector_dim else 0)

    def forward(self, sparse: KeyedJaggedTensor, vector_rows: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.sparse_arch(sparse)
        # target_* have exactly one value per row, so their values are [B, d] in row order.
        target = torch.cat([emb["target_item"].values(), emb["target_category"].values()], dim=-1)
        offsets = emb["hist_item"].offsets()
        hist = self._padded(torch.cat([emb["hist_item"].values(), emb["hist_category"].values()], dim=-1), offsets)
        gap = self._padded(emb["hist_gap"].values(), offsets)
        lengths = emb["hist_item"].lengths()
        mask = (torch.arange(self.max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)).to(hist.dtype)
        side = []
        if self.vector_arch is not None:
            if vector_rows is None:
                raise ValueError("this model reads item vectors: build batches with vectors=ItemVectors")
            n = target.shape[0]
            target_vec = self.item_vectors[vector_rows[:n]]
            if self.search_k:
                hist_vec = self._padded(self.item_vectors[vector_rows[n:]], offsets)
                idx, _, picked = general_search_unit(hist_vec, target_vec, mask, self.search_k)
                hist, gap, mask = select(hist, idx), select(gap, idx), picked.to(hist.dtype)
            side.append(self.vector_arch(target_vec))
        pooled = self.sequence_arch(target, hist, gap, mask)
        return self.over_arch(target, pooled, side)

    def _padded(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return torch.ops.fbgemm.jagged_to_padded_dense(values, [offsets], [self.max_len], 0.0)
