"""The stream job's keyed functions: thin PyFlink adapters over features.user_state and
features.stats (the backfill's algebras), writing every online view themselves.

    UserFeaturesFn   (raw, Event | Rejection) keyed by user
                       -> user_sequence, user_recent, user_category_sequence, user_stats online
                       -> main output: item statistics deltas, one record per item per flush
                       -> side outputs: dead letters, labeled examples (the click join, event-time
                          timers), accepted records
    ItemStatsFn      deltas keyed by item -> item_stats online

Each keeps its keys' state in one Flink ValueState (checkpointed), read through a write-through
StateCache. A changed key is pending (pipelines.stream.pending) until a processing-time timer,
at most ``flush_ms`` later, writes the rows of every key due by then in one batch; the user
function also sends the batch's item deltas on, combined per item. The item deltas of a
pending user are kept in a ListState too, until they are sent: a checkpoint taken while a key
is pending holds its state, its unsent deltas and its timer, so after a restore the timer
writes the key and sends its deltas. So every event a checkpoint covers reaches the online
store and the item statistics, and writes never move a key back in time (the store's own
rule), which makes the events replayed after a restore harmless.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from pyflink.common import Types
from pyflink.datastream import TimeDomain
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from features import stats, user_state
from features.schema import Event, Rejection
from features.user_state import CATEGORY, LIFELONG, RECENT, STATS, FeaturePolicy
from pipelines.stream.examples import ClickJoin, example_json
from pipelines.stream.pending import Pending
from pipelines.stream.runtime import (ACCEPTED, DEAD_LETTERS, END_OF_INPUT, EXAMPLES, OPENED, BootstrapLedger,
                                      FnSettings, OnlineWriter, Reporting, StateCache, dead_letter, retrying)

ITEM_STATS = "item_stats"
# (item_id, its deltas as little-endian int64 pairs: timestamp, signed kinds mask). The mask has bit
# k for stats.KINDS[k]; its sign is the delta's: +1 counts, -1 takes a replaced copy back.
DELTA_TYPE = Types.TUPLE([Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
# The order of the writes of one flush: the views the bootstrap floors come from go last, so a
# crash between writes leaves those floors at or below what the other views hold.
USER_WRITE_ORDER = (CATEGORY, RECENT, STATS, LIFELONG)
# Native modules kept out of the TaskManager's JVM (open_tables): SciPy's hung a start there; torch,
# which Feast also tries to import, is kept out as a precaution (the stream uses neither).
UNSAFE_IN_THE_JVM = ("torch", "scipy")


def kinds_mask(kinds: tuple[int, ...]) -> int:
    return sum(1 << k for k in kinds)


def mask_kinds(mask: int) -> tuple[int, ...]:
    return tuple(k for k in range(len(stats.KINDS)) if mask >> k & 1)


def item_key(record: tuple) -> int:
    return record[0]


def combine(deltas) -> list[tuple[int, bytes]]:
    """Deltas (item, timestamp, signed mask) as one record per item (DELTA_TYPE), in their order."""
    out: dict[int, list[int]] = {}
    for item, ts, signed in deltas:
        out.setdefault(item, []).extend((ts, signed))
    return [(item, np.asarray(flat, "<i8").tobytes()) for item, flat in out.items()]


def split(packed: bytes) -> list[int]:
    """combine's bytes back as [timestamp, signed mask, timestamp, ...]."""
    return np.frombuffer(packed, "<i8").tolist()


def open_tables(workdir: Path, online, views) -> dict:
    """The online tables of views, with no native module the stream does not need. In thread mode
    the operators open in one interpreter inside the TaskManager's JVM, and loading SciPy's native
    FFT module there has hung the job's start for good (py-spy showed it stuck in that load,
    imported by Feast's Dask offline store, which the operators never use). So the store is
    opened with the offline store unloaded (open_store), and the operators' interpreter is told
    that torch and SciPy do not exist (unless already loaded): an import of either then fails at
    once instead of hanging. This module imports no Feast at its top."""
    for name in UNSAFE_IN_THE_JVM:
        sys.modules.setdefault(name, None)
    from pipelines.store.feature_store import open_store
    from pipelines.store.online_rows import OnlineTable

    store = open_store(workdir, online)
    return {view: OnlineTable(store, view) for view in views}


