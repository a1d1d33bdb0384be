"""Windowed counts and click-through rates: a mergeable tile state, and the same
numbers computed point-in-time from a sorted log.

Definition (exact, shared by batch, stream and the oracle): the count of kind k
over window w as of time t counts events of kind k with timestamp < t whose
one-minute tile starts at or after t - w. Lifetime counts every event before t.
A state keeps per-minute tiles for the longest window plus lifetime totals, so
``at(state, now)`` gives the windows for any read time at or after the newest
event: nothing goes stale between events.

A stats row (``to_row``) holds the values as of its time and the state itself
(STATE_FIELDS): ``newest_ms``, the live tiles (``tile_starts``, ``tile_counts``: len(KINDS)
counts per tile) and the lifetime counts. The batch tables keep both; online, the views
keep the state alone. ``read_at(row, now)`` gives the exact values as of any later time
(serving reads them so, never stale), and ``from_row`` lets the stream continue a row the
backfill wrote.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from features.pit import rows_before

TILE_MS = 60_000
WINDOWS: dict[str, int] = {"1h": 3_600_000, "1d": 86_400_000, "7d": 7 * 86_400_000}
KINDS = ("impressions", "clicks", "behaviors")
LIFETIME = "life"


_W = len(KINDS)


@dataclass
class StatsState:
    """Lifetime counts and the recent tiles: their starts in ascending order and their counts,
    _W per tile in the same order, both as int64 arrays (array.array), none all zero. A row is
    then two slices (state_row), and a pickled state two byte strings."""

    lifetime: list[int]  # counts per KINDS, every event ever added
    starts: array = field(default_factory=lambda: array("q"))  # tile start ms, ascending
    counts: array = field(default_factory=lambda: array("q"))  # per tile, its counts per KINDS
    newest_ms: int = -(1 << 62)
    pruned_size: int = 0  # tiles after the last prune: tiles are pruned as they double (amortized O(1))

    @property
    def tiles(self) -> dict[int, list[int]]:
        """tile start ms -> its counts per KINDS (a copy)."""
        return {start: self.counts[i * _W:(i + 1) * _W].tolist() for i, start in enumerate(self.starts)}

    def __reduce__(self):
        # a compact pickle (each key's Flink state): the arrays' bytes in native order (little-endian
        # wherever PyFlink runs: x86-64, aarch64), no field names
        return _unpickled, (tuple(self.lifetime), self.starts.tobytes(), self.counts.tobytes(), self.newest_ms,
                            self.pruned_size)

    def __setstate__(self, saved: dict) -> None:
        if "tiles" in saved:  # pickled before the arrays (a checkpoint of 2026-12-07 or earlier)
            converted = _of_tiles(saved["lifetime"], saved.pop("tiles"), saved["newest_ms"])
            saved["starts"], saved["counts"] = converted.starts, converted.counts
        self.__dict__.update(saved)


def _unpickled(lifetime: tuple, starts: bytes, counts: bytes, newest_ms: int, pruned_size: int) -> StatsState:
    """StatsState.__reduce__'s inverse. Checkpoints name it: keep its name and arguments."""
    out = StatsState(list(lifetime), array("q"), array("q"), newest_ms, pruned_size)
    out.starts.frombytes(starts)
    out.counts.frombytes(counts)
    return out


def kind_index(event_type: str, behavior_types: frozenset[str]) -> tuple[int, ...]:
    """Which counters an event increments: impressions, clicks; every behavior counts as a behavior."""
    out = []
    if event_type == "impression":
        out.append(0)
    if event_type == "click":
        out.append(1)
    if event_type in behavior_types:
        out.append(2)
    return tuple(out)


def empty() -> StatsState:
    return StatsState([0] * len(KINDS))


def _of_tiles(lifetime: list[int], tiles: dict[int, list[int]], newest_ms: int) -> StatsState:
    """A state of tiles given as a dict (start -> counts); tiles of zeros are dropped."""
    ordered = sorted(start for start, tile in tiles.items() if any(tile))
    return StatsState(lifetime, array("q", ordered), array("q", chain.from_iterable(tiles[s] for s in ordered)),
                      newest_ms)


