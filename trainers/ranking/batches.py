"""Arrow -> KeyedJaggedTensor: the one conversion point between tables and models.

An example row (user_id, item_id, category_id, timestamp, label) gets its
history as a slice of the sorted behavior log (features.pit.sequences_as_of:
the user's behaviors strictly before the example's time, the last max_len).
IDs are folded into table rows with features.ids.fold (row 0 = padding), and
each behavior's age at the example's time is bucketed with features.time.

Layout of ``Batch.sparse`` for 3 rows whose histories hold 2, 0 and 1
behaviors (keys in SPARSE_KEYS order, values key-major)::

    target_item      1 1 1        one value per row
    target_category  1 1 1
    target_gap       1 1 1        the target's own gap bucket (gap 0: bucket 1)
    hist_item        2 0 1        jagged; an empty history is length 0
    hist_category    2 0 1
    hist_gap         2 0 1        gap bucket of each behavior
    lengths = [1,1,1, 1,1,1, 1,1,1, 2,0,1, 2,0,1, 2,0,1]

The model's search units (trainers/ranking/search.py) cut every ``hist_*`` key to the same kept
behaviors, so every history feature must be named ``hist_*`` and every other key must hold
one value per row.

Everything is vectorized: numpy and Arrow compute, no per-row Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from features.ids import fold
from features.pit import sequences_as_of
from features.time import GAP_BUCKETS, gap_bucket
from trainers.distributed import rank_and_world
from trainers.item_vectors import ItemVectors
from trainers.spec import CHUNK_BATCHES, FeatureSpec, check_sorted

SPARSE_KEYS = ("target_item", "target_category", "target_gap", "hist_item", "hist_category", "hist_gap")
GAP_TABLE_SIZE = GAP_BUCKETS
@dataclass(frozen=True)
class Batch:
    """Sparse features (KJT over SPARSE_KEYS), float labels, and, when the model reads frozen
    item vectors, their table rows: the n targets' rows, then the histories' rows (hist_item's
    lengths). Vector rows stay out of the KJT: they index a frozen buffer, not a sharded table."""

    sparse: KeyedJaggedTensor
    labels: torch.Tensor
    vector_rows: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        rows = None if self.vector_rows is None else self.vector_rows.to(device=device, non_blocking=non_blocking)
        return Batch(self.sparse.to(device=torch.device(device), non_blocking=non_blocking),
                     self.labels.to(device=device, non_blocking=non_blocking), rows)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def to_batch(examples: pa.Table, log: pa.Table, spec: FeatureSpec, vectors: ItemVectors | None = None) -> Batch:
    """Convert examples (EXAMPLE_SCHEMA columns) against the sorted log into one Batch."""
    users = examples.column("user_id").to_numpy()
    times = examples.column("timestamp").to_numpy()
    seq = sequences_as_of(log, users, times, spec.max_len)
    return _assemble(examples, seq, spec, vectors)


def request_batch(history: dict | None, items: np.ndarray, categories: np.ndarray, now_ms: int, spec: FeatureSpec,
                  vectors: ItemVectors | None = None) -> Batch:
    """One user's request as a Batch: each candidate (hashed item, category) against the user's
    behaviors before now_ms, from the online lifelong sequence row (seq_item_ids,
    seq_category_ids, seq_timestamps, oldest first; None: no history), cut to spec.max_len as in training."""
    n = len(items)

    def column(name: str) -> np.ndarray:  # lists or numpy arrays (read_rows(..., arrays=True))
        values = None if history is None else history.get(name)
        return np.asarray([] if values is None else values, np.int64)
    times = column("seq_timestamps")
    keep = np.flatnonzero(times < now_ms)[-spec.max_len:]
    seq = {name: column(name)[keep] for name in ("seq_item_ids", "seq_category_ids", "seq_timestamps")}
    table = pa.table({name: pa.array([values] * n, pa.list_(pa.int64())) for name, values in seq.items()})
    table = table.append_column("seq_length", pa.array(np.full(n, len(keep), np.int32)))
    examples = pa.table({"item_id": np.asarray(items, np.int64), "category_id": np.asarray(categories, np.int64),
                         "timestamp": np.full(n, now_ms, np.int64), "label": np.zeros(n, np.int8)})
    return _assemble(examples, table, spec, vectors)


def _flat(table: pa.Table, name: str) -> np.ndarray:
    return pc.list_flatten(table.column(name)).to_numpy()


def _assemble(examples: pa.Table, seq: pa.Table, spec: FeatureSpec, vectors: ItemVectors | None = None) -> Batch:
    n = examples.num_rows
    hist_len = seq.column("seq_length").to_numpy().astype(np.int64)
    gaps = np.repeat(examples.column("timestamp").to_numpy(), hist_len) - _flat(seq, "seq_timestamps")
    values = np.concatenate([
        fold(examples.column("item_id").to_numpy(), spec.item_table_size),
        fold(examples.column("category_id").to_numpy(), spec.category_table_size),
        gap_bucket(np.zeros(n, dtype=np.int64)),
        fold(_flat(seq, "seq_item_ids"), spec.item_table_size),
        fold(_flat(seq, "seq_category_ids"), spec.category_table_size),
        gap_bucket(gaps),
    ])
    ones = np.ones(n, dtype=np.int64)
    lengths = np.concatenate([ones, ones, ones, hist_len, hist_len, hist_len])
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=list(SPARSE_KEYS), values=torch.from_numpy(values), lengths=torch.from_numpy(lengths))
    labels = torch.from_numpy(examples.column("label").to_numpy().astype(np.float32))
    rows = None
    if vectors is not None:
        rows = torch.from_numpy(np.concatenate([vectors.rows(examples.column("item_id").to_numpy()),
                                                vectors.rows(_flat(seq, "seq_item_ids"))]))
    return Batch(sparse, labels, rows)


def epoch_batches(examples: pa.Table, log: pa.Table, spec: FeatureSpec, batch_size: int,
                  seed: int | None = None, drop_last: bool = False,
                  vectors: ItemVectors | None = None) -> Iterator[Batch]:
    """One pass over the examples: shuffled by ``seed``, or in table order when seed is None."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = examples.num_rows
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    if drop_last:
        order = order[: n - n % batch_size]
    chunk = batch_size * CHUNK_BATCHES
    for c in range(0, len(order), chunk):
        rows = examples.take(pa.array(order[c:c + chunk]))
        seq = sequences_as_of(log, rows.column("user_id").to_numpy(), rows.column("timestamp").to_numpy(),
                              spec.max_len)
        for b in range(0, rows.num_rows, batch_size):
            yield _assemble(rows.slice(b, batch_size), seq.slice(b, batch_size), spec, vectors)