class _Keyed(Reporting):
    """The store, the ledger, the state cache and the pending keys every keyed function here uses."""

    state_name = ""
    views: tuple[str, ...] = ()  # the views it reads and writes, in the order of its writes

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        s = self.settings
        self.tables = open_tables(Path(s.workdir), s.online, self.views)
        self.writer = OnlineWriter(self.tables, self.views, s.patience_s, self.count)
        self.ledger = BootstrapLedger(s.ledger) if s.ledger else None
        descriptor = ValueStateDescriptor(self.state_name, Types.PICKLED_BYTE_ARRAY())
        self.cache = StateCache(runtime_context.get_state(descriptor), s.cache_size, fresh=not s.restored)
        self.pending = Pending(s.flush_ms, start_ms=int(time.time() * 1000))
        self.sender.send({OPENED: 1})  # the driver's start deadline (driver.run_here)

    def boot_rows(self, key: str, read):
        """The online rows key's state starts from: the ledger's (a restored job) or read now."""
        known, rows = self.ledger.get(key) if self.ledger else (False, None)
        if not known:
            rows = retrying(read, self.settings.patience_s, self.count)
            if self.ledger:  # before any write of this key can reach the online store
                self.ledger.put(key, rows)
        return rows

    def mark(self, key, ctx) -> dict:
        """key is pending: its timer is registered (once per pending period); returns its payload."""
        timers = ctx.timer_service()
        at, payload = self.pending.add(key, timers.current_processing_time())
        if at is not None:
            timers.register_processing_time_timer(at)
            self.started(payload)
        return payload

    def started(self, payload: dict) -> None:
        """A key's pending period starts (subclasses fill its payload)."""

    def on_timer(self, timestamp: int, ctx):
        key = ctx.get_current_key()
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            reporting = self.is_report_timer(key, timestamp)
            yield from self.flush_batch(self.pending.take(timestamp))
            found = self.pending.state_of(key, timestamp)
            if found == "done":
                self.settled(key)
            elif found == "unknown" and not reporting:
                yield from self.recover(key)
        elif timestamp == END_OF_INPUT:
            yield from self.flush_batch(self.pending.take())
        else:  # an example's timer (one per impression): its counts go with the next report, not a receipt each
            self.arm(ctx)
            return
        self.report()

    def flush_batch(self, batch: dict):
        """Write the batch's rows (and send what else it owes); a generator of records."""
        return iter(())

    def settled(self, key) -> None:
        """key's batch is out: drop what its state kept for a crash (current key: key)."""

    def recover(self, key):
        """A timer restored from a checkpoint: write key from its state (current key: key)."""
        return iter(())

    def close(self) -> None:
        for _ in self.flush_batch(self.pending.take()):
            pass  # a closing function cannot send records on: a restore sends them (their timers)
        super().close()