def add(state: StatsState, timestamp: int, kinds: tuple[int, ...], sign: int = 1) -> StatsState:
    """Count one event (sign=1), or take back one counted before (sign=-1: a copy of the same
    event that replaces it). Taking back from a pruned tile changes only the lifetime counts:
    the tile could never count again anyway."""
    if not kinds:
        return state
    start = timestamp - timestamp % TILE_MS
    starts, counts, lifetime = state.starts, state.counts, state.lifetime
    n = len(starts)
    if n and starts[-1] == start:  # the newest tile, where most events go
        i, there = n - 1, True
    else:
        i = bisect_left(starts, start)
        there = i < n and starts[i] == start
        if not there and sign > 0:
            starts.insert(i, start)
            counts[i * _W:i * _W] = _ZEROS
            there = True
    j, zero = i * _W, False
    for k in kinds:
        lifetime[k] += sign
        if there:
            counts[j + k] += sign
            zero = zero or counts[j + k] == 0
    if zero and not any(counts[j:j + _W]):
        del starts[i]
        del counts[j:j + _W]
    if timestamp > state.newest_ms and sign > 0:
        state.newest_ms = timestamp
        if len(starts) > 2 * state.pruned_size + 16:
            _prune(state)
    return state


_ZEROS = array("q", [0] * _W)


def merge(states: list[StatsState]) -> StatsState:
    lifetime, tiles, newest = [0] * _W, {}, empty().newest_ms
    for s in states:
        lifetime = [a + b for a, b in zip(lifetime, s.lifetime)]
        for start, counts in s.tiles.items():
            tile = tiles.setdefault(start, [0] * _W)
            for k, c in enumerate(counts):
                tile[k] += c
        newest = max(newest, s.newest_ms)
    out = _of_tiles(lifetime, tiles, newest)
    _prune(out)
    return out


def at(state: StatsState, now_ms: int) -> dict[str, int | float]:
    """Feature values as of now_ms (now_ms must be after every event in the state)."""
    if now_ms <= state.newest_ms:
        raise ValueError(f"stats read at {now_ms} but the state holds an event at {state.newest_ms}")
    out: dict[str, int | float] = {}
    starts, counts = state.starts, state.counts
    for name, length in WINDOWS.items():  # the columns in WINDOWS order, as feature_names() lists them
        i = bisect_left(starts, now_ms - length) * _W  # the tiles in the window: a suffix, the starts being in order
        _name_into(out, [sum(counts[i + k::_W]) for k in range(_W)], name)
    _name_into(out, state.lifetime, LIFETIME)
    return out


def feature_names() -> list[str]:
    return [f"{k}_{w}" for w in (*WINDOWS, LIFETIME) for k in (*KINDS, "ctr")]


# What a stats row holds of the state: its newest event, the live tiles and the lifetime counts.
STATE_FIELDS = ("newest_ms", "tile_starts", "tile_counts", *(f"{k}_{LIFETIME}" for k in KINDS))


def horizon(newest_ms: int) -> int:
    """Tiles starting before this can never count again once an event at newest_ms is in."""
    return newest_ms - max(WINDOWS.values()) - TILE_MS


def to_row(state: StatsState, as_of_ms: int) -> dict:
    """The values as of as_of_ms and the state (state_row)."""
    return {**at(state, as_of_ms), **state_row(state)}


def state_row(state: StatsState, arrays: bool = False) -> dict:
    """The state alone (STATE_FIELDS), with only the live tiles, in start order: the same row
    whatever order the events came in. The online views hold this; serving reads it (read_at).
    Two slices of the state's arrays; with ``arrays`` the lists stay int64 arrays (array.array),
    which features.packed packs without a copy (the stream writes a row per changed key)."""
    i = bisect_left(state.starts, horizon(state.newest_ms))
    starts, counts = state.starts[i:], state.counts[i * _W:]
    row = {"newest_ms": state.newest_ms, "tile_starts": starts if arrays else starts.tolist(),
           "tile_counts": counts if arrays else counts.tolist()}
    for k, kind in enumerate(KINDS):
        row[f"{kind}_{LIFETIME}"] = state.lifetime[k]
    return row


