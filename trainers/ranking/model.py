"""The sequence ranker family: TorchRec tables -> [search unit] -> sequence pooling -> MLP -> logit.

Chosen by ``ModelConfig``: ``pooling`` is one of mean / din / tin / dien / sdim (trainers/ranking/pooling.py,
dien.py, sdim.py) and
``search`` one of none / category / cosine / dare (trainers/ranking/search.py). With a search unit the
history is cut to its ``search_k`` best behaviors before the representation tables are looked
up, so a history of 10^3-10^4 behaviors costs k lookups per row, plus whatever the unit scores
on (category IDs, frozen item vectors, or DARE's small attention tables).

A behavior is embedded as [item ; category] (2d wide). A pooling that reads time (TIN) adds a
temporal encoding of the same width: the embedding of the behavior's time-gap bucket to the
target (``hist_gap``); the target's own encoding is that of gap 0 (``target_gap``). Mean pooling,
DIN, DIEN and SDIM read no time, so their models have no gap table at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from trainers.ranking.batches import GAP_TABLE_SIZE
from trainers.ranking.pooling import POOLINGS, TIME_POOLINGS, Behaviors, make_pooling, mlp
from trainers.ranking.search import (SEARCHES, category_scores, cosine_scores, dare_scores, keep_behaviors, kept_values,
                             padded_scores, top_k_positions)


@dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int
    item_table_size: int
    category_table_size: int
    max_len: int
    attention_hidden: tuple[int, ...] = (64, 32)
    over_hidden: tuple[int, ...] = (128, 64)
    init_scale: float = 0.2  # tables start uniform in [-init_scale, init_scale]
    item_vector_dim: int = 0  # > 0: frozen multimodal item vectors feed a side feature (and the cosine search)
    pooling: str = "din"  # one of POOLINGS
    search: str = "none"  # one of SEARCHES
    search_k: int = 0  # behaviors the search unit keeps: >= 1 with a search unit, 0 without
    attention_dim: int = 8  # width of DARE's attention tables (search = "dare")
    aux_loss_weight: float = 1.0  # alpha in L = L_target + alpha * L_aux (a pooling's own loss: DIEN's auxiliary loss)
    sdim_hashes: int = 48  # SDIM's m hash functions (pooling = "sdim")
    sdim_bits: int = 3  # SDIM's tau bits per hash signature (pooling = "sdim")

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"ModelConfig.pooling {self.pooling!r} is not one of {POOLINGS}")
        if self.search not in SEARCHES:
            raise ValueError(f"ModelConfig.search {self.search!r} is not one of {SEARCHES}")
        if self.item_vector_dim < 0 or self.search_k < 0:
            raise ValueError(f"ModelConfig.item_vector_dim and search_k must be >= 0: {self}")
        if self.search == "none" and self.search_k:
            raise ValueError(f"ModelConfig.search_k={self.search_k} needs a search unit: set search to one of "
                             f"{SEARCHES[1:]}")
        if self.search != "none" and self.search_k < 1:
            raise ValueError(f"ModelConfig.search={self.search!r} needs search_k >= 1 (behaviors to keep)")
        if self.search == "cosine" and not self.item_vector_dim:
            raise ValueError("ModelConfig.search='cosine' needs item vectors (item_vector_dim > 0) to search by")
        if min(self.embedding_dim, self.max_len, self.attention_dim, *self.attention_hidden, *self.over_hidden) < 1:
            raise ValueError(f"ModelConfig sizes must be >= 1: {self}")
        if min(self.item_table_size, self.category_table_size) < 2:
            raise ValueError(f"ModelConfig table sizes must be >= 2 (row 0 is padding): {self}")
        if not self.init_scale > 0:
            raise ValueError(f"ModelConfig.init_scale must be > 0, got {self.init_scale}")
        if not 0 <= self.aux_loss_weight < float("inf"):
            raise ValueError(f"ModelConfig.aux_loss_weight must be a finite number >= 0, got {self.aux_loss_weight}")
        if self.sdim_hashes < 1 or not 1 <= self.sdim_bits <= 32:
            raise ValueError(f"ModelConfig.sdim_hashes must be >= 1 and sdim_bits in 1..32, got "
                             f"{self.sdim_hashes} and {self.sdim_bits}")


def collection(tables: dict[str, tuple[int, list[str]]], dim: int, scale: float,
               device: torch.device | None) -> EmbeddingCollection:
    """One EmbeddingCollection of ``dim``-wide tables {name: (rows, feature names)}."""
    return EmbeddingCollection(
        tables=[EmbeddingConfig(name=name, embedding_dim=dim, num_embeddings=rows, feature_names=features,
                                weight_init_min=-scale, weight_init_max=scale)
                for name, (rows, features) in tables.items()],
        device=device)


class SparseArch(nn.Module):
    """The TorchRec tables, one EmbeddingCollection per width (a collection holds one width):

    - ``ec`` (d): "item" (target_item, hist_item), "category" (target_category, hist_category);
    - ``temporal`` (2d), only when the pooling reads time (TIN): "gap" (target_gap, hist_gap), the
      temporal encodings of [item ; category];
    - with search = "dare", ``attention`` (a): "item_att", "category_att" and ``attention_temporal``
      (2a): "gap_att" on the same features: DARE's attention embeddings, used only for the search
      and the attention logits."""

    def __init__(self, cfg: ModelConfig, device: torch.device | None = None):
        super().__init__()
        d, a, s = cfg.embedding_dim, cfg.attention_dim, cfg.init_scale
        items, categories = (cfg.item_table_size, ["target_item", "hist_item"]), \
            (cfg.category_table_size, ["target_category", "hist_category"])
        gaps = (GAP_TABLE_SIZE, ["target_gap", "hist_gap"])
        self.ec = collection({"item": items, "category": categories}, d, s, device)
        self.temporal = collection({"gap": gaps}, 2 * d, s, device) if cfg.pooling in TIME_POOLINGS else None
        self.attention = self.attention_temporal = None
        if cfg.search == "dare":
            self.attention = collection({"item_att": items, "category_att": categories}, a, s, device)
            self.attention_temporal = collection({"gap_att": gaps}, 2 * a, s, device)

    def forward(self, sparse: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        """The representation embeddings of every feature the model reads, by feature name."""
        return {**self.ec(sparse), **({} if self.temporal is None else self.temporal(sparse))}

    def attention_lookup(self, sparse: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        """DARE's attention embeddings of every feature, by feature name."""
        return {**self.attention(sparse), **self.attention_temporal(sparse)}


