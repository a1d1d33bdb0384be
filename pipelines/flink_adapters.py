"""Thin PyFlink adapters over features/: validation, keyed sequence state, the click join, online writes.

Counts travel two ways: as Flink metrics (group ``recstream``: read, accepted, applied,
rejected_<reason>, rows_written, examples, ...) and as receipts to the local driver
(stream_receipts): each keyed function keeps a Counter of what it did since its last receipt
and sends it every ``every`` records, when a timer fires, at the end of a bounded input (an
event-time timer at the maximum watermark, which Flink sends when the sources finish) and
when it closes. The driver sums the receipts, so every count is reported once per run.
"""
from __future__ import annotations

import json
import sqlite3
import threading
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
from pipelines.stream_examples import ClickJoin, example_json
from pipelines.stream_receipts import ReceiptSender

DEAD_LETTERS = OutputTag("dead_letters", Types.STRING())  # JSON lines: reason, field, detail, raw
EXAMPLES = OutputTag("examples", Types.STRING())  # JSON lines: stream_examples.EXAMPLE_FIELDS
END_OF_INPUT = 2**63 - 1  # the watermark a bounded source sends when it is done
REJECT_KEYS = 16  # rejections spread over this many negative keys (user ids are >= 0)


def parse_line(line: str, now_ms: int | None) -> tuple[str, Event | Rejection]:
    """Keep the raw line with the result so that a late event is dead-lettered as it came.

    Lines are read as ISO-8859-1 (one character per byte, from files and from Kafka), so the
    original bytes come back exactly and parse_event rejects bad UTF-8 as the batch job does
    (a UTF-8 reader would have replaced it silently)."""
    raw = line.encode("latin-1")
    return raw.decode("utf-8", "backslashreplace"), parse_event(raw, now_ms)


def event_time(parsed: tuple[str, Event | Rejection], record_ms: int) -> int:
    """The event time of a parsed record (files source); rejections keep the record's own."""
    return parsed[1].timestamp if isinstance(parsed[1], Event) else record_ms


def route_key(parsed: tuple[str, Event | Rejection]) -> int:
    line, result = parsed
    if isinstance(result, Event):
        return result.user_id
    return -1 - zlib.crc32(line.encode("utf-8", "surrogatepass")) % REJECT_KEYS


def dead_letter(rejection: Rejection) -> str:
    return json.dumps(rejection._asdict())


