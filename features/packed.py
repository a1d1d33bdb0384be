"""One online row as one value: a view's fields packed into bytes, encoded once, decoded with numpy.

The online store holds each view's row as a single ``packed`` value (feature_repo/definitions.py)
instead of one value per field: one write and one read per key, and no per-element protobuf
work (docs/online.md measures the difference). Two layouts, little-endian, each starting with a
4-byte tag and its lengths:

    sequence  b"RSQ1", n (uint32), last_event_ms (int64),
              item ids (int64 x n), category ids (int64 x n), event type codes (int32 x n),
              timestamps (int64 x n)                          -> SEQUENCE_FIELDS
    stats     b"RST1", t (uint32), newest_ms (int64), impressions/clicks/behaviors lifetime
              (int64 x 3), tile starts (int64 x t), tile counts (int64 x 3t)  -> stats.STATE_FIELDS

    >>> row = {"seq_item_ids": [5, 6], "seq_category_ids": [1, 1], "seq_event_types": [2, 2],
    ...        "seq_timestamps": [10, 20], "seq_length": 2, "last_event_ms": 20}
    >>> unpack("sequence", pack("sequence", row)) == row
    True
"""
from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEQUENCE_FIELDS = ("seq_item_ids", "seq_category_ids", "seq_event_types", "seq_timestamps", "seq_length",
                   "last_event_ms")
STATS_FIELDS = ("newest_ms", "tile_starts", "tile_counts", "impressions_life", "clicks_life", "behaviors_life")
_SEQ = struct.Struct("<4sIq")
_STATS = struct.Struct("<4sIqqqq")
_SEQ_TAG, _STATS_TAG = b"RSQ1", b"RST1"
KINDS = ("sequence", "stats")


def pack(kind: str, row: dict) -> bytes:
    """A row's fields (SEQUENCE_FIELDS or STATS_FIELDS) as one bytes value."""
    if kind == "sequence":
        arrays = [np.asarray(row[f], t) for f, t in zip(SEQUENCE_FIELDS[:4], ("<i8", "<i8", "<i4", "<i8"))]
        n = len(arrays[0])
        if any(len(a) != n for a in arrays) or row.get("seq_length", n) != n:
            raise ValueError(f"a sequence row's arrays and seq_length disagree: lengths {[len(a) for a in arrays]}, "
                             f"seq_length {row.get('seq_length')}")
        return b"".join((_SEQ.pack(_SEQ_TAG, n, int(row["last_event_ms"])), *(a.tobytes() for a in arrays)))
    starts, counts = np.asarray(row["tile_starts"], "<i8"), np.asarray(row["tile_counts"], "<i8")
    if len(counts) != 3 * len(starts):
        raise ValueError(f"a stats row has {len(starts)} tiles but {len(counts)} tile counts (3 per tile)")
    head = _STATS.pack(_STATS_TAG, len(starts), int(row["newest_ms"]), int(row["impressions_life"]),
                       int(row["clicks_life"]), int(row["behaviors_life"]))
    return b"".join((head, starts.tobytes(), counts.tobytes()))


def unpack(kind: str, value: bytes | None, arrays: bool = False) -> dict | None:
    """The fields of a packed value (None for None or empty: Feast's Redis reader gives an empty
    value for a key whose hash holds other views only); lists, or numpy arrays with ``arrays``."""
    if not value:
        return None
    if kind == "sequence":
        tag, n, last = _SEQ.unpack_from(value)
        _check(value, tag, _SEQ_TAG, kind, n)
        at = _SEQ.size
        items = np.frombuffer(value, "<i8", n, at)
        cats = np.frombuffer(value, "<i8", n, at + 8 * n)
        types = np.frombuffer(value, "<i4", n, at + 16 * n)
        times = np.frombuffer(value, "<i8", n, at + 20 * n)
        out = {"seq_item_ids": items, "seq_category_ids": cats, "seq_event_types": types, "seq_timestamps": times}
        if not arrays:
            out = {k: v.tolist() for k, v in out.items()}
        return {**out, "seq_length": n, "last_event_ms": last}
    tag, t, newest, impressions, clicks, behaviors = _STATS.unpack_from(value)
    _check(value, tag, _STATS_TAG, kind, t)
    starts = np.frombuffer(value, "<i8", t, _STATS.size)
    counts = np.frombuffer(value, "<i8", 3 * t, _STATS.size + 8 * t)
    return {"newest_ms": newest, "tile_starts": starts if arrays else starts.tolist(),
            "tile_counts": counts if arrays else counts.tolist(), "impressions_life": impressions,
            "clicks_life": clicks, "behaviors_life": behaviors}


