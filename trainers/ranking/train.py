"""Train the sequence ranker under DistributedModelParallel; score examples unsharded.

train() runs TorchRec DMP over the default process group: one that is already
initialized (trainers.launch under torchrun, or spawn_local), else the group
torchrun's env vars describe, else a gloo group of size 1 on a free 127.0.0.1
port (destroyed at the end). Each of N ranks trains on 1/N of every global batch
(trainers.ranking.batches.rank_batches) and scores 1/N of the eval rows; losses and
metrics are global and the same on every rank, and rank 0 gets the full tables.
Tables are sharded by TrainConfig.sharding (table_wise, row_wise, column_wise)
and updated by a fused RowWiseAdagrad inside backward (fused Adam is refused on
CPU); the dense arches use torch.optim.Adam. device "cuda" runs NCCL, one GPU per
rank. Batches holding NaN/inf in a float tensor, and item vectors holding any,
are refused before the model sees them, on every rank at once.
Checkpoints (trainers.checkpoint, DCP) save and resume the sharded model, the
optimizer state and the data position. predict() loads the returned unsharded
state_dict into a plain model on CPU, with no process group, as serving does.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from features.labels import EXAMPLE_SCHEMA
from features.pit import LOG_COLUMNS, sort_log
from trainers import checkpoint, metrics
from trainers.baselines import ItemCounts, popularity
from trainers.distributed import (SHARDING_TYPES, agree, eval_share, gather_scores, load_unsharded, threads,
                                  unsharded_state_dict)
from trainers.item_vectors import META_KEY, ItemVectors, require_version
from trainers.ranking.batches import Batch, eval_batches, rank_batches
from trainers.ranking.model import ModelConfig, SequenceRanker
from trainers.ranking.pooling import POOLINGS
from trainers.ranking.search import SEARCHES
from trainers.session import Session, sharded_session
from trainers.spec import FeatureSpec


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 256
    # The learning rates and the init were chosen on the synthetic stream (docs/training.md, "Defaults").
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
    item_vectors: bool = False  # read frozen multimodal item vectors (pipelines/embed/job.py) as a side feature
    model: str = "din"  # sequence pooling: one of trainers.ranking.pooling.POOLINGS (mean, din, tin, dien, sdim)
    search: str = "none"  # lifelong search unit: one of trainers.ranking.search.SEARCHES (none, category, cosine, dare)
    search_k: int = 0  # behaviors the search unit keeps (>= 1 with a search unit; "cosine" needs item_vectors)
    attention_dim: int = 8  # width of DARE's attention tables (search = "dare")
    aux_loss_weight: float = 1.0  # alpha: the loss is L_target + alpha * the pooling's own loss (DIEN's L_aux)
    sdim_hashes: int = 48  # SDIM's m hash functions (model = "sdim"; trainers/ranking/sdim.py on the defaults)
    sdim_bits: int = 3  # SDIM's tau bits per signature (model = "sdim")
    sharding: str = "table_wise"  # every table's plan: one of trainers.distributed.SHARDING_TYPES
    device: str = "cpu"  # "cpu" (gloo) or "cuda" (nccl, one GPU per rank: cuda:LOCAL_RANK)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "embedding_dim", "item_table_size", "category_table_size",
                     "max_len", "seed", "eval_batch_size", "progress_every", "threads", "search_k",
                     "attention_dim", "sdim_hashes", "sdim_bits"):
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
        self._check_model()
        if self.sharding not in SHARDING_TYPES:
            raise ValueError(f"TrainConfig.sharding must be one of {SHARDING_TYPES}, got {self.sharding!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"TrainConfig.device must be 'cpu' or 'cuda', got {self.device!r}")

    def _check_model(self) -> None:
        if self.model not in POOLINGS:
            raise ValueError(f"TrainConfig.model must be one of {POOLINGS}, got {self.model!r}")
        if self.search not in SEARCHES:
            raise ValueError(f"TrainConfig.search must be one of {SEARCHES}, got {self.search!r}")
        if self.search == "none" and self.search_k:
            raise ValueError(f"TrainConfig.search_k={self.search_k} needs a search unit: set search to one of "
                             f"{SEARCHES[1:]}")
        if self.search != "none" and self.search_k < 1:
            raise ValueError(f"TrainConfig.search={self.search!r} needs search_k >= 1 (behaviors to keep)")
        if self.search == "cosine" and not self.item_vectors:
            raise ValueError("TrainConfig.search='cosine' searches by item vectors: set item_vectors = true")
        value = self.aux_loss_weight
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"TrainConfig.aux_loss_weight must be a finite number >= 0, got {value!r}")
        if self.sdim_bits > 32:
            raise ValueError(f"TrainConfig.sdim_bits must be <= 32 (2^tau buckets per hash), got {self.sdim_bits}")
        for name in ("embedding_dim", "attention_dim"):  # fbgemm's fused tables need widths in multiples of 4
            if getattr(self, name) % 4:
                raise ValueError(f"TrainConfig.{name} must be a multiple of 4 (sharded tables), "
                                 f"got {getattr(self, name)}")

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec(self.item_table_size, self.category_table_size, self.max_len)

    def model_config(self, vector_dim: int = 0) -> ModelConfig:
        return ModelConfig(self.embedding_dim, self.item_table_size, self.category_table_size, self.max_len,
                           init_scale=self.embedding_init, item_vector_dim=vector_dim if self.item_vectors else 0,
                           pooling=self.model, search=self.search, search_k=self.search_k,
                           attention_dim=self.attention_dim, aux_loss_weight=float(self.aux_loss_weight),
                           sdim_hashes=self.sdim_hashes, sdim_bits=self.sdim_bits)


@dataclass(frozen=True)
class TrainResult:
    state_dict: dict[str, torch.Tensor]  # unsharded CPU tensors (rank 0; {} on other ranks)
    config: TrainConfig
    losses: list[float]  # one per step
    eval_metrics: dict[str, float]  # auc, gauc, logloss, baseline_{auc,gauc,logloss}, n_eval, eval_positive_rate
    samples_per_s: float  # training examples per second over the step loop (batch building included)
    train_seconds: float
    item_vector_version: str | None = None  # the encoder version of the vectors it read, if any
    eval_scores: np.ndarray | None = None  # the sharded model's eval scores, in eval_examples' row order
    checkpoint: str | None = None  # the checkpoint written at the last step, if checkpoint_dir was given
    start_step: int = 0  # > 0 when resumed: losses then cover steps start_step + 1 .. cfg.steps
    rank: int = 0
    world_size: int = 1

    def metadata(self) -> dict:
        """What a registry should record beside the weights."""
        return {} if self.item_vector_version is None else {META_KEY: self.item_vector_version}


def train(train_examples: pa.Table, eval_examples: pa.Table, log: pa.Table, cfg: TrainConfig,
          progress: Callable[[int, float], None] | None = None, vectors: ItemVectors | None = None, *,
          checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0, resume_from: str | Path | None = None,
          init_state: dict[str, torch.Tensor] | None = None) -> TrainResult:
    """Train up to global step cfg.steps, evaluate on eval_examples (with the point-in-time
    popularity baseline, trainers.baselines).

    ``vectors`` (trainers.item_vectors.load_item_vectors) is required when cfg.item_vectors.
    At world size N (an initialized default group, or torchrun's env vars) every rank calls this
    with the same tables: each trains on 1/N of every global batch of cfg.batch_size and scores
    1/N of the eval rows; all ranks get the same losses, metrics and progress calls, rank 0 alone
    the state_dict. ``checkpoint_dir``: DCP checkpoints (trainers.checkpoint) every
    ``checkpoint_every`` steps and at the end. ``resume_from``: a checkpoint, or a checkpoint_dir
    (its latest), to continue from (weights, optimizer state, data position); cfg.steps still
    counts from step 0. ``init_state``: unsharded weights to start from with a fresh optimizer.

    Example:
        >>> result = train(train_set, eval_set, sort_log(log), TrainConfig(model="tin", steps=300))  # doctest: +SKIP
        >>> result.eval_metrics["auc"], result.eval_metrics["baseline_auc"]  # doctest: +SKIP
        (0.74, 0.52)
    """
    vectors = vectors_for(cfg, vectors)
    check_vectors(vectors)
    if resume_from is not None and init_state is not None:
        raise ValueError("pass resume_from (a checkpoint) or init_state (weights), not both")
    if checkpoint_every < 0 or (checkpoint_every and checkpoint_dir is None):
        raise ValueError(f"checkpoint_every={checkpoint_every} must be >= 0, and > 0 only with checkpoint_dir")
    _check_columns(train_examples, EXAMPLE_SCHEMA.names, "train_examples")
    _check_columns(eval_examples, EXAMPLE_SCHEMA.names, "eval_examples")
    _check_columns(log, LOG_COLUMNS, "log")
    log = sort_log(log)
    dim = vectors.dim if vectors else 0

    def build() -> SequenceRanker:
        return SequenceRanker(cfg.model_config(dim), sparse_device=torch.device("meta"),
                              item_vectors=None if vectors is None else vectors.table)

    with sharded_session(build, lambda m: m.sparse_arch.parameters(), cfg) as session:
        model, optimizer, device, rank, world = (session.model, session.optimizer, session.device, session.rank,
                                                 session.world)
        about = checkpoint.describe(cfg, cfg.model_config(vectors.dim if vectors else 0), cfg.features,
                                    None if vectors is None else vectors.version, train_examples)
        start = 0
        if resume_from is not None:
            start = checkpoint.load_checkpoint(resume_from, model, optimizer, about)["position"]["step"]
        elif init_state is not None:
            load_unsharded(model, init_state)

        def save(step: int) -> str:
            return str(checkpoint.save_checkpoint(checkpoint.step_dir(checkpoint_dir, step), model, optimizer, about,
                                                  step, train_examples.num_rows // cfg.batch_size))

        def after_step(step: int) -> None:
            if checkpoint_every and step % checkpoint_every == 0 and step < cfg.steps:
                save(step)

        losses, seconds = fit_steps(
            session, rank_batches(train_examples, log, cfg.features, cfg.batch_size, cfg.seed, start, vectors),
            cfg, progress, start, after_step)
        saved = save(cfg.steps) if checkpoint_dir is not None and cfg.steps > start else None
        scores = np.zeros(0)
        if eval_examples.num_rows:
            share = eval_examples.take(pa.array(eval_share(eval_examples.num_rows)))
            scores = gather_scores(score_batches(model, eval_batches(share, log, cfg.features, cfg.eval_batch_size, vectors),
                                          device), eval_examples.num_rows)
        state = unsharded_state_dict(model)
    baseline = popularity(ItemCounts(log), eval_examples)  # the item's count before each example, point in time
    trained = cfg.steps - start
    return TrainResult(
        state_dict=state if rank == 0 else {}, config=cfg, losses=losses,
        eval_metrics=evaluate(eval_examples.column("label").to_numpy(), scores, baseline,
                              eval_examples.column("user_id").to_numpy()),
        samples_per_s=trained * cfg.batch_size / seconds if trained > 0 else 0.0, train_seconds=seconds,
        item_vector_version=None if vectors is None else vectors.version, eval_scores=scores,
        checkpoint=saved, start_step=start, rank=rank, world_size=world)


def predict(state_dict: dict[str, torch.Tensor], cfg: TrainConfig, examples: pa.Table,
            log: pa.Table, vectors: ItemVectors | None = None, model_meta: dict | None = None) -> np.ndarray:
    """Click probabilities for examples (in table order) from an unsharded model on CPU.

    A model trained with item vectors needs ``vectors`` of the encoder version recorded in
    ``model_meta`` (TrainResult.metadata() or the registry's metadata); another version is
    refused with EmbeddingVersionMismatch."""
    _check_columns(examples, ("user_id", "item_id", "category_id", "timestamp"), "examples")
    _check_columns(log, LOG_COLUMNS, "log")
    if "label" not in examples.column_names:  # serving requests carry no label
        examples = examples.append_column("label", pa.array(np.zeros(examples.num_rows, np.int8)))
    model = serving_model(state_dict, cfg, vectors, model_meta)
    vectors = vectors_for(cfg, vectors)
    with threads(cfg.threads):
        return score_batches(model, eval_batches(examples, sort_log(log), cfg.features, cfg.eval_batch_size, vectors))


def serving_model(state_dict: dict[str, torch.Tensor], cfg: TrainConfig, vectors: ItemVectors | None = None,
                  model_meta: dict | None = None) -> SequenceRanker:
    """An unsharded ranker on CPU holding state_dict, in eval mode (what predict and `recstream serve` score with)."""
    vectors = vectors_for(cfg, vectors)
    check_vectors(vectors)
    if vectors is not None:
        require_version(model_meta or {}, vectors.version)
    # Built on "meta" and materialized empty: every value then comes from state_dict (strict).
    model = SequenceRanker(cfg.model_config(vectors.dim if vectors else 0), sparse_device=torch.device("meta"),
                           item_vectors=None if vectors is None else vectors.table).to_empty(device="cpu")
    if vectors is not None:  # to_empty() leaves buffers uninitialized; the vectors are not in state_dict
        model.item_vectors = vectors.table.float()
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def vectors_for(cfg: TrainConfig, vectors: ItemVectors | None) -> ItemVectors | None:
    if cfg.item_vectors and vectors is None:
        raise ValueError("TrainConfig.item_vectors is set: pass vectors=trainers.item_vectors.load_item_vectors(workdir)")
    return vectors if cfg.item_vectors else None


def evaluate(labels: np.ndarray, scores: np.ndarray, baseline: np.ndarray,
             users: np.ndarray | None = None) -> dict[str, float]:
    """AUC and logloss of the model's and the point-in-time popularity baseline's scores; with ``users``, also
    their GAUC (trainers.metrics.gauc: per-user AUC weighted by impressions)."""
    out = {
        "auc": metrics.auc(labels, scores),
        "logloss": metrics.logloss(labels, scores),
        "baseline_auc": metrics.auc(labels, baseline),
        "baseline_logloss": metrics.logloss(labels, baseline),
        "n_eval": float(len(labels)),
        "eval_positive_rate": float(np.mean(labels)) if len(labels) else float("nan"),
    }
    if users is not None:
        out["gauc"] = metrics.gauc(users, labels, scores) if len(labels) else float("nan")
        out["baseline_gauc"] = metrics.gauc(users, labels, baseline) if len(labels) else float("nan")
    return out


def fit_steps(session: Session, batches: Iterator[Batch], cfg: TrainConfig, progress: Callable[[int, float], None] | None,
         start_step: int = 0, after_step: Callable[[int], None] | None = None) -> tuple[list[float], float]:
    """Global steps start_step + 1 .. cfg.steps; the loss recorded is the mean over all ranks. The loss
    is the click loss plus the model's extra_loss() (alpha * DIEN's auxiliary loss; 0 for the others)."""
    model, device = session.model, session.device
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(start_step + 1, cfg.steps + 1):
        batch = next(batches)
        # Every rank checks its share and all stop together: a rank that raised alone would leave
        # the others waiting in the sharded forward.
        error = agree(_nonfinite(batch, f"step {step}"), device)
        if error:
            raise ValueError(error)
        if device.type != "cpu":
            batch = batch.to(device, non_blocking=True)
        session.optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch.sparse, batch.vector_rows), batch.labels)
        loss = loss + ranker_of(model).extra_loss()
        value = session.step(loss, step)
        losses.append(value)
        if progress is not None and (step % cfg.progress_every == 0 or step == cfg.steps):
            progress(step, value)
        if after_step is not None:
            after_step(step)
    return losses, time.perf_counter() - start


def ranker_of(model: torch.nn.Module) -> SequenceRanker:
    """The SequenceRanker inside DMP (DMP.module unwraps DDP too), or the model itself."""
    return model.module if isinstance(model, DistributedModelParallel) else model


def score_batches(model: torch.nn.Module, batches: Iterator[Batch], device: torch.device = torch.device("cpu")) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for batch in batches:
            if device.type != "cpu":
                batch = batch.to(device, non_blocking=True)
            out.append(torch.sigmoid(model(batch.sparse, batch.vector_rows)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _nonfinite(batch: Batch, where: str) -> str | None:
    """A message naming the first float tensor of the batch that holds NaN/inf, else None."""
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        name = field.name
        if isinstance(value, KeyedJaggedTensor):
            value, name = value.weights_or_none(), f"{name}.weights"
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = ~torch.isfinite(value.flatten())
            if bad.any():
                first = int(bad.nonzero()[0])
                return (f"non-finite input: batch tensor {name!r} at {where} holds {int(bad.sum())} NaN/inf "
                        f"value(s), the first at flat index {first} ({float(value.flatten()[first])}); "
                        f"fix or drop those input rows")
    return None


def check_vectors(vectors: ItemVectors | None) -> None:
    """Refuse item vectors with NaN/inf before any model reads them."""
    if vectors is None:
        return
    bad = (~torch.isfinite(vectors.table)).any(dim=1).nonzero().flatten()
    if len(bad):
        row = int(bad[0])
        what = f"item {int(vectors.ids[row - 1])}" if row > 0 else "the padding row"
        raise ValueError(f"non-finite input: item vectors (version {vectors.version!r}) hold NaN/inf in "
                         f"{len(bad)} row(s), the first being {what}; re-embed those items")


def _check_columns(table: pa.Table, names, what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {table.column_names}")
