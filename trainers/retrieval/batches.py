"""Next-item examples + the sorted behavior log -> KeyedJaggedTensor batches for the retriever.

An example row (user_id, item_id, category_id, timestamp[, label]) is a positive next item;
rows with label 0 (the ranker's sampled negatives) are dropped: the retriever draws its own
negatives (trainers.retrieval.sampled_softmax). The history is the user's behaviors strictly before the
example's time, the last max_len (features.pit.sequences_as_of); IDs are folded into table rows
with features.ids.fold (row 0 = padding).

Layout of ``RetrievalBatch.sparse`` for 3 rows whose histories hold 2, 0 and 1 behaviors, with
S = 4 shared sampled negatives (keys in RETRIEVAL_KEYS order, values key-major)::

    hist_item        2 0 1        jagged; an empty history is length 0
    hist_category    2 0 1
    target_item      1 1 1        one per row (0 0 0 when serving: no target)
    target_category  1 1 1
    neg_item         4 0 0        the shared negatives ride on row 0 (0 0 0 without)
    neg_category     4 0 0
    lengths = [2,0,1, 2,0,1, 1,1,1, 1,1,1, 4,0,0, 4,0,0]

Every key is always present, so sharded and unsharded tables see the same features.
Vectorized: numpy and Arrow compute, no per-row Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from features.ids import fold
from features.pit import sequences_as_of
from trainers.spec import CHUNK_BATCHES, FeatureSpec, check_sorted

RETRIEVAL_KEYS = ("hist_item", "hist_category", "target_item", "target_category", "neg_item", "neg_category")
# Called once per batch: (item rows, category rows) of the shared negatives, already folded.
NegativeSource = Callable[[], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RetrievalBatch:
    """Sparse features over RETRIEVAL_KEYS for ``len(batch)`` users."""

    sparse: KeyedJaggedTensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> RetrievalBatch:
        return RetrievalBatch(self.sparse.to(device=torch.device(device), non_blocking=non_blocking))

    def __len__(self) -> int:
        return int(self.sparse.stride())


def positives(examples: pa.Table) -> pa.Table:
    """The rows that are next items: label 1, or every row when there is no label column."""
    if "label" not in examples.column_names:
        return examples
    return examples.filter(pc.equal(examples.column("label"), 1))


def assemble(seq: pa.Table, spec: FeatureSpec, target_items: np.ndarray | None = None,
             target_categories: np.ndarray | None = None,
             negatives: tuple[np.ndarray, np.ndarray] | None = None) -> RetrievalBatch:
    """One batch from histories (sequences_as_of output) and optional raw target IDs and
    folded negative rows."""
    n = seq.num_rows
    hist_len = seq.column("seq_length").to_numpy().astype(np.int64)
    flat_items = pc.list_flatten(seq.column("seq_item_ids")).to_numpy()
    flat_cats = pc.list_flatten(seq.column("seq_category_ids")).to_numpy()
    if target_items is None:
        t_items = t_cats = np.zeros(0, np.int64)
        t_len = np.zeros(n, np.int64)
    else:
        if len(target_items) != n or target_categories is None or len(target_categories) != n:
            raise ValueError(f"need one target item and category per history row ({n})")
        t_items, t_cats = fold(target_items, spec.item_table_size), fold(target_categories, spec.category_table_size)
        t_len = np.ones(n, np.int64)
    if negatives is None:
        n_items = n_cats = np.zeros(0, np.int64)
    else:
        n_items, n_cats = np.asarray(negatives[0], np.int64), np.asarray(negatives[1], np.int64)
    if len(n_items) != len(n_cats):
        raise ValueError(f"negative item and category rows differ in length: {len(n_items)} vs {len(n_cats)}")
    if len(n_items) and (n_items.min() < 1 or n_items.max() >= spec.item_table_size
                         or n_cats.min() < 0 or n_cats.max() >= spec.category_table_size):
        raise ValueError("negative rows lie outside the tables; draw them from trainers.retrieval.sampled_softmax")
    if len(n_items) and n == 0:
        raise ValueError("an empty batch cannot carry negatives")
    n_len = np.zeros(n, np.int64)
    if n:
        n_len[0] = len(n_items)
    values = np.concatenate([fold(flat_items, spec.item_table_size), fold(flat_cats, spec.category_table_size),
                             t_items, t_cats, n_items, n_cats])
    lengths = np.concatenate([hist_len, hist_len, t_len, t_len, n_len, n_len])
    return RetrievalBatch(KeyedJaggedTensor.from_lengths_sync(
        keys=list(RETRIEVAL_KEYS), values=torch.from_numpy(values), lengths=torch.from_numpy(lengths)))


def to_retrieval_batch(examples: pa.Table, log: pa.Table, spec: FeatureSpec,
                       negatives: tuple[np.ndarray, np.ndarray] | None = None) -> RetrievalBatch:
    """All positive examples (EXAMPLE_SCHEMA columns) against the sorted log, as one batch."""
    rows = positives(examples)
    seq = sequences_as_of(log, rows.column("user_id").to_numpy(), rows.column("timestamp").to_numpy(), spec.max_len)
    return assemble(seq, spec, rows.column("item_id").to_numpy(), rows.column("category_id").to_numpy(), negatives)


def history_batches(users: np.ndarray, times: np.ndarray, log: pa.Table, spec: FeatureSpec,
                    batch_size: int) -> Iterator[RetrievalBatch]:
    """Serving input: each user's history before its time, no target, in the given order."""
    check_sorted(log)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    users, times = np.asarray(users, np.int64), np.asarray(times, np.int64)
    for b in range(0, len(users), batch_size):
        yield assemble(sequences_as_of(log, users[b:b + batch_size], times[b:b + batch_size], spec.max_len), spec)


def training_batches(examples: pa.Table, log: pa.Table, spec: FeatureSpec, batch_size: int, seed: int,
                     negatives: NegativeSource | None = None) -> Iterator[RetrievalBatch]:
    """Endless full batches of the positive examples, each epoch reshuffled with a seed drawn from
    ``seed``; ``negatives`` (if given) is called once per batch."""
    rows = positives(examples)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if rows.num_rows < batch_size:
        raise ValueError(f"{rows.num_rows} positive examples cannot fill one batch of {batch_size}")
    check_sorted(log)
    seeds = np.random.default_rng(seed)
    n = rows.num_rows
    chunk = batch_size * CHUNK_BATCHES
    while True:
        order = np.random.default_rng(int(seeds.integers(2**31))).permutation(n)[: n - n % batch_size]
        for c in range(0, len(order), chunk):
            part = rows.take(pa.array(order[c:c + chunk]))
            seq = sequences_as_of(log, part.column("user_id").to_numpy(), part.column("timestamp").to_numpy(),
                                  spec.max_len)
            items, cats = part.column("item_id").to_numpy(), part.column("category_id").to_numpy()
            for b in range(0, part.num_rows, batch_size):
                yield assemble(seq.slice(b, batch_size), spec, items[b:b + batch_size], cats[b:b + batch_size],
                               None if negatives is None else negatives())
