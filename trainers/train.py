"""Train the sequence ranker under DistributedModelParallel; score examples unsharded.

train() runs TorchRec DMP at world size 1 over a gloo process group (created
here on a free 127.0.0.1 port and destroyed at the end, or reused if one of
size 1 exists). Embedding tables are table-wise sharded and updated by a fused
RowWiseAdagrad inside backward (fused Adam is refused on CPU); the dense arches
use torch.optim.Adam. predict() loads the returned unsharded state_dict into a
plain model on CPU, with no process group, as serving does.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from features.labels import EXAMPLE_SCHEMA
from features.pit import LOG_COLUMNS, sort_log
from trainers import metrics
from trainers.batches import Batch, FeatureSpec, eval_batches, training_batches
from trainers.distributed import combined_optimizer, process_group, shard, threads, unsharded_state_dict
from trainers.item_vectors import META_KEY, ItemVectors, require_version
from trainers.model import ModelConfig, SequenceRanker


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 256
    # Measured on the synthetic stream (150 users, 10 days): sparse_lr 0.05 or an
    # init of +-0.05 lets the item table memorize the training set (eval AUC ~0.66);
    # these values reach ~0.74, near the planted-signal feature's 0.75.
    sparse_lr: float = 0.01  # fused RowWiseAdagrad on the embedding tables
    dense_lr: float = 3e-3  # Adam on the MLPs
    embedding_init: float = 0.2  # tables start uniform in [-embedding_init, embedding_init]
    embedding_dim: int = 16
    item_table_size: int = 20_000
    category_table_size: int = 1_000
    max_len: int = 50
    seed: int = 0
    eval_batch_size: int = 2_048
    progress_every: int = 50
    threads: int = 0  # torch intra-op threads while training; 0 leaves torch's setting
    item_vectors: bool = False  # read frozen multimodal item vectors (pipelines/embed.py) as a side feature
    search_k: int = 0  # > 0: MUSE-style search keeps the k behaviors nearest the target (needs item_vectors)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "embedding_dim", "item_table_size", "category_table_size",
                     "max_len", "seed", "eval_batch_size", "progress_every", "threads", "search_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"TrainConfig.{name} must be an int, got {value!r}")
            low = 0 if name in ("seed", "threads", "search_k") else 2 if name.endswith("table_size") else 1
            if value < low:
                raise ValueError(f"TrainConfig.{name} must be >= {low}, got {value}")
        for name in ("sparse_lr", "dense_lr", "embedding_init"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number > 0, got {value!r}")
        if self.search_k and not self.item_vectors:
            raise ValueError("TrainConfig.search_k searches by item vectors: set item_vectors = true")

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec(self.item_table_size, self.category_table_size, self.max_len)

    def model_config(self, vector_dim: int = 0) -> ModelConfig:
        return ModelConfig(self.embedding_dim, self.item_table_size, self.category_table_size, self.max_len,
                           init_scale=self.embedding_init, item_vector_dim=vector_dim if self.item_vectors else 0,
                           search_k=self.search_k)


@dataclass(frozen=True)
class TrainResult:
    state_dict: dict[str, torch.Tensor]  # unsharded CPU tensors; loads into SequenceRanker(cfg.model_config())
    config: TrainConfig
    losses: list[float]  # one per step
    eval_metrics: dict[str, float]  # auc, logloss, baseline_auc, baseline_logloss, n_eval, eval_positive_rate
    samples_per_s: float  # training examples per second over the step loop (batch building included)
    train_seconds: float
    item_vector_version: str | None = None  # the encoder version of the vectors it read, if any

    def metadata(self) -> dict:
        """What a registry should record beside the weights."""
        return {} if self.item_vector_version is None else {META_KEY: self.item_vector_version}


def train(train_examples: pa.Table, eval_examples: pa.Table, log: pa.Table, cfg: TrainConfig,
          progress: Callable[[int, float], None] | None = None, vectors: ItemVectors | None = None) -> TrainResult:
    """Train for cfg.steps batches, evaluate on eval_examples (with a popularity baseline).
    ``vectors`` (trainers.item_vectors.load_item_vectors) is required when cfg.item_vectors."""
    vectors = _vectors_for(cfg, vectors)
    _check_columns(train_examples, EXAMPLE_SCHEMA.names, "train_examples")
    _check_columns(eval_examples, EXAMPLE_SCHEMA.names, "eval_examples")
    _check_columns(log, LOG_COLUMNS, "log")
    log = sort_log(log)
    torch.manual_seed(cfg.seed)
    with threads(cfg.threads), process_group() as pg:
        if dist.get_world_size(pg) != 1:
            raise RuntimeError(f"train() runs at world size 1; the initialized process group has "
                               f"{dist.get_world_size(pg)} ranks")
        model = SequenceRanker(cfg.model_config(vectors.dim if vectors else 0), sparse_device=torch.device("meta"),
                               item_vectors=None if vectors is None else vectors.table)
        apply_optimizer_in_backward(RowWiseAdagrad, model.sparse_arch.parameters(), {"lr": cfg.sparse_lr})
        model = shard(model, pg)
        optimizer = combined_optimizer(model, cfg.dense_lr)
        losses, seconds = _fit(model, optimizer,
                               training_batches(train_examples, log, cfg.features, cfg.batch_size, cfg.seed,
                                                vectors), cfg, progress)
        scores = _score(model, eval_batches(eval_examples, log, cfg.features, cfg.eval_batch_size, vectors))
        state = unsharded_state_dict(model)
    baseline = metrics.popularity_scores(train_examples, eval_examples)
    return TrainResult(
        state_dict=state, config=cfg, losses=losses,
        eval_metrics=evaluate(eval_examples.column("label").to_numpy(), scores, baseline),
        samples_per_s=cfg.steps * cfg.batch_size / seconds, train_seconds=seconds,
        item_vector_version=None if vectors is None else vectors.version)


def predict(state_dict: dict[str, torch.Tensor], cfg: TrainConfig, examples: pa.Table,
            log: pa.Table, vectors: ItemVectors | None = None, model_meta: dict | None = None) -> np.ndarray:
    """Click probabilities for examples (in table order) from an unsharded model on CPU.

    A model trained with item vectors needs ``vectors`` of the encoder version recorded in
    ``model_meta`` (TrainResult.metadata() or the registry's metadata); another version is
    refused with EmbeddingVersionMismatch."""
    vectors = _vectors_for(cfg, vectors)
    if vectors is not None:
        require_version(model_meta or {}, vectors.version)
    _check_columns(examples, ("user_id", "item_id", "category_id", "timestamp"), "examples")
    _check_columns(log, LOG_COLUMNS, "log")
    if "label" not in examples.column_names:  # serving requests carry no label
        examples = examples.append_column("label", pa.array(np.zeros(examples.num_rows, np.int8)))
    # Built on "meta" and materialized empty: every value then comes from state_dict (strict).
    model = SequenceRanker(cfg.model_config(vectors.dim if vectors else 0), sparse_device=torch.device("meta"),
                           item_vectors=None if vectors is None else vectors.table).to_empty(device="cpu")
    if vectors is not None:  # to_empty() leaves buffers uninitialized; the vectors are not in state_dict
        model.item_vectors = vectors.table.float()
    model.load_state_dict(state_dict, strict=True)
    with threads(cfg.threads):
        return _score(model, eval_batches(examples, sort_log(log), cfg.features, cfg.eval_batch_size, vectors))


def _vectors_for(cfg: TrainConfig, vectors: ItemVectors | None) -> ItemVectors | None:
    if cfg.item_vectors and vectors is None:
        raise ValueError("TrainConfig.item_vectors is set: pass vectors=trainers.item_vectors.load_item_vectors(workdir)")
    return vectors if cfg.item_vectors else None


def evaluate(labels: np.ndarray, scores: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    return {
        "auc": metrics.auc(labels, scores),
        "logloss": metrics.logloss(labels, scores),
        "baseline_auc": metrics.auc(labels, baseline),
        "baseline_logloss": metrics.logloss(labels, baseline),
        "n_eval": float(len(labels)),
        "eval_positive_rate": float(np.mean(labels)) if len(labels) else float("nan"),
    }


def _fit(model: torch.nn.Module, optimizer: CombinedOptimizer, batches: Iterator[Batch], cfg: TrainConfig,
         progress: Callable[[int, float], None] | None) -> tuple[list[float], float]:
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        batch = next(batches)
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch.sparse, batch.vector_rows), batch.labels)
        value = float(loss.detach())
        # Check before backward: the fused sparse optimizer updates tables inside backward.
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss is {value} at step {step}; "
                                     f"lower sparse_lr={cfg.sparse_lr} or dense_lr={cfg.dense_lr}")
        loss.backward()
        optimizer.step()
        losses.append(value)
        if progress is not None and (step % cfg.progress_every == 0 or step == cfg.steps):
            progress(step, value)
    return losses, time.perf_counter() - start


def _score(model: torch.nn.Module, batches: Iterator[Batch]) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for batch in batches:
            out.append(torch.sigmoid(model(batch.sparse, batch.vector_rows)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _check_columns(table: pa.Table, names, what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {table.column_names}")