class UserFeaturesFn(_Keyed):
    """Every per-user view, from the same algebra as the backfill (features.user_state).

    An event is late (dead-lettered with reason 'late') when its timestamp is below the
    watermark minus the allowed lateness, or when it is at or below every floor of the views it
    feeds (it was online when the user's state was bootstrapped). The click join (labels:
    window_ms, or None for no examples) sees every accepted impression and click."""

    state_name = "user"
    views = USER_WRITE_ORDER

    def __init__(self, settings: FnSettings, policy: FeaturePolicy, lateness_ms: int, window_ms: int | None,
                 log_accepted: bool = False):
        super().__init__(settings)
        self.policy, self.lateness_ms, self.window_ms = policy, lateness_ms, window_ms
        self.log_accepted = log_accepted  # every accepted record to the ACCEPTED side output

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        # the item deltas of a pending user, kept until sent (they survive a crash with the timer)
        self.unsent = runtime_context.get_list_state(ListStateDescriptor("unsent", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, parsed, ctx):
        self.arm(ctx)
        self.count("read")
        line, event = parsed
        watermark = ctx.timer_service().current_watermark()
        if isinstance(event, Rejection):
            self.count(f"rejected.{event.reason}")
            yield DEAD_LETTERS, dead_letter(event)
        elif event.timestamp < watermark - self.lateness_ms:
            self.count("rejected.late")
            yield DEAD_LETTERS, dead_letter(Rejection(
                "late", "timestamp", f"{event.timestamp} < watermark {watermark} - allowed lateness "
                                     f"{self.lateness_ms}", line))
        else:
            yield from self._apply(line, event, ctx, watermark - self.lateness_ms)
        if self.counts["read"] >= self.settings.every:
            self.report()

    def _apply(self, line: str, event: Event, ctx, settled_ms: int):
        user = event.user_id
        held = self.cache.get(user) or [self._bootstrap(user), None, False]  # state, click join, changed
        state = held[0]
        category = user_state.needs_category(state, event, self.policy)
        if category is not None:
            row = self.boot_rows(f"cat:{user}:{category}", lambda: self.tables[CATEGORY].read([(user, category)])[0])
            user_state.add_category(state, category, row, self.policy)
        applied = user_state.apply(state, event, self.policy, settled_ms)
        if applied is None:
            self.cache.put(user, held)
            self.count("rejected.late")
            yield DEAD_LETTERS, dead_letter(Rejection(
                "late", "timestamp", f"{event.timestamp} is at or below what the online store held for user "
                                     f"{user} when the stream met it", line))
            return
        self.count("accepted")
        if self.log_accepted:
            yield ACCEPTED, line
        if LIFELONG in applied.views:
            self.count("applied")
        if not held[2]:
            self.count("users_updated")
            held[2] = True
        payload = self.mark(user, ctx)
        payload["state"] = state
        payload["views"].update(applied.views)
        if applied.item_deltas:
            deltas = [(item, ts, kinds_mask(kinds) * sign) for item, ts, kinds, sign in applied.item_deltas]
            payload["deltas"].extend(deltas)
            self.unsent.add_all(deltas)
        if self.window_ms is not None and event.event_type in ("impression", "click"):
            held[1] = held[1] or ClickJoin()
            impression_ms = held[1].add(event)
            if impression_ms is not None:
                ctx.timer_service().register_event_time_timer(impression_ms + self.window_ms + self.lateness_ms)
        self.cache.put(user, held)

    def started(self, payload: dict) -> None:
        payload["views"] = set()
        # a restored job may find deltas a crashed run kept for this user: they go with this batch
        payload["deltas"] = list(self.unsent.get() or ()) if self.settings.restored else []

    def _bootstrap(self, user: int) -> user_state.UserState:
        rows = self.boot_rows(f"user:{user}", lambda: {v: self.tables[v].read([user])[0] for v in (LIFELONG, RECENT, STATS)})
        return user_state.bootstrap(self.policy, rows)

    def flush_batch(self, batch: dict):
        if not batch:
            return
        rows: dict[str, list[dict]] = {}
        deltas = []
        for user, payload in batch.items():
            for view, view_rows in user_state.rows(payload["state"], user, payload["views"], self.policy).items():
                rows.setdefault(view, []).extend(view_rows)
            deltas.extend(payload["deltas"])
        self.writer.write(rows)
        yield from combine(deltas)

    def settled(self, key) -> None:
        self.unsent.clear()

    def recover(self, key):
        self.count("recovered")
        held = self.cache.get(key)
        if held is not None:
            state = held[0]
            views = {LIFELONG, RECENT, STATS, *((CATEGORY, c) for c in state.categories)}
            self.writer.write(user_state.rows(state, key, views, self.policy))
        yield from combine(self.unsent.get() or ())
        self.unsent.clear()

    def on_timer(self, timestamp: int, ctx):
        key = ctx.get_current_key()
        if ctx.time_domain() == TimeDomain.EVENT_TIME and self.window_ms is not None and key >= 0:
            held = self.cache.get(key)
            if held is not None and held[1] is not None:
                settled = ctx.timer_service().current_watermark() - self.lateness_ms
                for example in held[1].due(key, settled, self.window_ms):
                    self.count("examples")
                    yield EXAMPLES, example_json(example)
                if not held[1].copies:
                    held[1] = None
                self.cache.put(key, held)
        yield from super().on_timer(timestamp, ctx)


class ItemStatsFn(_Keyed):
    """Item statistics from the users' deltas: each item's stats state, started from its online
    row; a delta at or below that row's newest event is already in it and skipped (counted)."""

    state_name = "item"
    views = (ITEM_STATS,)

    def process_element(self, record, ctx):
        self.arm(ctx)
        item, flat = record[0], split(record[1])
        held = self.cache.get(item) or self._bootstrap(item)  # [stats state, floor]
        applied = 0
        for i in range(0, len(flat), 2):
            ts, signed = flat[i], flat[i + 1]
            if ts <= held[1]:
                self.count("item_deltas_skipped")
            else:
                applied += 1
                stats.add(held[0], ts, mask_kinds(abs(signed)), 1 if signed > 0 else -1)
        if applied:
            self.count("item_deltas", applied)
            self.mark(item, ctx)["state"] = held[0]
        self.cache.put(item, held)
        if self.counts["item_deltas"] >= self.settings.every:
            self.report()
        return iter(())

    def _bootstrap(self, item: int) -> list:
        row = self.boot_rows(f"item:{item}", lambda: self.tables[ITEM_STATS].read([item])[0])
        return [stats.empty(), -1] if row is None else [stats.from_row(row), int(row["newest_ms"])]

    def flush_batch(self, batch: dict):
        if batch:
            self.writer.write({ITEM_STATS: [_item_row(item, p["state"]) for item, p in batch.items()]})
        return iter(())

    def recover(self, key):
        self.count("recovered")
        held = self.cache.get(key)
        if held is not None:
            self.writer.write({ITEM_STATS: [_item_row(key, held[0])]})
        return iter(())


def _item_row(item: int, state: stats.StatsState) -> dict:
    return {"item_id": item, **stats.state_row(state)}
