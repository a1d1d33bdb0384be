"""Reading one window: the primary stream up to the window's end, then the accepted records so far.

The primary stream is the examples topic (examples = "topic") or the accepted records themselves
(examples = "next_item"). A window closes at ``window.size`` records (or ``size`` ms of event
time), or with at least ``min_records`` once the stream has been idle for ``idle_s`` (caught up)
or, following, once the window has been open ``max_wait_s``. Records read past the close are
not taken: the next window reads them again from the positions this one ends at.

With examples from the topic, the window then takes the accepted records up to the time its
newest example's label became known (label_ms): the behaviors the stream had seen by then.
Each partition (or file) is read until its first record past that time, which is left for the
next window, so the log grows with the examples instead of racing ahead of them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from pipelines.retrain.source import Positions, open_reader


@dataclass
class Window:
    """One window's raw records and where each stream was read from and to."""

    index: int
    start: dict[str, Positions]
    end: dict[str, Positions]
    primary: list[bytes] = field(default_factory=list)  # the examples' (or the behaviors') records
    accepted: list[bytes] = field(default_factory=list)  # accepted records for the log (examples = "topic")
    closed_by: str = ""
    opened_at: float = 0.0  # wall clock (s) of the first record
    closed_at: float = 0.0


def read_window(cfg, index: int, start: dict[str, Positions], follow: bool,
                stop: Callable[[], bool] = lambda: False) -> Window | None:
    """The next window from ``start``; None if it did not close (too few records without following,
    or ``stop()`` became true while following)."""
    primary = "accepted" if cfg.examples == "next_item" else "examples"
    window = Window(index, {k: dict(v) for k, v in start.items()}, {k: dict(v) for k, v in start.items()})
    reader = open_reader(cfg, primary, start.get(primary, {}))
    try:
        if not _fill(cfg.window, reader, window, primary, follow, stop):
            return None
    finally:
        reader.close()
    if primary == "examples":
        window.accepted = _drain(cfg, window)
    window.closed_at = time.time()
    return window


def _fill(policy, reader, window: Window, stream: str, follow: bool, stop) -> bool:
    """Read records into the window until it closes; False if it does not."""
    values, end = window.primary, window.end[stream]
    first_ts = None
    last_data = opened = time.monotonic()
    while True:
        if stop():
            return False
        records = reader.poll(0.2)
        if records:  # timed after the poll: a slow fetch that brings records is not a pause
            last_data = time.monotonic()
        for rec in records:
            if not values:
                window.opened_at, opened = time.time(), last_data
            if policy.by == "event_time":
                ts = _event_time(rec)
                first_ts = ts if first_ts is None and ts is not None else first_ts
                if values and ts is not None and first_ts is not None and ts >= first_ts + policy.size:
                    window.closed_by = "event_time"
                    return True
            values.append(rec.value)
            end[rec.key] = rec.next
            if policy.by == "count" and len(values) >= policy.size:
                window.closed_by = "size"
                return True
        now = time.monotonic()
        if len(values) >= policy.min_records and now - last_data >= policy.idle_s:
            window.closed_by = "idle"
            return True
        if follow and values and len(values) >= policy.min_records and now - opened >= policy.max_wait_s:
            window.closed_by = "max_wait"
            return True
        if not follow and now - last_data >= policy.idle_s:
            return False  # caught up with too few records for a window


def _drain(cfg, window: Window, quiet_s: float = 0.3) -> list[bytes]:
    """The accepted records available now from the window's start position, each partition up to
    its first record past the window's newest label time."""
    until = _newest_label(window.primary)
    reader = open_reader(cfg, "accepted", window.start.get("accepted", {}))
    out, end, past = [], window.end["accepted"], set()
    try:
        quiet = time.monotonic()
        while time.monotonic() - quiet < quiet_s:
            got = reader.poll(0.1)
            if got:
                quiet = time.monotonic()
            for rec in got:
                if rec.key in past:
                    continue
                ts = _event_time(rec)
                if until is not None and ts is not None and ts > until:
                    past.add(rec.key)  # this partition's later records wait for the next window
                    continue
                out.append(rec.value)
                end[rec.key] = rec.next
    finally:
        reader.close()
    return out


def _newest_label(values: list[bytes]) -> int | None:
    newest = None
    for value in values:
        try:
            ms = json.loads(value).get("label_ms")
        except (ValueError, AttributeError):
            continue
        if isinstance(ms, int) and not isinstance(ms, bool):
            newest = ms if newest is None else max(newest, ms)
    return newest


def _event_time(rec) -> int | None:
    """The record's event time: its JSON's integer timestamp, else the Kafka record's."""
    try:
        ts = json.loads(rec.value).get("timestamp")
    except (ValueError, AttributeError):
        ts = None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else rec.timestamp
