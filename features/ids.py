"""Stable ID mapping: a raw string or integer ID becomes a non-negative int64.

Every engine (Beam, Flink, trainer, serving) calls this module, so all agree.
The hash is keyed BLAKE2b over the ID's text form, so ``42`` and ``"42"`` map to
the same value. IDs are 63-bit: with n distinct IDs the chance of any collision
is about n**2 / 2**64 (10**7 IDs: ~5e-6). Trainers fold IDs into their tables
with ``fold`` (a modulo), where collisions are expected and declared.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np
import pyarrow as pa

ID_SEED = b"recstream-ids-v1"
_MASK = (1 << 63) - 1


@functools.lru_cache(maxsize=1 << 20)
def stable_id(raw: str | int) -> int:
    """Map one raw ID to a non-negative int64 (cached: IDs repeat a lot in event streams)."""
    text = raw if isinstance(raw, str) else str(int(raw))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=ID_SEED).digest()
    return int.from_bytes(digest, "little") & _MASK


def stable_ids(raw: pa.Array | np.ndarray | list) -> np.ndarray:
    """Vectorized stable_id: hashes each distinct value once."""
    values = raw.to_pylist() if isinstance(raw, (pa.Array, pa.ChunkedArray)) else list(raw)
    # The text form stable_id hashes: 42, 42.0, np.int64(42) and "42" all become "42".
    texts = [v if isinstance(v, str) else str(int(v)) for v in values]
    uniques, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    hashed = np.fromiter((stable_id(u) for u in uniques), dtype=np.int64, count=len(uniques))
    return hashed[inverse]


def fold(ids: np.ndarray, table_size: int) -> np.ndarray:
    """Fold hashed IDs into [1, table_size); row 0 is reserved for padding."""
    return np.asarray(ids, dtype=np.int64) % (table_size - 1) + 1
