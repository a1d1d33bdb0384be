"""Table sizes from the data: enough rows for the distinct IDs, and collisions counted exactly."""
from __future__ import annotations

import numpy as np
import pytest

from features.ids import fold
from trainers.sizing import collisions, rows_for


def test_rows_grow_with_the_ids_and_the_headroom():
    assert rows_for(1_000, 8.0) >= 8_001 and rows_for(1_000, 8.0) % 4 == 0
    assert rows_for(0) == 4 and rows_for(10, 1.0) == 12
    with pytest.raises(ValueError, match="headroom"):
        rows_for(10, 0.5)


def test_collisions_count_every_id_that_shares_a_row():
    rows = 11  # fold: id % 10 + 1
    ids = np.array([3, 13, 23, 4, 5, 15, 7, 3, 3])  # rows: 4 4 4 5 6 6 8
    got = collisions(ids, rows)
    assert got == {"distinct": 7, "rows": 11, "shared_ids": 5, "shared_fraction": 5 / 7}
    rng = np.random.default_rng(0)
    many = rng.integers(0, 2**62, 5_000)
    folded = fold(many, rows_for(5_000))
    naive = sum(1 for r in folded if np.sum(folded == r) > 1)
    assert collisions(many, rows_for(5_000))["shared_ids"] == naive
    assert 0.08 < naive / 5_000 < 0.16  # about 1 - exp(-1/8)
