"""What a keyed function owes the world after an event (online rows, item deltas), and when it pays.

A key changed by an event is *pending* until its online rows are written. Each pending key has
a processing-time timer at the next tick of a grid of ``flush_ms`` from ``start_ms`` (the
function's start: its first flush comes one full period later); Flink keeps timers in its
checkpoints with the keyed state, so a pending key outlives a crash: after a restore its timer
fires and the function writes the key from its restored state.

Flink fires every timer that is due in one go, with no checkpoint between them. The first
firing of a flush time takes every key due by then (``take``) and the function writes them in
one batch; the later firings of the same flush time find their key ``done`` (nothing to do but
clear what the key kept in Flink state for a crash) or, after a restore, unknown to this
instance (``recover``: write it from its state). No Python operator hook before a checkpoint
is needed, so this works in PyFlink's thread mode as in its process mode.

    >>> p = Pending(flush_ms=100, start_ms=1_000)
    >>> p.add(7, now_ms=1_050)            # a new pending key: its timer is due at 1_100
    (1100, {})
    >>> p.add(7, now_ms=1_070)            # pending already: no new timer
    (None, {})
    >>> sorted(p.take(1_100)), p.state_of(7, 1_100)
    ([7], 'done')
    >>> p.add(7, now_ms=1_120)[0], p.state_of(7, 1_150)  # pending again: another timer, not done
    (1200, 'pending')
"""
from __future__ import annotations

from typing import Any


class Pending:
    """Pending keys by the flush time of their timer, each with a payload the function fills."""

    def __init__(self, flush_ms: int, start_ms: int):
        if flush_ms < 1:
            raise ValueError(f"flush_ms must be >= 1, got {flush_ms}")
        self.flush_ms, self.start_ms = flush_ms, start_ms
        self.by_time: dict[int, dict[Any, dict]] = {}  # flush time -> key -> payload
        self.time_of: dict[Any, int] = {}  # key -> its flush time
        self.done: set = set()  # the keys of the last batch taken

    def add(self, key, now_ms: int) -> tuple[int | None, dict]:
        """Mark key pending; returns (the timer to register, or None if it has one) and its payload."""
        at = self.time_of.get(key)
        if at is not None:
            return None, self.by_time[at][key]
        self.done.discard(key)  # pending again: what it keeps for a crash is not out yet
        at = self.start_ms + ((now_ms - self.start_ms) // self.flush_ms + 1) * self.flush_ms
        self.time_of[key] = at
        payload = self.by_time.setdefault(at, {})[key] = {}
        return at, payload

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

    def state_of(self, key, timer_ms: int) -> str:
        """What a firing timer of key finds: 'done' (written in the batch just taken), 'pending'
        (it waits for a later timer), or 'unknown' (a timer restored from a checkpoint: the key
        must be written from its state)."""
        if key in self.time_of:
            return "pending"
        return "done" if key in self.done else "unknown"
