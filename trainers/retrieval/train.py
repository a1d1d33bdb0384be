"""Train the multi-interest retriever under DistributedModelParallel; serve K vectors per user.

train_retriever() runs TorchRec DMP at world size 1 over a gloo process group
(trainers.session). The item and category tables are sharded by
``RetrievalConfig.sharding`` and updated by a fused RowWiseAdagrad inside backward; the towers
use Adam (trainers.distributed.combined_optimizer). Each step: label-aware attention picks a
user vector per row for its target (trainers.retrieval.model.label_aware), and a sampled softmax with
logQ correction scores it against in-batch or log-uniform negatives (trainers.retrieval.sampled_softmax).

Serving runs an unsharded model on CPU with no process group: user_vectors() gives K vectors
per user from the history before a time; retrieve() takes the top N of each interest by inner
product over the candidates' item vectors and merges them (duplicates keep their best score).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist

from features.ids import fold
from features.pit import LOG_COLUMNS, sort_log
from trainers.distributed import SHARDING_TYPES, threads, unsharded_state_dict
from trainers.retrieval.batches import history_batches, positives, training_batches
from trainers.retrieval.model import MODELS, Retriever, RetrieverConfig, label_aware
from trainers.retrieval.sampled_softmax import ItemFrequency, LogUniformSampler, in_batch_loss, sampled_loss
from trainers.session import sharded_session
from trainers.spec import FeatureSpec

NEGATIVES = ("in-batch", "log-uniform")
_INTS = {"interests": 1, "embedding_dim": 1, "item_table_size": 2, "category_table_size": 2, "max_len": 1,
         "attention_hidden": 1, "routing_iterations": 1, "mlp_hidden": 1, "num_sampled": 1, "steps": 1,
         "batch_size": 2, "seed": 0, "threads": 0, "validate_every": 0, "progress_every": 1}


@dataclass(frozen=True)
class RetrievalConfig:
    model: str = "comirec-sa"  # single | comirec-sa | mind
    interests: int = 4  # K (the single model has 1)
    embedding_dim: int = 32
    item_table_size: int = 20_000
    category_table_size: int = 1_000
    max_len: int = 50
    attention_hidden: int = 64
    routing_iterations: int = 3
    mlp_hidden: int = 64
    label_power: float = math.inf  # p of label-aware attention; inf = hard argmax
    negatives: str = "in-batch"  # in-batch | log-uniform
    num_sampled: int = 256  # log-uniform negatives per batch
    steps: int = 300
    batch_size: int = 128
    sparse_lr: float = 0.05  # fused RowWiseAdagrad on the tables
    dense_lr: float = 3e-3  # Adam on the towers
    embedding_init: float = 0.1
    sharding: str = "table_wise"
    seed: int = 0
    threads: int = 0  # torch intra-op threads while training; 0 leaves torch's setting
    validate_every: int = 0  # > 0 with a validate callback: keep the state that validates best
    progress_every: int = 50

    def __post_init__(self) -> None:
        for name, low in _INTS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"RetrievalConfig.{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"RetrievalConfig.{name} must be >= {low}, got {value}")
        for name in ("sparse_lr", "dense_lr", "embedding_init"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"RetrievalConfig.{name} must be a finite number > 0, got {value!r}")
        if isinstance(self.label_power, bool) or not isinstance(self.label_power, (int, float)) \
                or not self.label_power > 0:
            raise ValueError(f"RetrievalConfig.label_power must be > 0 (inf = hard attention), "
                             f"got {self.label_power!r}")
        for name, allowed in (("model", MODELS), ("negatives", NEGATIVES), ("sharding", SHARDING_TYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"RetrievalConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec(self.item_table_size, self.category_table_size, self.max_len)

    def retriever_config(self) -> RetrieverConfig:
        return RetrieverConfig(self.model, self.embedding_dim, self.item_table_size, self.category_table_size,
                               self.max_len, self.interests, self.attention_hidden, self.routing_iterations,
                               self.mlp_hidden, self.embedding_init)


@dataclass
class RetrievalResult:
    state_dict: dict[str, torch.Tensor]  # unsharded, CPU; the best on validation when validating
    config: RetrievalConfig
    losses: list[float]
    train_seconds: float
    samples_per_s: float
    validation: list[tuple[int, float]] = field(default_factory=list)  # (step, score)
    best_step: int = 0  # the step whose state is returned


class RetrievalLoss:
    """The retriever's loss on a batch: label-aware attention picks each row's interest for its
    target, then a sampled softmax with logQ correction over in-batch or log-uniform negatives.
    Item frequencies (logQ) come from the positives it is built on, or from ``frequency_of`` (a
    fine-tuning window's log: a few hundred rows estimate Q poorly)."""

    def __init__(self, rows: pa.Table, cfg: RetrievalConfig, frequency_of: pa.Table | None = None):
        spec = cfg.features
        source = rows if frequency_of is None else frequency_of  # the positives, or a longer history
        frequency = ItemFrequency(fold(source.column("item_id").to_numpy(), spec.item_table_size),
                                  fold(source.column("category_id").to_numpy(), spec.category_table_size),
                                  spec.item_table_size)
        self.cfg, self.in_batch_log_q = cfg, frequency.log_q()
        self.sampler = LogUniformSampler(frequency, cfg.seed) if cfg.negatives == "log-uniform" else None
        self.draws: list[np.ndarray] = []  # the log Q of the negatives drawn for the batch being built

    def batches(self, rows: pa.Table, log: pa.Table, seed: int):
        """Endless training batches of ``rows`` (positives) against the sorted log."""
        return training_batches(rows, log, self.cfg.features, min(self.cfg.batch_size, rows.num_rows), seed,
                                self._negatives if self.sampler else None)

    def _negatives(self) -> tuple[np.ndarray, np.ndarray]:
        item_rows, cat_rows, log_q = self.sampler.draw(self.cfg.num_sampled)
        self.draws.append(log_q)
        return item_rows, cat_rows

    def __call__(self, model: torch.nn.Module, batch) -> torch.Tensor:
        out = model(batch.sparse)
        users = label_aware(out.interests, out.targets, self.cfg.label_power)
        target_rows = batch.sparse["target_item"].values()
        if self.sampler is None:
            return in_batch_loss(users, out.targets, self.in_batch_log_q[target_rows], target_rows)
        neg_log_q = torch.from_numpy(self.draws.pop().astype(np.float32))
        target_log_q = torch.from_numpy(
            self.sampler.log_expected_count(target_rows.numpy(), self.cfg.num_sampled).astype(np.float32))
        return sampled_loss(users, out.targets, target_log_q, out.negatives, neg_log_q, target_rows,
                            batch.sparse["neg_item"].values())


def build_retriever(cfg: RetrievalConfig) -> Retriever:
    """The retriever on device "meta", for sharded_session (world size 1)."""
    if dist.is_initialized() and dist.get_world_size() != 1:
        raise RuntimeError(f"the retriever trains at world size 1; the initialized process group has "
                           f"{dist.get_world_size()} ranks")
    return Retriever(cfg.retriever_config(), sparse_device=torch.device("meta"))


def train_retriever(examples: pa.Table, log: pa.Table, cfg: RetrievalConfig,
                    validate: Callable[[dict[str, torch.Tensor]], float] | None = None,
                    progress: Callable[[int, float], None] | None = None) -> RetrievalResult:
    """Train on the positive next-item examples for cfg.steps batches.

    ``validate(state_dict) -> score`` (higher is better), called every cfg.validate_every steps
    and at the end, selects the returned state; it must read validation data, never test data."""
    _check_columns(examples, ("user_id", "item_id", "category_id", "timestamp"), "examples")
    _check_columns(log, LOG_COLUMNS, "log")
    log = sort_log(log)
    rows = positives(examples)
    if rows.num_rows == 0:
        raise ValueError("examples hold no positive (label 1) rows to train on")
    if rows.num_rows < cfg.batch_size:
        raise ValueError(f"{rows.num_rows} positive examples cannot fill one batch of {cfg.batch_size}")
    loss_of = RetrievalLoss(rows, cfg)
    with sharded_session(lambda: build_retriever(cfg), lambda m: m.ec.parameters(), cfg) as session:
        model, optimizer = session.model, session.optimizer
        batches = loss_of.batches(rows, log, cfg.seed)
        losses: list[float] = []
        validation: list[tuple[int, float]] = []
        best: tuple[float, int, dict] | None = None
        seconds = 0.0
        for step in range(1, cfg.steps + 1):
            start = time.perf_counter()
            model.train()
            batch = next(batches)
            optimizer.zero_grad()
            value = session.step(loss_of(model, batch), step)
            seconds += time.perf_counter() - start
            losses.append(value)
            if progress is not None and (step % cfg.progress_every == 0 or step == cfg.steps):
                progress(step, value)
            if validate is not None and ((cfg.validate_every and step % cfg.validate_every == 0)
                                         or step == cfg.steps):
                state = unsharded_state_dict(model)
                score = float(validate(state))
                validation.append((step, score))
                if best is None or score > best[0]:
                    best = (score, step, state)
        if best is None:
            best = (math.nan, cfg.steps, unsharded_state_dict(model))
    return RetrievalResult(state_dict=best[2], config=cfg, losses=losses, train_seconds=seconds,
                           samples_per_s=cfg.steps * cfg.batch_size / seconds, validation=validation,
                           best_step=best[1])


def serving_model(state_dict: dict[str, torch.Tensor], cfg: RetrievalConfig) -> Retriever:
    """An unsharded CPU model holding exactly ``state_dict`` (strict)."""
    model = Retriever(cfg.retriever_config(), sparse_device=torch.device("meta")).to_empty(device="cpu")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def user_vectors(state_dict: dict[str, torch.Tensor], cfg: RetrievalConfig, users: np.ndarray,
                 times: np.ndarray, log: pa.Table, batch_size: int = 1024) -> np.ndarray:
    """Interest vectors of each user from the behaviors strictly before its time.

    Args:
        state_dict: an unsharded Retriever state (RetrievalResult.state_dict, or a registry's).
        users, times: [U] hashed user IDs and request times (ms).
        log: the behavior log (sorted or not).

    Returns:
        [U, K, d] float32 (K = 1 for the single model).

    Example:
        >>> user_vectors(result.state_dict, cfg, np.array([7]), np.array([t]), log).shape  # doctest: +SKIP
        (1, 4, 32)
    """
    _check_columns(log, LOG_COLUMNS, "log")
    model = serving_model(state_dict, cfg)
    out = [np.zeros((0, cfg.retriever_config().num_interests, cfg.embedding_dim), np.float32)]
    with threads(cfg.threads), torch.no_grad():
        for batch in history_batches(users, times, sort_log(log), cfg.features, batch_size):
            out.append(model(batch.sparse).interests.numpy())
    return np.concatenate(out)


def item_vectors(state_dict: dict[str, torch.Tensor], cfg: RetrievalConfig, item_ids: np.ndarray,
                 category_ids: np.ndarray) -> np.ndarray:
    """[C, d] vectors of candidate items (raw hashed IDs): item row + category row, as in training."""
    items = state_dict["ec.embeddings.item.weight"][fold(item_ids, cfg.item_table_size)]
    cats = state_dict["ec.embeddings.category.weight"][fold(category_ids, cfg.category_table_size)]
    return (items + cats).numpy()


def retrieve(interests: np.ndarray, candidates: np.ndarray, candidate_ids: np.ndarray, n: int,
             exclude: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` candidates per user: each interest takes its top n by inner product, the K lists
    are merged, a candidate found by several interests keeps its best score.

    interests [U, K, d], candidates [C, d], candidate_ids [C] (distinct). ``exclude`` = (user
    indices, item IDs) pairs never to return (e.g. items already seen). Returns (ids [U, n],
    scores [U, n]), best first; slots beyond the available candidates hold id -1, score -inf."""
    interests, candidates = torch.as_tensor(interests), torch.as_tensor(candidates)
    candidate_ids = np.asarray(candidate_ids, np.int64)
    if interests.dim() != 3 or candidates.dim() != 2 or interests.shape[2] != candidates.shape[1]:
        raise ValueError(f"need interests [U, K, d] and candidates [C, d]; got {tuple(interests.shape)} "
                         f"and {tuple(candidates.shape)}")
    if len(candidate_ids) != candidates.shape[0] or len(np.unique(candidate_ids)) != len(candidate_ids):
        raise ValueError("candidate_ids must be distinct, one per candidate row")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    u, k = interests.shape[:2]
    scores = torch.einsum("ukd,cd->ukc", interests.float(), candidates.float())
    if exclude is not None:
        order = np.argsort(candidate_ids)
        users, items = np.asarray(exclude[0], np.int64), np.asarray(exclude[1], np.int64)
        if len(users) != len(items) or (len(users) and (users.min() < 0 or users.max() >= u)):
            raise ValueError(f"exclude needs (user index in [0, {u}), item ID) pairs of equal length")
        pos = np.minimum(np.searchsorted(candidate_ids[order], items), len(order) - 1)
        known = candidate_ids[order][pos] == items
        scores[torch.from_numpy(users[known]), :, torch.from_numpy(order[pos[known]])] = -math.inf
    top = min(n, candidates.shape[0])
    per_scores, per_index = scores.topk(top, dim=2)  # [U, K, top]
    flat_scores, flat_index = per_scores.reshape(u, k * top), per_index.reshape(u, k * top)
    # Keep each candidate's first (best-scoring) copy: sort by score, then stably by index.
    by_score = flat_scores.argsort(dim=1, descending=True, stable=True)
    s1, i1 = flat_scores.gather(1, by_score), flat_index.gather(1, by_score)
    by_index = i1.argsort(dim=1, stable=True)
    s2, i2 = s1.gather(1, by_index), i1.gather(1, by_index)
    repeat = torch.zeros_like(i2, dtype=torch.bool)
    repeat[:, 1:] = i2[:, 1:] == i2[:, :-1]
    s2 = s2.masked_fill(repeat | torch.isinf(s2), -math.inf)
    best_scores, best = s2.topk(min(n, k * top), dim=1)
    ids = np.where(np.isinf(best_scores.numpy()), -1, candidate_ids[i2.gather(1, best).numpy()])
    out_ids = np.full((u, n), -1, np.int64)
    out_scores = np.full((u, n), -np.inf, np.float32)
    out_ids[:, : ids.shape[1]], out_scores[:, : ids.shape[1]] = ids, best_scores.numpy()
    return out_ids, out_scores


def _check_columns(table: pa.Table, names, what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {table.column_names}")
