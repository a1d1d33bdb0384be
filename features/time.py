"""Time features: the gap between a behavior and the request, bucketed on a log scale."""
from __future__ import annotations

import numpy as np

GAP_BUCKETS = 32  # bucket 0 is padding; 1 is "no gap"; the last bucket takes everything beyond


def gap_bucket(gap_ms: np.ndarray) -> np.ndarray:
    """Bucket = 1 + floor(log2(1 + gap in seconds)), capped at GAP_BUCKETS - 1."""
    seconds = np.maximum(np.asarray(gap_ms, dtype=np.float64), 0.0) / 1000.0
    return np.minimum(1 + np.floor(np.log2(1.0 + seconds)), GAP_BUCKETS - 1).astype(np.int64)
