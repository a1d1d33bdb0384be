"""Sampled softmax for retrieval: in-batch negatives or log-uniform sampled negatives, with logQ.

A full softmax over the item table, p(t | u) = exp(u.e_t) / sum_j exp(u.e_j), is replaced by a
softmax over the positive and a few negatives drawn from a proposal Q. Drawing items with
unequal probability biases the estimate toward frequent items; the logQ correction subtracts
log Q(j) from every logit, positive included (Bengio and Senecal 2008, "Adaptive Importance
Sampling to Accelerate Training of a Neural Probabilistic Language Model"; Jean et al. 2015,
"On Using Very Large Target Vocabulary for Neural Machine Translation"):

    logit_j = u . e_j - log Q(j)

- In-batch negatives (Yi et al. 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus
  Item Recommendations", RecSys; the corrected logit s(x_i, y_j) - log p_j): the other rows'
  targets are the negatives, so Q(j) is item j's frequency among training targets (a constant
  factor, the batch size, cancels).
- Log-uniform negatives: items ranked by training frequency (rank 0 = most frequent) are drawn
  with replacement from P(r) = log((r + 2) / (r + 1)) / log(n + 1), the Zipfian proposal of
  TensorFlow's log_uniform_candidate_sampler; Q(j) is the expected count S * P(rank(j)).

A negative that is the row's own positive (an "accidental hit") is masked out.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MASKED = -1e9  # logit of a masked accidental hit: finite, so no NaN reaches the gradient


def in_batch_loss(users: torch.Tensor, targets: torch.Tensor, target_log_q: torch.Tensor,
                  target_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of row i's target among all B targets of the batch.

    users [B, d] (label-aware user vectors), targets [B, d], target_log_q [B] = log Q of each
    target; target_ids [B] (table rows) mask other rows holding the same item."""
    logits = users @ targets.T - target_log_q.unsqueeze(0)
    if target_ids is not None:
        same = target_ids.unsqueeze(0) == target_ids.unsqueeze(1)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, MASKED)
    return F.cross_entropy(logits, torch.arange(len(users), device=users.device))


def sampled_loss(users: torch.Tensor, targets: torch.Tensor, target_log_q: torch.Tensor,
                 negatives: torch.Tensor, negative_log_q: torch.Tensor,
                 target_ids: torch.Tensor | None = None, negative_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each row's target against S shared sampled negatives.

    users [B, d], targets [B, d], target_log_q [B]; negatives [S, d], negative_log_q [S];
    with ids (table rows) given, a negative equal to the row's target is masked."""
    positive = (users * targets).sum(-1, keepdim=True) - target_log_q.unsqueeze(1)
    sampled = users @ negatives.T - negative_log_q.unsqueeze(0)
    if target_ids is not None and negative_ids is not None:
        sampled = sampled.masked_fill(target_ids.unsqueeze(1) == negative_ids.unsqueeze(0), MASKED)
    logits = torch.cat([positive, sampled], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long, device=users.device))


class ItemFrequency:
    """Training-target counts per item-table row, with each row's category row.

    ``rows`` / ``category_rows`` are the folded table rows of every training target (one entry per
    example). Rows never seen as a target have frequency 0 and log Q of -inf: they are never drawn."""

    def __init__(self, rows: np.ndarray, category_rows: np.ndarray, table_size: int):
        rows = np.asarray(rows, dtype=np.int64)
        category_rows = np.asarray(category_rows, dtype=np.int64)
        if len(rows) == 0:
            raise ValueError("ItemFrequency needs at least one training target")
        if len(rows) != len(category_rows):
            raise ValueError(f"rows and category_rows differ in length: {len(rows)} vs {len(category_rows)}")
        if rows.min() < 0 or rows.max() >= table_size:
            raise ValueError(f"item rows must lie in [0, {table_size}); fold IDs with features.ids.fold first")
        self.counts = np.bincount(rows, minlength=table_size).astype(np.float64)
        self.table_size = table_size
        # The category row of each item row: the one seen last for it (rows shared by folded
        # IDs of different categories are declared collisions).
        self.category_of = np.zeros(table_size, dtype=np.int64)
        self.category_of[rows] = category_rows

    def log_q(self) -> torch.Tensor:
        """log of each row's share of training targets, [table_size] (the in-batch Q)."""
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self.counts / self.counts.sum()).astype(np.float32))


class LogUniformSampler:
    """Draw negatives from the rows seen as targets, ranked by frequency, with log-uniform P(rank)."""

    def __init__(self, frequency: ItemFrequency, seed: int):
        seen = np.flatnonzero(frequency.counts > 0)
        # Most frequent first; ties broken by row so the ranking is deterministic.
        self.rows = seen[np.lexsort((seen, -frequency.counts[seen]))]
        self.category_rows = frequency.category_of[self.rows]
        self.n = len(self.rows)
        self.rank_of = np.full(frequency.table_size, -1, dtype=np.int64)
        self.rank_of[self.rows] = np.arange(self.n)
        self.rng = np.random.default_rng(seed)

    def probability(self, ranks: np.ndarray) -> np.ndarray:
        """P(rank) = log((r + 2) / (r + 1)) / log(n + 1); sums to 1 over r = 0 .. n - 1."""
        r = np.asarray(ranks, dtype=np.float64)
        return np.log((r + 2.0) / (r + 1.0)) / np.log(self.n + 1.0)

    def sample(self, num: int) -> np.ndarray:
        """``num`` ranks drawn with replacement (inverse CDF: r = floor(exp(U log(n + 1))) - 1)."""
        r = np.floor(np.exp(self.rng.random(num) * np.log(self.n + 1.0))).astype(np.int64) - 1
        return np.clip(r, 0, self.n - 1)

    def log_expected_count(self, rows: np.ndarray, num: int) -> np.ndarray:
        """log(num * P(rank(row))): the logQ of each row when ``num`` negatives are drawn."""
        ranks = self.rank_of[np.asarray(rows, dtype=np.int64)]
        if (ranks < 0).any():
            bad = np.asarray(rows)[ranks < 0][:5].tolist()
            raise ValueError(f"rows {bad} were never training targets, so the sampler has no Q for them")
        return np.log(num * self.probability(ranks))

    def draw(self, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item rows, category rows, log expected counts) of ``num`` sampled negatives."""
        ranks = self.sample(num)
        rows = self.rows[ranks]
        return rows, self.category_rows[ranks], np.log(num * self.probability(ranks))
