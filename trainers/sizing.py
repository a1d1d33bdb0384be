"""Embedding table sizes from the data: the distinct IDs seen, with headroom, and the collisions left.

IDs are 63-bit hashes folded into a table by modulo (features.ids.fold), so two IDs can share a
row. With n distinct IDs in r rows about 1 - exp(-n / r) of them share one: 35% of 8,687 items in
the old fixed 20,000 rows, about 12% at the default headroom of 8 rows per ID.
"""
from __future__ import annotations

import math

import numpy as np

from features.ids import fold

HEADROOM = 8.0  # table rows per distinct ID seen


def rows_for(distinct: int, headroom: float = HEADROOM) -> int:
    """Rows for ``distinct`` IDs (row 0 is padding), rounded up to a multiple of 4 (fbgemm's row alignment)."""
    if not headroom >= 1:
        raise ValueError(f"headroom must be at least 1 row per ID, got {headroom}")
    rows = max(2, math.ceil(distinct * headroom) + 1)
    return rows + (-rows % 4)


def collisions(ids: np.ndarray, rows: int) -> dict:
    """{distinct, rows, shared_ids, shared_fraction}: how many distinct IDs share their row with another."""
    distinct = np.unique(np.asarray(ids, np.int64))
    _, inverse, per_row = np.unique(fold(distinct, rows), return_inverse=True, return_counts=True)
    shared = int(np.sum(per_row[inverse] > 1))
    return {"distinct": int(len(distinct)), "rows": int(rows), "shared_ids": shared,
            "shared_fraction": shared / len(distinct) if len(distinct) else 0.0}