class BootstrapLedger:
    """What each user's state was bootstrapped from, kept beside the checkpoints.

    A user first seen after the last checkpoint has no keyed state after a restore; reading
    the online store again would see this job's own writes since that checkpoint (a higher
    floor, events dropped as late). The ledger keeps the first bootstrap, so a restored job
    bootstraps exactly as the lost run did. A fresh (not restored) job starts a new ledger."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS boot (user_id INTEGER PRIMARY KEY, features TEXT)")

    def get(self, user_id: int) -> tuple[bool, dict | None]:
        row = self.db.execute("SELECT features FROM boot WHERE user_id = ?", (user_id,)).fetchone()
        return (False, None) if row is None else (True, json.loads(row[0]))

    def put(self, user_id: int, features: dict | None) -> None:
        self.db.execute("INSERT OR IGNORE INTO boot VALUES (?, ?)", (user_id, json.dumps(features)))


class _Reporting(KeyedProcessFunction):
    """Counts since the last receipt (also Flink metrics), and the timers that flush them."""

    def __init__(self, every: int, flush_ms: int | None, receipts: str | None):
        # flush_ms: while records arrive, report (and write) at least this often; None: bounded input
        self.every, self.flush_ms, self.receipts = every, flush_ms, receipts

    def open(self, runtime_context) -> None:
        self.sender = ReceiptSender(self.receipts)
        self.counts: Counter = Counter()
        self.end_timer = False
        self.idle_timer = False
        self.metrics = runtime_context.get_metrics_group().add_group("recstream")
        self.counters: dict = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n
        counter = self.counters.get(name)
        if counter is None:
            counter = self.counters[name] = self.metrics.counter(name.replace(".", "_"))
        counter.inc(n)

    def _arm(self, ctx) -> None:
        timers = ctx.timer_service()
        if not self.end_timer:  # one per subtask is enough: it flushes everything the subtask holds
            timers.register_event_time_timer(END_OF_INPUT)
            self.end_timer = True
        if self.flush_ms and not self.idle_timer:
            timers.register_processing_time_timer(timers.current_processing_time() + self.flush_ms)
            self.idle_timer = True

    def _receipt(self) -> dict:
        out, self.counts = dict(self.counts), Counter()
        return out

    def on_timer(self, timestamp: int, ctx):
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.idle_timer = False
        self.flush()
        return iter(())

    def flush(self) -> None:
        if self.counts:
            self.sender.send(self._receipt())

    def close(self) -> None:
        self.flush()
        self.sender.close()


class SequenceFn(_Reporting):
    """(raw, Event | Rejection) keyed by user -> the user's finalized features after each applied
    event; labeled examples and dead letters as side outputs.

    An event is late (dead-lettered with reason 'late') when its timestamp is below the
    watermark minus the allowed lateness, or, for sequence events, at or below the floor: the
    user's last_event_ms in the online store when the state was bootstrapped from it (those
    events are already online, or too old to place). Events of types the policy ignores change
    no sequence but feed the click join (labels: window_ms, or None for no examples).
    """

    def __init__(self, workdir: str, policy: SequencePolicy, every: int, flush_ms: int | None, lateness_ms: int,
                 window_ms: int | None, ledger: str | None, receipts: str | None):
        super().__init__(every, flush_ms, receipts)
        self.workdir, self.policy, self.lateness_ms = workdir, policy, lateness_ms
        self.window_ms, self.ledger_path = window_ms, ledger

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.store = open_store(Path(self.workdir))
        self.ledger = BootstrapLedger(self.ledger_path) if self.ledger_path else None
        # (sequence state, floor ms, whether this run has changed the user)
        self.state = runtime_context.get_state(ValueStateDescriptor("sequence", Types.PICKLED_BYTE_ARRAY()))
        self.join = runtime_context.get_state(ValueStateDescriptor("click_join", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, parsed, ctx):
        self._arm(ctx)
        self.count("read")
        line, event = parsed
        if isinstance(event, Rejection):
            self.count(f"rejected.{event.reason}")
            yield DEAD_LETTERS, dead_letter(event)
        elif event.timestamp < (watermark := ctx.timer_service().current_watermark()) - self.lateness_ms:
            self.count("rejected.late")
            yield DEAD_LETTERS, dead_letter(Rejection(
                "late", "timestamp", f"{event.timestamp} < watermark {watermark} - allowed lateness "
                                     f"{self.lateness_ms}", line))
        else:
            yield from self._apply(line, event, ctx)
        if self.counts["read"] >= self.every:
            self.flush()

    def _apply(self, line: str, event: Event, ctx):
        if event.event_type in self.policy.event_types:
            state, floor, touched = self.state.value() or self._bootstrap(event.user_id)
            if event.timestamp <= floor:
                self.count("rejected.late")
                yield DEAD_LETTERS, dead_letter(Rejection(
                    "late", "timestamp", f"{event.timestamp} <= {floor}, the user's last event online", line))
                return
            self.count("applied")
            if not touched:
                self.count("users_updated")
            sequence.add(state, event, self.policy)
            self.state.update((state, floor, True))
            yield {"user_id": event.user_id, **sequence.finalize(state, self.policy)}
        self.count("accepted")
        if self.window_ms is not None and event.event_type in ("impression", "click"):
            join = self.join.value() or ClickJoin()
            impression_ms = join.add(event)
            self.join.update(join)
            if impression_ms is not None:
                ctx.timer_service().register_event_time_timer(impression_ms + self.window_ms + self.lateness_ms)

    def _bootstrap(self, user_id: int) -> tuple:
        known, online = self.ledger.get(user_id) if self.ledger else (False, None)
        if not known:
            online = read_user_sequences(self.store, [user_id]).get(user_id)
            if self.ledger:  # before any write of this user can reach the online store
                self.ledger.put(user_id, online)
        if online is None:
            return sequence.empty(), -1, False
        return sequence.from_features(online, self.policy), int(online["last_event_ms"]), False

    def on_timer(self, timestamp: int, ctx):
        if ctx.time_domain() == TimeDomain.EVENT_TIME and self.window_ms is not None and ctx.get_current_key() >= 0:
            join = self.join.value()
            if join is not None:
                settled = ctx.timer_service().current_watermark() - self.lateness_ms
                for example in join.due(ctx.get_current_key(), settled, self.window_ms):
                    self.count("examples")
                    yield EXAMPLES, example_json(example)
                if join.copies:
                    self.join.update(join)
                else:
                    self.join.clear()
        yield from super().on_timer(timestamp, ctx)


_BUNDLE_LISTENERS: list = []


def on_bundle_finish(callback) -> None:
    """Call callback whenever this worker finishes a bundle of a keyed Python operator.

    PyFlink gives Python functions no checkpoint hook, but its operators finish the current
    bundle before every checkpoint barrier (prepareSnapshotPreBarrier), besides at least every
    python.fn-execution.bundle.time ms. Writes buffered in Python memory must land there, or a
    checkpoint would cover events whose rows were never written (lost after a restore)."""
    from pyflink.fn_execution.datastream.process.operations import StatefulOperation

    if not getattr(StatefulOperation, "_recstream_hooked", False):
        original = StatefulOperation.finish

        def finish(self):
            for listener in list(_BUNDLE_LISTENERS):
                listener()
            original(self)
        StatefulOperation.finish = finish
        StatefulOperation._recstream_hooked = True
    _BUNDLE_LISTENERS.append(callback)


class OnlineWriterFn(_Reporting):
    """Feature rows keyed by user -> micro-batched online writes (the last row of a user in a batch wins).

    A batch is written when it holds ``every`` rows, on the timers, and when the bundle
    finishes (before every checkpoint). Writes are idempotent and never move a user back in
    time (write_user_sequences skips a row older than the stored one), so rows replayed after
    a restore are harmless."""

    def __init__(self, workdir: str, every: int, flush_ms: int | None, receipts: str | None):
        super().__init__(every, flush_ms, receipts)
        self.workdir = workdir

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.store = open_store(Path(self.workdir))
        self.rows: dict[int, dict] = {}
        self.pending = 0  # rows received since the last write
        self.lock = threading.Lock()  # bundles of other operators may finish on other threads
        on_bundle_finish(self.write)

    def process_element(self, row: dict, ctx):
        self._arm(ctx)
        with self.lock:
            self.rows[row["user_id"]] = row
            self.pending += 1
            full = self.pending >= self.every
        if full:
            self.flush()
        return iter(())

    def write(self) -> None:
        with self.lock:
            if self.rows:
                self.count("rows_written", write_user_sequences(self.store, list(self.rows.values())))
                self.rows, self.pending = {}, 0

    def flush(self) -> None:
        self.write()
        with self.lock:
            receipt = self._receipt() if self.counts else None
        if receipt:
            self.sender.send(receipt)
