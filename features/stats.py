"""Windowed counts and click-through rates: a mergeable tile state, and the same
numbers computed point-in-time from a sorted log.

Definition (exact, shared by batch, stream and the oracle): the count of kind k
over window w as of time t counts events of kind k with timestamp < t whose
one-minute tile starts at or after t - w. Lifetime counts every event before t.
A state keeps per-minute tiles for the longest window plus lifetime totals, so
``at(state, now)`` gives the windows for any read time at or after the newest
event: nothing goes stale between events.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.pit import rows_before

TILE_MS = 60_000
WINDOWS: dict[str, int] = {"1h": 3_600_000, "1d": 86_400_000, "7d": 7 * 86_400_000}
KINDS = ("impressions", "clicks", "behaviors")
LIFETIME = "life"


@dataclass
class StatsState:
    lifetime: list[int]  # counts per KINDS, every event ever added
    tiles: dict[int, list[int]]  # tile start ms -> counts per KINDS, recent tiles only
    newest_ms: int = -(1 << 62)


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
    return StatsState([0] * len(KINDS), {})


def add(state: StatsState, timestamp: int, kinds: tuple[int, ...]) -> StatsState:
    if not kinds:
        return state
    tile = state.tiles.setdefault(timestamp - timestamp % TILE_MS, [0] * len(KINDS))
    for k in kinds:
        tile[k] += 1
        state.lifetime[k] += 1
    if timestamp > state.newest_ms:
        state.newest_ms = timestamp
        _prune(state)
    return state


def merge(states: list[StatsState]) -> StatsState:
    out = empty()
    for s in states:
        out.lifetime = [a + b for a, b in zip(out.lifetime, s.lifetime)]
        for start, counts in s.tiles.items():
            tile = out.tiles.setdefault(start, [0] * len(KINDS))
            for k, c in enumerate(counts):
                tile[k] += c
        out.newest_ms = max(out.newest_ms, s.newest_ms)
    _prune(out)
    return out


def at(state: StatsState, now_ms: int) -> dict[str, int | float]:
    """Feature values as of now_ms (now_ms must be after every event in the state)."""
    if now_ms <= state.newest_ms:
        raise ValueError(f"stats read at {now_ms} but the state holds an event at {state.newest_ms}")
    out: dict[str, int | float] = {}
    for name, length in WINDOWS.items():
        sums = [0] * len(KINDS)
        for start, counts in state.tiles.items():
            if start >= now_ms - length:
                sums = [a + b for a, b in zip(sums, counts)]
        out.update(_named(sums, name))
    out.update(_named(state.lifetime, LIFETIME))
    return out


def feature_names() -> list[str]:
    return [f"{k}_{w}" for w in (*WINDOWS, LIFETIME) for k in (*KINDS, "ctr")]


def _named(counts: list[int], window: str) -> dict[str, int | float]:
    out: dict[str, int | float] = {f"{k}_{window}": c for k, c in zip(KINDS, counts)}
    out[f"ctr_{window}"] = counts[1] / counts[0] if counts[0] else 0.0
    return out


def _prune(state: StatsState) -> None:
    # A tile older than the longest window before the newest event can never count again.
    horizon = state.newest_ms - max(WINDOWS.values()) - TILE_MS
    for start in [s for s in state.tiles if s < horizon]:
        del state.tiles[start]


def as_of(keys: np.ndarray, times: np.ndarray, kinds: np.ndarray, query_keys: np.ndarray,
          query_times: np.ndarray) -> dict[str, np.ndarray]:
    """The same features, vectorized, for (key, time) queries over events sorted by (key, time).

    ``kinds`` is an (n_events, len(KINDS)) 0/1 matrix. No per-row Python loop.
    """
    keys, times = np.asarray(keys, np.int64), np.asarray(times, np.int64)
    qk, qt = np.asarray(query_keys, np.int64), np.asarray(query_times, np.int64)
    prefix = np.vstack([np.zeros((1, len(KINDS)), np.int64), np.cumsum(kinds, axis=0, dtype=np.int64)])
    end = rows_before(keys, times, qk, qt)  # the key's rows strictly before t end here
    begin = np.searchsorted(keys, qk, side="left")
    out: dict[str, np.ndarray] = {}
    for name, length in WINDOWS.items():
        lower = -(-(qt - length) // TILE_MS) * TILE_MS  # the first tile start >= t - w
        start = rows_before(keys, times, qk, lower)
        out.update(_named_arrays(prefix[end] - prefix[np.minimum(start, end)], name))
    out.update(_named_arrays(prefix[end] - prefix[begin], LIFETIME))
    return out


def _named_arrays(counts: np.ndarray, window: str) -> dict[str, np.ndarray]:
    out = {f"{k}_{window}": counts[:, i] for i, k in enumerate(KINDS)}
    with np.errstate(divide="ignore", invalid="ignore"):
        out[f"ctr_{window}"] = np.where(counts[:, 0] > 0, counts[:, 1] / np.maximum(counts[:, 0], 1), 0.0)
    return out