def is_packed(kind: str, value) -> bool:
    """Whether value is a packed value of this kind (its tag and its lengths)."""
    head, tag = (_SEQ, _SEQ_TAG) if kind == "sequence" else (_STATS, _STATS_TAG)
    return (isinstance(value, bytes) and len(value) >= head.size and value[:4] == tag
            and len(value) == _size(kind, struct.unpack_from("<I", value, 4)[0]))


def _size(kind: str, n: int) -> int:
    """The length of a packed value with n behaviors (sequence) or n tiles (stats)."""
    return _SEQ.size + 28 * n if kind == "sequence" else _STATS.size + 32 * n


def pack_column(kind: str, table: pa.Table) -> pa.Array:
    """The packed value of every row of an offline view table (its fields as columns), equal to
    ``pack`` row by row, built in one pass of numpy scatters (no per-row Python)."""
    n = table.num_rows
    lists, head = _columns(kind, table)
    counts = lists[0][1]  # behaviors (sequence) or tiles (stats) per row
    sizes = _size(kind, counts.astype(np.int64))
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = np.empty(int(offsets[-1]), np.uint8)
    _scatter(data, offsets[:-1], np.full(n, head.itemsize), head.view(np.uint8))
    at = offsets[:-1] + head.itemsize
    for flat, lengths, width in lists:
        _scatter(data, at, lengths * width, flat.view(np.uint8))
        at = at + lengths * width
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]) \
        .cast(pa.binary())


def _columns(kind: str, table: pa.Table) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], np.ndarray]:
    """(flat values, length per row, bytes per value) of each array in the layout's order, and the
    rows' headers as one structured array; a row whose lengths disagree is a ValueError."""
    def flat(name: str, dtype: str) -> tuple[np.ndarray, np.ndarray, int]:
        column = table.column(name).combine_chunks() if table.num_rows else pa.array([], pa.list_(pa.int64()))
        values = pc.list_flatten(column)
        if column.null_count or values.null_count:
            raise ValueError(f"{kind} rows cannot be packed: {name} holds a null list or a null value")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.ascontiguousarray(values.to_numpy().astype(dtype, copy=False)), lengths, np.dtype(dtype).itemsize

    def ints(name: str) -> np.ndarray:
        column = table.column(name)
        if column.null_count:
            raise ValueError(f"{kind} rows cannot be packed: {name} is null in {column.null_count} rows")
        return column.to_numpy().astype(np.int64) if table.num_rows else np.zeros(0, np.int64)
    if kind == "sequence":
        lists = [flat(f, t) for f, t in zip(SEQUENCE_FIELDS[:4], ("<i8", "<i8", "<i4", "<i8"))]
        lengths = lists[0][1]
        bad = np.flatnonzero(np.any([l[1] != lengths for l in lists[1:]], axis=0) | (ints("seq_length") != lengths))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"a sequence row's arrays and seq_length disagree: lengths {[int(l[1][i]) for l in lists]}, "
                             f"seq_length {int(ints('seq_length')[i])}")
        head = np.zeros(table.num_rows, np.dtype([("tag", "S4"), ("n", "<u4"), ("last", "<i8")]))
        head["tag"], head["n"], head["last"] = _SEQ_TAG, lengths, ints("last_event_ms")
        return lists, head
    starts, counts = flat("tile_starts", "<i8"), flat("tile_counts", "<i8")
    bad = np.flatnonzero(counts[1] != 3 * starts[1])
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"a stats row has {int(starts[1][i])} tiles but {int(counts[1][i])} tile counts (3 per tile)")
    head = np.zeros(table.num_rows, np.dtype([("tag", "S4"), ("t", "<u4"), ("newest", "<i8"), ("imp", "<i8"),
                                              ("clicks", "<i8"), ("behaviors", "<i8")]))
    head["tag"], head["t"], head["newest"] = _STATS_TAG, starts[1], ints("newest_ms")
    head["imp"], head["clicks"], head["behaviors"] = ints("impressions_life"), ints("clicks_life"), ints("behaviors_life")
    return [starts, counts], head


def _scatter(data: np.ndarray, at: np.ndarray, lengths: np.ndarray, source: np.ndarray) -> None:
    """Copy ``source`` (rows' byte runs, back to back, ``lengths[i]`` bytes for row i) to ``data``
    at ``at[i]`` for row i."""
    if not len(source):
        return
    run_starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=run_starts[1:])
    data[np.repeat(at - run_starts, lengths) + np.arange(len(source))] = source


def _check(value: bytes, tag: bytes, want: bytes, kind: str, n: int) -> None:
    if tag != want:
        raise ValueError(f"not a packed {kind} value (tag {tag!r}, expected {want!r})")
    if len(value) != _size(kind, n):
        raise ValueError(f"a packed {kind} value of {len(value)} bytes, expected {_size(kind, n)} for length {n}")