def from_row(row: dict) -> StatsState:
    """The state a stats row holds (the inverse of to_row, up to tiles that can no longer count)."""
    starts = np.asarray(row["tile_starts"] if row["tile_starts"] is not None else [], np.int64)
    counts = np.asarray(row["tile_counts"] if row["tile_counts"] is not None else [], np.int64)
    if len(counts) != _W * len(starts):
        raise ValueError(f"a stats row has {len(starts)} tiles but {len(counts)} tile counts ({_W} per tile)")
    counts = counts.reshape(-1, _W)
    order = np.argsort(starts, kind="stable")
    ordered = starts[order]
    last = np.ones(len(order), bool)  # of a repeated start, its last tile
    last[:-1] = ordered[1:] != ordered[:-1]
    keep = order[last]  # in start order
    keep = keep[counts[keep].any(axis=1)]  # no tile of zeros
    out = StatsState([int(row[f"{k}_{LIFETIME}"]) for k in KINDS], newest_ms=int(row["newest_ms"]))
    out.starts.frombytes(starts[keep].astype("=i8").tobytes())
    out.counts.frombytes(counts[keep].astype("=i8").tobytes())
    return out


def read_at(row: dict, now_ms: int) -> dict[str, int | float]:
    """A stats row's values as of now_ms, any time after its newest event (serving reads this)."""
    return at(from_row(row), now_ms)


def values_at(rows: dict[str, list], now_ms: list[int]) -> dict[str, list]:
    """read_at for columns of state rows (STATE_FIELDS lists) and their read times; a row with no
    state (None, or tiles and counts that do not match) reads as zero counts. The read time is
    raised to just after the row's newest event where it is earlier."""
    out: dict[str, list] = {name: [] for name in feature_names()}
    zero = at(empty(), 0)
    for i, now in enumerate(now_ms):
        row = {f: (rows.get(f) or [None] * len(now_ms))[i] for f in STATE_FIELDS}
        starts, counts = row["tile_starts"] or [], row["tile_counts"] or []
        whole = row["newest_ms"] is not None and len(counts) == len(KINDS) * len(starts) \
            and all(row[f"{k}_{LIFETIME}"] is not None for k in KINDS)
        values = read_at(row, max(int(now), int(row["newest_ms"]) + 1)) if whole else zero
        for name in out:
            out[name].append(values[name])
    return out


def _name_into(out: dict, counts: list[int], window: str) -> None:
    names, ctr = _COLUMNS[window]
    for name, c in zip(names, counts):
        out[name] = c
    out[ctr] = counts[1] / counts[0] if counts[0] else 0.0


_COLUMNS = {w: ([f"{k}_{w}" for k in KINDS], f"ctr_{w}") for w in (*WINDOWS, LIFETIME)}  # window -> its column names


def _prune(state: StatsState) -> None:
    """Drop the tiles that can never count again: a prefix, the starts being in order."""
    i = bisect_left(state.starts, horizon(state.newest_ms))
    del state.starts[:i]
    del state.counts[:i * _W]
    state.pruned_size = len(state.starts)


