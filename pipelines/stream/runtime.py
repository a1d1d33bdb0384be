"""What the stream job's PyFlink functions share: parsing and routing records, the bootstrap
ledger, counts and receipts, the write-behind state cache and the online writer.
The keyed functions themselves are in pipelines/stream/keyed.py.

Counts travel two ways: as Flink metrics (group ``recstream``: read, accepted, applied,
rejected_<reason>, rows_written, examples, ...) and as receipts to the local driver
(stream_receipts). Each keyed function keeps a Counter of what it did since its last receipt
and adds it to the metrics and sends it to the driver every ``every`` records, when a
processing-time timer fires (a flush, or the report timer: at most ``flush_ms`` after the last
receipt while records come), at the end of a bounded input (an event-time timer at the maximum watermark, which
Flink sends when the sources finish) and when it closes. The driver sums the receipts, so
every count is reported once per run.
"""
from __future__ import annotations

import gc
import json
import sqlite3
import time
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag

from features.schema import Event, Rejection
from features.validate import parse_event
from pipelines.store.online_config import OnlineStore
from pipelines.stream.batches import LINES_TYPE, TIMED_LINES_TYPE
from pipelines.stream.receipts import ReceiptSender

DEAD_LETTERS = OutputTag("dead_letters", Types.STRING())  # JSON lines: reason, field, detail, raw
EXAMPLES = OutputTag("examples", TIMED_LINES_TYPE)  # a timer's examples: label times, JSON lines (EXAMPLE_FIELDS)
ACCEPTED = OutputTag("accepted", LINES_TYPE)  # every accepted record, as it came (a batch each)
END_OF_INPUT = 2**63 - 1  # the watermark a bounded source sends when it is done
OPENED = "opened"  # the receipt of a keyed function whose store is open (the driver's start deadline)
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
    """The online rows each key's state was bootstrapped from, kept beside the checkpoints.

    A key first seen after the last checkpoint has no keyed state after a restore; reading
    the online store again would see this job's own writes since that checkpoint (higher
    floors, events dropped as late). The ledger keeps the first bootstrap, so a restored job
    bootstraps exactly as the lost run did. A fresh (not restored) job starts a new ledger."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # survives the job's crash, which is what it is for
        self.db.execute("CREATE TABLE IF NOT EXISTS boot (key TEXT PRIMARY KEY, rows TEXT)")

    def get(self, key: str) -> tuple[bool, dict | None]:
        row = self.db.execute("SELECT rows FROM boot WHERE key = ?", (key,)).fetchone()
        return (False, None) if row is None else (True, json.loads(row[0]))

    def put(self, key: str, rows: dict | None) -> None:
        self.db.execute("INSERT OR IGNORE INTO boot VALUES (?, ?)", (key, json.dumps(rows)))


@dataclass(frozen=True)
class FnSettings:
    """What every keyed function of the job needs besides its own logic."""

    workdir: str  # the run folder whose Feast store the functions read and write
    online: OnlineStore  # SQLite in the run folder, or Redis
    every: int  # records per count receipt
    flush_ms: int  # the longest a changed key waits for its online write (and counts for a receipt)
    ledger: str | None  # the bootstrap ledger's path (checkpoints on), else None
    receipts: str | None  # the driver's host:port for count receipts, else None (metrics only)
    cache_size: int  # keys whose decoded state each function keeps (BucketCache)
    restored: bool  # the job starts from a checkpoint (keyed state may exist for any key)
    patience_s: float  # how long an unreachable online store is waited for before the job fails


class Reporting(KeyedProcessFunction):
    """A keyed function's counts since its last receipt (also Flink metrics), sent every
    ``every`` records, on its processing-time timers, at the end of a bounded input and at
    close; and the two timers every subtask arms: the end of a bounded input (an event-time
    timer at the maximum watermark) and, while records come or event-time timers fire, a report
    timer ``flush_ms`` after the last report."""

    def __init__(self, settings: FnSettings):
        self.settings = settings

    def open(self, runtime_context) -> None:
        self.sender = ReceiptSender(self.settings.receipts)
        self.counts: Counter = Counter()
        self.end_timer = False
        self.report_timer: tuple | None = None  # (key, time) of the armed report timer
        self.metrics = runtime_context.get_metrics_group().add_group("recstream")
        self.counters: dict = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n  # reaches the Flink metrics with the next receipt (one call per name, not per event)

    def arm(self, ctx) -> None:
        timers = ctx.timer_service()
        if not self.end_timer:  # one per subtask is enough: it flushes everything the subtask holds
            timers.register_event_time_timer(END_OF_INPUT)
            self.end_timer = True
        if self.report_timer is None:
            at = timers.current_processing_time() + self.settings.flush_ms
            timers.register_processing_time_timer(at)
            self.report_timer = (ctx.get_current_key(), at)

    def disarm(self, key, timestamp: int) -> bool:
        """A processing-time timer of key fired: whether it is the report timer (then the next
        record, or event-time timer, arms another)."""
        if self.report_timer == (key, timestamp):
            self.report_timer = None
            return True
        return False

    def report(self) -> None:
        """Send the counts since the last receipt, and add them to the Flink metrics."""
        if self.counts:
            out, self.counts = dict(self.counts), Counter()
            for name, n in out.items():
                counter = self.counters.get(name)
                if counter is None:
                    counter = self.counters[name] = self.metrics.counter(name.replace(".", "_"))
                counter.inc(n)
            self.sender.send(out)

    def close(self) -> None:
        self.report()
        self.sender.close()


class BucketCache:
    """A cache of decoded keyed state over a MapState of many keys under one Flink key (a bucket
    of users or items), so a key met again skips the state read (a round trip to the JVM).
    ``put`` writes behind: ``save`` writes every key of a bucket put since its last save in one
    call, under that bucket as the current key. The function saves each bucket at the mark that
    comes before every checkpoint barrier (pipelines.stream.batches.is_mark), so a checkpoint
    holds every put, and a key changed by many batches between checkpoints is written once.
    While more than ``size`` keys wait, ``trim`` (at the end of each batch) saves the batch's
    bucket at once, so memory stays bounded without checkpoints too.
    Only this function instance writes its keys, and a restore or a rescale starts new
    instances, so the cache never serves a stale value. A job that did not start from a
    checkpoint (``fresh``) also knows that a key this instance never met has no state yet, and
    skips that read too (while it remembers fewer than ``max_seen`` keys)."""

    def __init__(self, state, size: int, fresh: bool, max_seen: int = 10_000_000):
        self.state, self.size, self.values = state, size, OrderedDict()
        self.dirty: dict = {}  # key -> its value, put since its bucket's last save
        self.dirty_in: dict = {}  # bucket -> those keys of it
        self.seen: set | None = set() if fresh else None
        self.max_seen = max_seen

    def get(self, key):
        if key in self.values:
            self.values.move_to_end(key)
            return self.values[key]
        if key in self.dirty:  # not saved yet, and evicted from the cache since
            value = self.dirty[key]
        elif self.seen is not None and key not in self.seen:
            return None  # never written: a fresh job's state starts empty
        else:
            value = self.state.get(key)
        self._keep(key, value)
        return value

    def put(self, bucket, key, value) -> None:
        """key of bucket (the current Flink key) holds value."""
        self.dirty[key] = value
        self.dirty_in.setdefault(bucket, set()).add(key)
        self._keep(key, value)
        if self.seen is not None:
            self.seen.add(key)
            if len(self.seen) > self.max_seen:
                self.seen = None  # too many to remember: read every key not in the cache

    def trim(self, bucket) -> None:
        """The end of a batch of bucket (the current Flink key): save it if more than size keys wait."""
        if len(self.dirty) > self.size:
            self.save(bucket)

    def save(self, bucket) -> int:
        """Write bucket's keys put since its last save (the current Flink key must be bucket); how many."""
        keys = self.dirty_in.pop(bucket, None)
        if keys:
            self.state.put_all(_Pairs((key, self.dirty.pop(key)) for key in keys))
        return len(keys or ())

    def _keep(self, key, value) -> None:
        self.values[key] = value
        self.values.move_to_end(key)
        while len(self.values) > self.size:
            self.values.popitem(last=False)


