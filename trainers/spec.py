"""What every trainer's batches share: the feature spec (table sizes, history cap) and the log check."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# Rows converted per sequences_as_of call: one pass over the log serves many batches.
CHUNK_BATCHES = 32


@dataclass(frozen=True)
class FeatureSpec:
    """How examples become sparse features: table sizes and the history cap."""

    item_table_size: int
    category_table_size: int
    max_len: int

    def __post_init__(self) -> None:
        for name in ("item_table_size", "category_table_size"):
            if getattr(self, name) < 2:
                raise ValueError(f"FeatureSpec.{name} must be >= 2 (row 0 is padding), got {getattr(self, name)}")
        if self.max_len < 1:
            raise ValueError(f"FeatureSpec.max_len must be >= 1, got {self.max_len}")


def check_sorted(log: pa.Table) -> None:
    """Raise if the log is not sorted by (user_id, timestamp), as pit.sort_log leaves it."""
    users = log.column("user_id").to_numpy()
    times = log.column("timestamp").to_numpy()
    same_user = users[1:] == users[:-1]
    bad = (users[1:] < users[:-1]) | (same_user & (times[1:] < times[:-1]))
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise ValueError(f"behavior log is not sorted by (user_id, timestamp) at row {row}; "
                         "pass it through features.pit.sort_log first")