def as_of(keys: np.ndarray, times: np.ndarray, kinds: np.ndarray, query_keys: np.ndarray,
          query_times: np.ndarray) -> dict[str, np.ndarray]:
    """The same features, vectorized, for (key, time) queries over events sorted by (key, time).

    ``kinds`` is an (n_events, len(KINDS)) 0/1 matrix. No per-row Python loop.
    """
    keys, times = np.asarray(keys, np.int64), np.asarray(times, np.int64)
    qk, qt = np.asarray(query_keys, np.int64), np.asarray(query_times, np.int64)
    kinds = np.asarray(kinds)
    prefix = np.zeros((len(kinds) + 1, len(KINDS)), np.int64)
    np.cumsum(kinds, axis=0, dtype=np.int64, out=prefix[1:])
    end = rows_before(keys, times, qk, qt)  # the key's rows strictly before t end here
    begin = np.searchsorted(keys, qk, side="left")
    out: dict[str, np.ndarray] = {}
    for name, length in WINDOWS.items():
        lower = -(-(qt - length) // TILE_MS) * TILE_MS  # the first tile start >= t - w
        start = rows_before(keys, times, qk, lower)
        out.update(_named_arrays(prefix[end] - prefix[np.minimum(start, end)], name))
    out.update(_named_arrays(prefix[end] - prefix[begin], LIFETIME))
    return out


def every_key_as_of(keys: np.ndarray, times: np.ndarray, kinds: np.ndarray,
                    as_of_ms: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(each distinct key, its features as of one time): ``as_of`` with every key queried at
    as_of_ms, in one pass (events sorted by key; any order of time within a key). The windows nest,
    so each event gets the number of windows it is in (0: at or after as_of_ms) and each key's
    counts per level are summed once."""
    keys, times = np.asarray(keys, np.int64), np.asarray(times, np.int64)
    new_key = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    run = np.cumsum(new_key) - 1
    narrowing = sorted(WINDOWS, key=WINDOWS.get, reverse=True)  # 7d, 1d, 1h
    before = times < as_of_ms
    level = before.astype(np.int64)  # 1: lifetime only; each window it is also in adds one
    for name in narrowing:
        level += before & (times >= -(-(as_of_ms - WINDOWS[name]) // TILE_MS) * TILE_MS)
    levels, n_keys = len(narrowing) + 2, int(new_key.sum())
    cell = run * levels + level
    per_level = np.stack([np.bincount(cell, weights=kinds[:, k], minlength=n_keys * levels)
                          for k in range(len(KINDS))], axis=1).reshape(n_keys, levels, len(KINDS))
    at_least = np.cumsum(per_level[:, ::-1], axis=1)[:, ::-1].round().astype(np.int64)  # level >= i
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate([LIFETIME, *narrowing], start=1):
        out.update(_named_arrays(at_least[:, i], name))
    return keys[new_key], out


def state_columns(keys: np.ndarray, times: np.ndarray, kinds: np.ndarray, query_keys: np.ndarray) -> dict:
    """STATE_FIELDS for each of query_keys (sorted, unique) from events sorted by (key, time), as
    to_row writes them: the key's newest event (0 if none), its live tiles in start order and
    their counts. Vectorized; the lists come back as (offsets, values) numpy pairs."""
    keys, times = np.asarray(keys, np.int64), np.asarray(times, np.int64)
    qk = np.asarray(query_keys, np.int64)
    run_ends = np.flatnonzero(np.r_[keys[1:] != keys[:-1], True]) if len(keys) else np.zeros(0, np.int64)
    last = np.repeat(run_ends, np.diff(np.r_[-1, run_ends]))  # each row's key's last row
    starts = times - times % TILE_MS
    live = np.flatnonzero(starts >= horizon(times[last]) if len(keys) else np.zeros(0, bool))
    lk, ls = keys[live], starts[live]
    first = np.ones(len(live), bool)
    first[1:] = (lk[1:] != lk[:-1]) | (ls[1:] != ls[:-1])
    heads = np.flatnonzero(first)
    sums = np.add.reduceat(kinds[live], heads, axis=0) if len(heads) else np.zeros((0, len(KINDS)), np.int64)
    keep = sums.any(axis=1)
    g_keys, g_starts, sums = lk[heads][keep], ls[heads][keep], sums[keep]
    per_key = np.searchsorted(g_keys, qk, side="right") - np.searchsorted(g_keys, qk, side="left")
    ends = np.searchsorted(keys, qk, side="right")
    has = ends > np.searchsorted(keys, qk, side="left")
    newest = np.where(has, times[np.maximum(ends - 1, 0)] if len(keys) else 0, 0)
    offsets = np.concatenate([[0], np.cumsum(per_key)])
    return {"newest_ms": newest.astype(np.int64), "tile_starts": (offsets, g_starts.astype(np.int64)),
            "tile_counts": (offsets * len(KINDS), sums.reshape(-1).astype(np.int64))}


def _named_arrays(counts: np.ndarray, window: str) -> dict[str, np.ndarray]:
    out = {f"{k}_{window}": counts[:, i] for i, k in enumerate(KINDS)}
    with np.errstate(divide="ignore", invalid="ignore"):
        out[f"ctr_{window}"] = np.where(counts[:, 0] > 0, counts[:, 1] / np.maximum(counts[:, 0], 1), 0.0)
    return out
