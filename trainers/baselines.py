"""Model-free baselines, point in time: how often the item was taken before the example's time.

``popularity``: the item's behaviors (any user's) strictly before the example, over all history;
``popularity_recent``: the same over the ``window_ms`` before it. Both read only the behavior log
as it stood at each example's time, so they are honest on any split and on any labeling (an item
that appears after the example scores 0). Scores are count / (count + 10): a probability-like
number whose order is the count's (AUC and GAUC read only the order).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.pit import counts_before, key_time_order

RECENT_WINDOW_MS = 7 * 86_400_000  # the recent window: a week


class ItemCounts:
    """The behavior log sorted by (item, time): each item's count before any time in one search."""

    def __init__(self, log: pa.Table):
        items, times = log.column("item_id").to_numpy(), log.column("timestamp").to_numpy()
        order = key_time_order(items, times) if len(items) else np.zeros(0, np.int64)
        self.items, self.times = items[order], times[order]

    def before(self, items, times, window_ms: int | None = None) -> np.ndarray:
        """Each (item, time)'s behaviors strictly before ``time`` (and at or after time - window_ms)."""
        times = np.asarray(times, np.int64)
        counts = counts_before(self.items, self.times, items, times)
        if window_ms is not None:
            counts = counts - counts_before(self.items, self.times, items, times - window_ms)
        return counts


def popularity(counts: ItemCounts, examples: pa.Table, window_ms: int | None = None) -> np.ndarray:
    """The point-in-time popularity score of each example's item (see the module docstring)."""
    n = counts.before(examples.column("item_id").to_numpy(), examples.column("timestamp").to_numpy(), window_ms)
    return n / (n + 10.0)


def baseline_scores(counts: ItemCounts, examples: pa.Table,
                    window_ms: int = RECENT_WINDOW_MS) -> dict[str, np.ndarray]:
    """{"popularity": all history, "popularity_recent": the window}: what every ranker is reported beside."""
    return {"popularity": popularity(counts, examples), "popularity_recent": popularity(counts, examples, window_ms)}
