"""What a keyed function owes the world after an event (online rows, item deltas), and when it pays.

A key changed by an event is *pending* until its online rows are written, at the next tick of
a grid of ``flush_ms`` from ``start_ms`` (the function's start: its first flush comes one full
period later). The first key pending at a tick asks for a processing-time timer there
(``add`` returns the time); when it fires, the function takes every key due by then (``take``)
and writes them in one batch. So a tick costs one timer, whatever the number of keys.

Flink keeps timers in its checkpoints with the keyed state. So that every key pending at a
checkpoint has a timer of its own there, the function registers one for each pending key at the
mark before the barrier (pipelines.stream.batches.is_mark); after a restore, such a timer finds
its key ``unknown`` to the new instance and the function writes the key from its restored state.

    >>> p = Pending(flush_ms=100, start_ms=1_000)
    >>> p.add(7, now_ms=1_050)            # newly pending, the first key of its tick: a timer at 1_100
    ({}, True, 1100)
    >>> p.add(8, now_ms=1_070)            # newly pending at the same tick: no other timer
    ({}, True, None)
    >>> p.add(7, now_ms=1_080)            # pending already
    ({}, False, None)
    >>> sorted(p.take(1_100)), p.state_of(7), p.get(8)
    ([7, 8], 'done', None)
    >>> p.add(7, now_ms=1_120)[2], p.state_of(7), p.get(7)  # pending again: a timer for the next tick
    (1200, 'pending', (1200, {}))
"""
from __future__ import annotations

from typing import Any


class Pending:
    """Pending keys by the flush time of their tick, each with a payload the function fills."""

    def __init__(self, flush_ms: int, start_ms: int):
        if flush_ms < 1:
            raise ValueError(f"flush_ms must be >= 1, got {flush_ms}")
        self.flush_ms, self.start_ms = flush_ms, start_ms
        self.by_time: dict[int, dict[Any, dict]] = {}  # flush time -> key -> payload
        self.time_of: dict[Any, int] = {}  # key -> its flush time
        self.done: set = set()  # the keys of the last batch taken

    def add(self, key, now_ms: int) -> tuple[dict, bool, int | None]:
        """Mark key pending. Returns its payload, whether it was not pending before, and the time
        to register a timer at (its tick's, for the tick's first key; else None)."""
        at = self.time_of.get(key)
        if at is not None:
            return self.by_time[at][key], False, None
        self.done.discard(key)
        at = self.start_ms + ((now_ms - self.start_ms) // self.flush_ms + 1) * self.flush_ms
        self.time_of[key] = at
        keys = self.by_time.get(at)
        timer = None
        if keys is None:
            keys = self.by_time[at] = {}
            timer = at
        payload = keys[key] = {}
        return payload, True, timer

    def get(self, key) -> tuple[int, dict] | None:
        """(flush time, payload) of key while it is pending, else None."""
        at = self.time_of.get(key)
        return None if at is None else (at, self.by_time[at][key])

    def take(self, upto_ms: int | None = None) -> dict:
        """Every pending key due at or before upto_ms (None: all of them) with its payload; they
        become ``done`` until the next take that finds keys."""
        times = [t for t in self.by_time if upto_ms is None or t <= upto_ms]
        if not times:
            return {}
        out: dict = {}
        for t in times:
            out.update(self.by_time.pop(t))
        for key in out:
            del self.time_of[key]
        self.done = set(out)
        return out

    def state_of(self, key) -> str:
        """What a firing timer of key finds: 'done' (written in the batch just taken), 'pending'
        (it waits for a later tick), or 'unknown' (not pending here: a timer restored from a
        checkpoint, or one that is not a flush's)."""
        if key in self.time_of:
            return "pending"
        return "done" if key in self.done else "unknown"
