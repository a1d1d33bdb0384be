"""Frozen multimodal item vectors for the trainers: load a version, look vectors up, and hold
models to the version they were trained on (the MUSE cosine search over them lives in
trainers/ranking/search.py with the other search units).

- ``load_item_vectors(workdir, version=None, item_ids=None)`` reads
  ``offline/item_embeddings/version=<v>/`` (pipelines/embed/job.py), newest row per item,
  into an ``ItemVectors``: sorted hashed IDs and a frozen (n + 1, dim) tensor whose row 0
  is the zero vector (unknown items and padding).
- ``ItemVectors.rows(raw_ids)`` maps hashed item IDs (numpy, vectorized) to rows of that
  tensor, 0 where unknown: the exact lookup, for a batch builder to carry beside the
  folded IDs. ``ItemVectors.lookup`` does the same on torch tensors.
  ``ItemVectors.folded_table(table_size)`` is the lookup by folded ID
  (features.ids.fold), for a model that only has the KJT's folded values; items that
  fold onto one row share the normalized mean of their vectors (counted in
  ``collisions``).
- ``require_version(model_meta, vectors_version)`` raises EmbeddingVersionMismatch unless
  the model's recorded ``item_embedding_version`` equals the vectors'.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch

from features.ids import fold
from features.item_vectors import (DEFAULT_VERSION, ITEM_EMBEDDING_SCHEMA, EmbeddingVersionMismatch,
                                   embedded_versions, latest_rows, manifest, serving_version, version_dir)

META_KEY = "item_embedding_version"  # the key a model's metadata records the encoder version under


@dataclass(frozen=True)
class ItemVectors:
    """One encoder version's vectors: ``ids`` sorted, ``table[1 + i]`` is the vector of
    ``ids[i]``, ``table[0]`` is zero. The table never requires grad."""

    version: str
    ids: np.ndarray  # (n,) int64, sorted, unique
    table: torch.Tensor  # (n + 1, dim) float32

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def meta(self) -> dict:
        """What to merge into a model's metadata when training with these vectors."""
        return {META_KEY: self.version}

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Hashed item IDs (any shape) -> table rows (int64, same shape), 0 for unknown IDs."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(item_ids.shape, dtype=np.int64)
        pos = np.searchsorted(self.ids, item_ids)
        pos = np.minimum(pos, len(self.ids) - 1)
        return np.where(self.ids[pos] == item_ids, pos + 1, 0).astype(np.int64)

    def lookup(self, item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hashed item IDs [...] -> (vectors [..., dim], found [...] bool); unknown IDs give zeros."""
        rows = torch.from_numpy(self.rows(item_ids.detach().cpu().numpy())).to(self.table.device)
        return self.table[rows].to(item_ids.device), (rows > 0).to(item_ids.device)

    def folded_table(self, table_size: int) -> tuple[torch.Tensor, int]:
        """(table_size, dim) vectors indexed by fold(item_id, table_size), and how many items
        share a row with another. Row 0 (padding) and rows no item folds onto are zero."""
        rows = fold(self.ids, table_size)
        out = torch.zeros(table_size, self.dim, dtype=self.table.dtype)
        out.index_add_(0, torch.from_numpy(rows), self.table[1:].cpu())
        counts = np.bincount(rows, minlength=table_size)
        norms = out.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out = torch.where(torch.from_numpy(counts > 1).unsqueeze(1), out / norms, out)
        return out, int(counts[counts > 1].sum())

    def to(self, device: torch.device | str) -> ItemVectors:
        return ItemVectors(self.version, self.ids, self.table.to(device))


def load_item_vectors(workdir: str | Path, version: str | None = None,
                      item_ids: np.ndarray | list[int] | None = None) -> ItemVectors:
    """The vectors of ``version`` (default: the serving version) under workdir/offline, newest
    row per item, optionally only for ``item_ids``. Raises FileNotFoundError naming the
    versions present when the version has never been embedded."""
    offline = Path(workdir) / "offline"
    version = version or serving_version(offline) or DEFAULT_VERSION
    folder = version_dir(offline, version)
    if not folder.is_dir():
        raise FileNotFoundError(f"no item vectors of encoder version {version!r} in {folder.parent} "
                                f"(versions there: {embedded_versions(offline) or 'none'}); run `recstream embed`")
    dataset = ds.dataset(folder, format="parquet", schema=ITEM_EMBEDDING_SCHEMA)
    filt = None if item_ids is None else pc.field("item_id").isin(pa.array(np.asarray(item_ids, np.int64)))
    table = latest_rows(dataset.to_table(filter=filt))
    strays = sorted(set(pc.unique(table.column("encoder_version")).to_pylist()) - {version})
    if strays:
        raise ValueError(f"{folder} holds vectors of other encoder versions {strays}: the folder is damaged")
    ids = table.column("item_id").to_numpy()
    order = np.argsort(ids)
    flat = pc.list_flatten(table.column("vector")).to_numpy()
    n = len(ids)
    recorded = manifest(offline, version)
    dim = recorded["dim"] if recorded else len(flat) // n if n else 0
    if n and (pc.list_value_length(table.column("vector")).to_numpy() != dim).any():
        raise ValueError(f"item vectors of version {version!r} are not all {dim}-d")
    vectors = torch.zeros(n + 1, dim, dtype=torch.float32)
    if n:
        vectors[1:] = torch.from_numpy(flat.reshape(n, dim)[order].astype(np.float32))
    return ItemVectors(version, ids[order].astype(np.int64), vectors)


def require_version(model_meta: dict, vectors_version: str) -> None:
    """Refuse item vectors of another encoder version than the model was trained with.

    ``model_meta`` is the model's metadata (the registry's metadata.json); it must carry
    ``item_embedding_version`` (META_KEY). Raises EmbeddingVersionMismatch naming both."""
    trained = model_meta.get(META_KEY) if isinstance(model_meta, dict) else None
    if trained != vectors_version:
        raise EmbeddingVersionMismatch(trained, vectors_version)


def vectors_for_model(workdir: str | Path, model_meta: dict, item_ids: np.ndarray | list[int] | None = None,
                      version: str | None = None) -> ItemVectors:
    """Serving: the vectors of ``version`` (default: the serving version), refused unless the
    model was trained with that version."""
    offline = Path(workdir) / "offline"
    version = version or serving_version(offline) or DEFAULT_VERSION
    require_version(model_meta, version)
    return load_item_vectors(workdir, version, item_ids)
