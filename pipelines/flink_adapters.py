"""Thin PyFlink adapters over features/: validation, keyed sequence state, online writes.

Counts travel as receipts: each keyed function keeps a Counter of what it did
since its last receipt and emits it (as a dict) every ``every`` records, when a
timer fires, and at the end of a bounded input (an event-time timer at the
maximum watermark, which Flink sends when the sources finish). The driver sums
the receipts, so every count is reported exactly once.
"""
from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, TimeDomain
from pyflink.datastream.state import ValueStateDescriptor

from features import sequence
from features.schema import Event, Rejection
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.feature_store import open_store, read_user_sequences, write_user_sequences

DEAD_LETTERS = OutputTag("dead_letters", Types.STRING())  # JSON lines: reason, field, detail, raw
RECEIPTS = OutputTag("receipts")  # dicts of counts
END_OF_INPUT = 2**63 - 1  # the watermark a bounded source sends when it is done
IDLE_MS = 1000  # follow mode: report and flush at least this often while records arrive
REJECT_KEYS = 16  # rejections spread over this many negative keys (user ids are >= 0)


def parse_line(line: str, now_ms: int | None) -> tuple[str, Event | Rejection]:
    """Keep the raw line with the result so that a late event is dead-lettered as it came.

    Lines are read as ISO-8859-1 (one character per byte), so the original bytes come back
    exactly and parse_event rejects bad UTF-8 as the batch job does (a UTF-8 reader would
    have replaced it silently)."""
    raw = line.encode("latin-1")
    return raw.decode("utf-8", "backslashreplace"), parse_event(raw, now_ms)


def route_key(parsed: tuple[str, Event | Rejection]) -> int:
    line, result = parsed
    if isinstance(result, Event):
        return result.user_id
    return -1 - zlib.crc32(line.encode("utf-8", "surrogatepass")) % REJECT_KEYS


def dead_letter(rejection: Rejection) -> str:
    return json.dumps(rejection._asdict())


class _Reporting(KeyedProcessFunction):
    """Counts since the last receipt, and the timers that flush them."""

    def __init__(self, every: int, follow: bool):
        self.every, self.follow = every, follow

    def open(self, runtime_context) -> None:
        self.counts: Counter = Counter()
        self.end_timer = False
        self.idle_timer = False

    def _arm(self, ctx) -> None:
        timers = ctx.timer_service()
        if not self.end_timer:  # one per subtask is enough: it flushes everything the subtask holds
            timers.register_event_time_timer(END_OF_INPUT)
            self.end_timer = True
        if self.follow and not self.idle_timer:
            timers.register_processing_time_timer(timers.current_processing_time() + IDLE_MS)
            self.idle_timer = True

    def _receipt(self) -> dict:
        out, self.counts = dict(self.counts), Counter()
        return out

    def on_timer(self, timestamp: int, ctx):
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.idle_timer = False
        yield from self.flush()

    def flush(self):
        if self.counts:
            yield RECEIPTS, self._receipt()


class SequenceFn(_Reporting):
    """(raw, Event | Rejection) keyed by user -> the user's finalized features after each applied event.

    The state is bootstrapped from the online store on the user's first event;
    its last_event_ms becomes the floor: a sequence event at or below it is
    already online (or too old to place) and is dead-lettered as 'late'.
    Events of types the policy ignores are accepted and change nothing.
    """

    def __init__(self, workdir: str, policy: SequencePolicy, every: int, follow: bool):
        super().__init__(every, follow)
        self.workdir, self.policy = workdir, policy

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.store = open_store(Path(self.workdir))
        # (sequence state, floor ms, whether this run has changed the user)
        self.state = runtime_context.get_state(ValueStateDescriptor("sequence", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, parsed, ctx):
        self._arm(ctx)
        self.counts["read"] += 1
        line, event = parsed
        if isinstance(event, Rejection):
            self.counts[f"rejected.{event.reason}"] += 1
            yield DEAD_LETTERS, dead_letter(event)
        elif event.event_type not in self.policy.event_types:
            self.counts["accepted"] += 1
        else:
            state, floor, touched = self.state.value() or self._bootstrap(event.user_id)
            if event.timestamp <= floor:
                self.counts["rejected.late"] += 1
                yield DEAD_LETTERS, dead_letter(Rejection(
                    "late", "timestamp", f"{event.timestamp} <= {floor}, the user's last event online", line))
            else:
                self.counts["accepted"] += 1
                self.counts["applied"] += 1
                if not touched:
                    self.counts["users_updated"] += 1
                sequence.add(state, event, self.policy)
                self.state.update((state, floor, True))
                yield {"user_id": event.user_id, **sequence.finalize(state, self.policy)}
        if self.counts["read"] >= self.every:
            yield from self.flush()

    def _bootstrap(self, user_id: int) -> tuple:
        online = read_user_sequences(self.store, [user_id]).get(user_id)
        if online is None:
            return sequence.empty(), -1, False
        return sequence.from_features(online), int(online["last_event_ms"]), False


class OnlineWriterFn(_Reporting):
    """Feature rows keyed by user -> micro-batched online writes (the last row of a user in a batch wins)."""

    def __init__(self, workdir: str, every: int, follow: bool):
        super().__init__(every, follow)
        self.workdir = workdir

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.store = open_store(Path(self.workdir))
        self.rows: dict[int, dict] = {}
        self.pending = 0

    def process_element(self, row: dict, ctx):
        self._arm(ctx)
        self.rows[row["user_id"]] = row
        self.pending += 1
        if self.pending >= self.every:
            yield from self.flush()

    def flush(self):
        if self.rows:
            self.counts["rows_written"] += write_user_sequences(self.store, list(self.rows.values()))
            self.rows, self.pending = {}, 0
        if self.counts:
            yield self._receipt()