class _Pairs(dict):
    """A dict that iterates as (key, value) pairs: PyFlink's MapState.put_all takes ``.items()`` of
    a dict in thread mode but iterates it in process mode (2.3)."""

    def __iter__(self):
        return iter(self.items())


def attempt_number(runtime_context) -> int:
    """The task's attempt (0: its first run; more: Flink restarted it, from the last checkpoint)."""
    try:
        return runtime_context.get_attempt_number()
    except AttributeError:  # thread mode asks Flink 2's RuntimeContext for a method now on its task info
        return runtime_context._runtime_context.getTaskInfo().getAttemptNumber()


def short_gc_pauses() -> None:
    """After each full collection of Python's cyclic garbage collector, freeze what survived it:
    later full collections scan only the objects made since. The keyed state held in memory (every
    user's sequences, every item's tiles) is long-lived and never garbage; scanning it again made
    a full collection every few seconds stop the job for 200-280 ms at 2,000 users (and longer
    with more), the worst of the freshness tail (docs/streaming.md). A frozen object is still
    freed when its last reference goes (the state is acyclic); only a reference cycle frozen while
    alive and dropped later stays in memory, until a keyed function closes (it unfreezes). Once
    per interpreter (thread mode: one for the job)."""
    if _freeze_after_full not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full)


def _freeze_after_full(phase: str, info: dict) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def retrying(call, patience_s: float, count):
    """call(), waiting and retrying while the online store is unreachable (Redis down, SQLite
    locked), so an outage stalls the job (Kafka holds the events) instead of failing it, up to
    patience_s; any other error is raised at once."""
    waited, pause = 0.0, 0.2
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - only outages are retried; the rest is raised
            if not _is_outage(err) or waited >= patience_s:
                raise
            count("online_retries")
            time.sleep(pause)
            waited += pause
            pause = min(2 * pause, 5.0)


class OnlineWriter:
    """Writes rows online view by view, in the given order, each through ``retrying``."""

    def __init__(self, tables: dict, order: tuple[str, ...], patience_s: float, count):
        self.tables, self.order, self.patience_s, self.count = tables, order, patience_s, count

    def write(self, rows: dict[str, list[dict]]) -> None:
        for view in self.order:
            if rows.get(view):
                written = retrying(lambda: self.tables[view].write(rows[view]), self.patience_s, self.count)
                self.count(f"rows_written.{view}", written)


def _is_outage(err: Exception) -> bool:
    """A store that is away for a while (retry), not a bad row or a bug (raise)."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    try:
        import redis

        if isinstance(err, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            redis.exceptions.BusyLoadingError)):
            return True
    except ImportError:
        pass
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)