class OverArch(nn.Module):
    """MLP over [target, pooled, target*pooled, side features] -> one logit per row; the target is
    the pooling's ``over_target`` (TIN: the temporally encoded target v~_t)."""

    def __init__(self, dim: int, hidden: tuple[int, ...], side_dim: int = 0):
        super().__init__()
        self.net = mlp([3 * dim + side_dim, *hidden, 1])

    def forward(self, target: torch.Tensor, pooled: torch.Tensor, side: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat([target, pooled, target * pooled, *side], dim=-1)).squeeze(-1)


class SequenceRanker(nn.Module):
    """Batch.sparse (+ Batch.vector_rows) -> click logits. Build on device "meta" for DMP, "cpu" unsharded.

    With item vectors (MUSE, Wu et al. 2024, "MUSE: A Multi-modal Target Attention Model for CTR
    Prediction") the target's frozen vector, projected to the embedding size, is a side input of
    the over-arch, and search = "cosine" searches the history by those vectors. The vectors are a
    non-persistent buffer: not trained and not in the state_dict; trainers.item_vectors holds
    models to their version.

    Args:
        cfg: the tables, pooling (mean | din | tin | dien | sdim), search unit and widths.
        sparse_device: where the tables are built ("meta" for DMP; None or "cpu" unsharded).
        item_vectors: [n_items + 1, item_vector_dim] frozen vectors (row 0 padding), when
            cfg.item_vector_dim > 0.

    Call:
        sparse: KeyedJaggedTensor over trainers.ranking.batches.SPARSE_KEYS for B rows (targets
            one value per row, hist_* jagged, at most cfg.max_len per row).
        vector_rows: [B + sum(hist lengths)] rows of item_vectors, targets first (Batch.vector_rows).

    Returns:
        [B] click logits. A pooling with a loss of its own (DIEN's auxiliary loss) leaves it for
        ``extra_loss()``, which the trainer adds to the click loss.

    Example:
        >>> cfg = ModelConfig(embedding_dim=8, item_table_size=100, category_table_size=10, max_len=5)
        >>> model = SequenceRanker(cfg)
        >>> model(to_batch(examples, log, FeatureSpec(100, 10, 5)).sparse).shape  # doctest: +SKIP
        torch.Size([256])
    """

    def __init__(self, cfg: ModelConfig, sparse_device: torch.device | None = None,
                 item_vectors: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.sparse_arch = SparseArch(cfg, sparse_device)
        key_dim = 2 * (cfg.attention_dim if cfg.search == "dare" else d)
        self.pooling = make_pooling(cfg.pooling, key_dim, cfg.attention_hidden, value_dim=2 * d,
                                    sdim_hashes=cfg.sdim_hashes, sdim_bits=cfg.sdim_bits)
        self.vector_arch = None
        if cfg.item_vector_dim:
            if item_vectors is None or item_vectors.dim() != 2 or item_vectors.shape[1] != cfg.item_vector_dim:
                shape = None if item_vectors is None else tuple(item_vectors.shape)
                raise ValueError(f"the model expects item vectors of shape [n, {cfg.item_vector_dim}], got {shape}")
            self.register_buffer("item_vectors", item_vectors.detach().float(), persistent=False)
            self.vector_arch = nn.Linear(cfg.item_vector_dim, d)
        self.over_arch = OverArch(2 * d, cfg.over_hidden, d if cfg.item_vector_dim else 0)

    def forward(self, sparse: KeyedJaggedTensor, vector_rows: torch.Tensor | None = None) -> torch.Tensor:
        n = sparse.stride()
        lengths = sparse["hist_item"].lengths()
        if lengths.numel() and int(lengths.max()) > self.cfg.max_len:
            raise ValueError(f"a history of {int(lengths.max())} behaviors exceeds the model's "
                             f"max_len={self.cfg.max_len}; build batches with the same max_len as the model")
        if self.vector_arch is not None and vector_rows is None:
            raise ValueError("this model reads item vectors: build batches with vectors=ItemVectors")
        width, att = self.cfg.max_len, None
        if self.cfg.search != "none":
            sparse, att = self._search(sparse, lengths, vector_rows, n)
            width = min(self.cfg.search_k, self.cfg.max_len)
        emb = self.sparse_arch(sparse)
        offsets = emb["hist_item"].offsets()
        value = _view(emb, offsets, width)
        key = value if att is None else _view(att, offsets, width)  # DARE: the kept behaviors' attention view
        kept = emb["hist_item"].lengths()
        mask = (torch.arange(width, device=kept.device).unsqueeze(0) < kept.unsqueeze(1)).to(value.hist.dtype)
        pooled = self.pooling(value, key, mask)
        side = [] if self.vector_arch is None else [self.vector_arch(self.item_vectors[vector_rows[:n]])]
        return self.over_arch(self.pooling.over_target(value), pooled, side)

    def extra_loss(self) -> torch.Tensor | float:
        """alpha * the pooling's own loss from the last training forward (DIEN's L_aux), to add to the
        click loss; 0.0 when the pooling has none (or the last forward was in eval mode)."""
        aux = self.pooling.aux_loss
        return 0.0 if aux is None else self.cfg.aux_loss_weight * aux

    def _search(self, sparse: KeyedJaggedTensor, lengths: torch.Tensor, vector_rows: torch.Tensor | None,
                n: int) -> tuple[KeyedJaggedTensor, dict[str, JaggedTensor] | None]:
        """The general search unit: score every behavior, keep the top search_k per row. Returns the
        cut KJT and, with DARE, the attention lookups of the cut KJT (else None). DARE scores the full
        history with a lookup without gradient, then looks up the kept behaviors again for the logits,
        so the backward pass (and the fused table update) touches k behaviors per row, not all."""
        if self.cfg.search == "category":
            scores = category_scores(sparse)
        elif self.cfg.search == "cosine":
            scores = cosine_scores(self.item_vectors, vector_rows[:n], vector_rows[n:], lengths)
        else:
            with torch.no_grad():
                scores = dare_scores(self.sparse_arch.attention_lookup(sparse))
        indices, picked = top_k_positions(padded_scores(scores, lengths, self.cfg.max_len), self.cfg.search_k)
        cut = keep_behaviors(sparse, *kept_values(lengths, indices, picked))
        return cut, self.sparse_arch.attention_lookup(cut) if self.cfg.search == "dare" else None


def _view(emb: dict[str, JaggedTensor], offsets: torch.Tensor, width: int) -> Behaviors:
    """Lookups by feature name -> Behaviors: [item ; category] of the target and of the history
    padded to ``width``, and their gap encodings where the gaps were looked up (else None)."""
    def cat(kind: str) -> torch.Tensor:
        return torch.cat([emb[f"{kind}_item"].values(), emb[f"{kind}_category"].values()], dim=-1)

    timed = "hist_gap" in emb
    return Behaviors(target=cat("target"), hist=_padded(cat("hist"), offsets, width),
                     target_time=emb["target_gap"].values() if timed else None,
                     hist_time=_padded(emb["hist_gap"].values(), offsets, width) if timed else None)


def _padded(values: torch.Tensor, offsets: torch.Tensor, width: int) -> torch.Tensor:
    """Jagged values [N, d] -> [B, width, d], zeros at padding."""
    return torch.ops.fbgemm.jagged_to_padded_dense(values, [offsets], [width], 0.0)
