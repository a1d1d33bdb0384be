"""The point-in-time popularity baselines count only behaviors strictly before each example."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from trainers.baselines import ItemCounts, baseline_scores, popularity

DAY = 86_400_000


def log_of(rows):
    return pa.table({"item_id": pa.array([i for i, _ in rows], pa.int64()),
                     "timestamp": pa.array([t for _, t in rows], pa.int64())})


def examples_of(rows):
    return pa.table({"item_id": pa.array([i for i, _ in rows], pa.int64()),
                     "timestamp": pa.array([t for _, t in rows], pa.int64())})


def naive(log_rows, item, ts, window=None):
    return sum(1 for i, t in log_rows if i == item and t < ts and (window is None or t >= ts - window))


def test_counts_are_strictly_before_and_within_the_window():
    rng = np.random.default_rng(0)
    log_rows = [(int(rng.integers(20)), int(rng.integers(30 * DAY))) for _ in range(2_000)]
    queries = [(int(rng.integers(22)), int(rng.integers(32 * DAY))) for _ in range(300)]
    queries += [log_rows[0], log_rows[1]]  # a query at a behavior's exact time does not count it
    counts = ItemCounts(log_of(log_rows[::-1]))  # any log order
    items, times = np.array([q[0] for q in queries]), np.array([q[1] for q in queries])
    assert counts.before(items, times).tolist() == [naive(log_rows, i, t) for i, t in queries]
    assert counts.before(items, times, 7 * DAY).tolist() == [naive(log_rows, i, t, 7 * DAY) for i, t in queries]


def test_scores_order_by_count_and_an_unborn_item_scores_zero():
    log = log_of([(1, 10), (1, 20), (1, 30), (2, 15), (3, 100)])
    ex = examples_of([(1, 31), (2, 31), (3, 31), (1, 5)])
    got = popularity(ItemCounts(log), ex)
    assert got.tolist() == [3 / 13, 1 / 11, 0.0, 0.0]
    both = baseline_scores(ItemCounts(log), ex, window_ms=12)
    assert both["popularity_recent"].tolist() == [2 / 12, 0.0, 0.0, 0.0]  # [19, 31) holds 20 and 30, not 15
