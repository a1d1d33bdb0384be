"""Raw JSON-lines input: whole lines from a file in blocks, and the byte screen of the
vectorized validation (features.validate_arrow)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from features.validate import MAX_RECORD_BYTES


def line_blocks(f, block_bytes: int):
    """Lists of complete lines (no line ends; trailing carriage returns stripped, as
    ``line.rstrip(b"\\r\\n")`` would) from a binary file, about block_bytes at a time."""
    rest = b""
    while True:
        block = f.read(block_bytes)
        if not block:
            break
        block = rest + block
        cut = block.rfind(b"\n")
        if cut < 0:
            rest = block
            continue
        rest = block[cut + 1:]
        yield _lines(block[:cut])
    if rest:
        yield _lines(rest)


def _lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    return [x.rstrip(b"\r") for x in lines] if b"\r" in block else lines


# Byte classes of the screen: a brace counts 1, a byte that may not appear counts 3; "N" and "I"
# mark where a NaN or Inf token may start. A line passes when its count is 2 with "{" first and
# "}" last (one flat object), and no NaN or Inf occurs in it.
_CLASS = bytearray(256)
for _b in (*range(0x20), *range(0x7F, 0x100), 0x5C, 0x5B, 0x5D):  # control, non-ASCII, backslash, brackets
    _CLASS[_b] = 3
_CLASS[0x7B] = _CLASS[0x7D] = 1
_CLASS[ord("N")] = _CLASS[ord("I")] = 4
_CLASS = bytes(_CLASS)
_MARKED = bytes(int(c > 0) for c in _CLASS)  # 0/1, so the translated bytes are a valid bool array


def screen(lines: Sequence[bytes], joined: bytes | None = None) -> np.ndarray:
    """True where a line's JSON reading is the same in Python and in Arrow (features.validate_arrow).
    ``joined``: the lines joined by b"\\n" plus a final b"\\n", if the caller has it."""
    n = len(lines)
    if n == 0:
        return np.zeros(0, dtype=bool)
    joined = joined if joined is not None else b"\n".join(lines) + b"\n"
    lengths = np.fromiter(map(len, lines), np.int64, n)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    ends = starts + lengths  # each line's separator sits at its end
    data = np.frombuffer(joined, np.uint8)
    marked = np.flatnonzero(np.frombuffer(joined.translate(_MARKED), np.bool_))  # a few bytes per line
    line = np.searchsorted(starts, marked, side="right") - 1
    inside = marked < ends[line]  # not the separator after the line
    marked, line = marked[inside], line[inside]
    kind = np.frombuffer(_CLASS, np.uint8)[data[marked]]
    counts = np.bincount(line, weights=np.where(kind == 4, 0, kind), minlength=n)
    good = (lengths >= 2) & (lengths <= MAX_RECORD_BYTES) & (counts == 2)
    good &= (data[starts] == 0x7B) & (data[np.maximum(ends - 1, 0)] == 0x7D)
    at = marked[kind == 4]  # Python reads NaN, Infinity, -Infinity; Arrow also Inf and -NaN
    after1, after2 = data[np.minimum(at + 1, len(data) - 1)], data[np.minimum(at + 2, len(data) - 1)]
    token = ((data[at] == ord("N")) & (after1 == ord("a")) & (after2 == ord("N"))) | (
        (data[at] == ord("I")) & (after1 == ord("n")) & (after2 == ord("f")))
    good[line[kind == 4][token]] = False
    return good