def training_batches(examples: pa.Table, log: pa.Table, spec: FeatureSpec, batch_size: int,
                     seed: int, vectors: ItemVectors | None = None) -> Iterator[Batch]:
    """Endless full batches; each epoch is reshuffled with its own seed drawn from ``seed``."""
    if examples.num_rows < batch_size:
        raise ValueError(f"{examples.num_rows} training examples cannot fill one batch of {batch_size}")
    check_sorted(log)
    seeds = np.random.default_rng(seed)
    while True:
        yield from epoch_batches(examples, log, spec, batch_size, int(seeds.integers(2**31)), drop_last=True,
                                 vectors=vectors)


def eval_batches(examples: pa.Table, log: pa.Table, spec: FeatureSpec, batch_size: int,
                 vectors: ItemVectors | None = None) -> Iterator[Batch]:
    """Every example once, in table order (scores line up with the table's rows)."""
    check_sorted(log)
    return epoch_batches(examples, log, spec, batch_size, seed=None, vectors=vectors)


def rank_batches(examples: pa.Table, log: pa.Table, spec: FeatureSpec, batch_size: int, seed: int,
                 start_step: int = 0, vectors: ItemVectors | None = None) -> Iterator[Batch]:
    """This rank's slice of each global training batch, from global step ``start_step`` on.

    The global batches are those of trainers.ranking.batches.training_batches (epochs reshuffled with
    seeds drawn from ``seed``, the last partial batch dropped), so one rank alone sees exactly
    them, and a resumed run picks up at the batch it stopped before. Rank r of N gets rows
    [r*b, (r+1)*b) of each global batch, b = batch_size / N."""
    rank, world = rank_and_world()
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the world size {world}")
    n, b = examples.num_rows, batch_size // world
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"{n} training examples cannot fill one batch of {batch_size}")
    check_sorted(log)
    seeds = np.random.default_rng(seed)
    epoch, offset = divmod(start_step, per_epoch)
    for _ in range(epoch):  # skip the seeds of finished epochs
        seeds.integers(2**31)
    while True:
        order = np.random.default_rng(int(seeds.integers(2**31))).permutation(n)[: per_epoch * batch_size]
        mine = order.reshape(per_epoch, batch_size)[offset:, rank * b:(rank + 1) * b].ravel()
        yield from epoch_batches(examples.take(pa.array(mine)), log, spec, b, seed=None, vectors=vectors)
        offset = 0
