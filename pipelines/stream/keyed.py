"""The stream job's keyed functions: thin PyFlink adapters over features.user_state and
features.stats (the backfill's algebras), writing every online view themselves.

    UserFeaturesFn   (raw, Event | Rejection) keyed by user
                       -> user_sequence, user_recent, user_category_sequence, user_stats online
                       -> main output: item statistics deltas (item_id, timestamp, kinds mask, sign)
                       -> side outputs: dead letters, labeled examples (the click join, event-time timers)
    ItemStatsFn      deltas keyed by item -> item_stats online

Each keeps its keys' state in one Flink ValueState (checkpointed), read through a write-through
StateCache, and buffers its online writes (one row per key changed): they land at the end of
each bundle, which PyFlink finishes at least every ``flush_ms`` while following and before every
checkpoint barrier, and on the timers. So every event a
checkpoint covers is online, and writes never move a key back in time (write_rows), which makes
the events replayed after a restore harmless.
"""
from __future__ import annotations

from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import TimeDomain
from pyflink.datastream.state import ValueStateDescriptor

from features import stats, user_state
from features.schema import Event, Rejection
from features.user_state import CATEGORY, LIFELONG, RECENT, STATS, FeaturePolicy
from pipelines.store.feature_store import open_store
from pipelines.store.online_rows import OnlineTable
from pipelines.stream.runtime import (ACCEPTED, DEAD_LETTERS, EXAMPLES, BootstrapLedger, FnSettings, OnlineWriter,
                                      Reporting, StateCache, dead_letter, retrying)
from pipelines.stream.examples import ClickJoin, example_json

ITEM_STATS = "item_stats"
# (item_id, timestamp, kinds mask: bit k for stats.KINDS[k], sign: +1 counts, -1 takes a replaced copy back)
DELTA_TYPE = Types.TUPLE([Types.LONG(), Types.LONG(), Types.INT(), Types.INT()])
# The order of the writes of one flush: the views the bootstrap floors come from go last, so a
# crash between writes leaves those floors at or below what the other views hold.
USER_WRITE_ORDER = (CATEGORY, RECENT, STATS, LIFELONG)


def kinds_mask(kinds: tuple[int, ...]) -> int:
    return sum(1 << k for k in kinds)


def mask_kinds(mask: int) -> tuple[int, ...]:
    return tuple(k for k in range(len(stats.KINDS)) if mask >> k & 1)


class _Keyed(Reporting):
    """The store, the ledger and the state cache every keyed function here uses."""

    state_name = ""
    views: tuple[str, ...] = ()  # the views it reads and writes, in the order of its writes

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        s = self.settings
        store = open_store(Path(s.workdir), s.online)
        self.tables = {view: OnlineTable(store, view) for view in self.views}
        self.writer = OnlineWriter(self.tables, self.views, s.patience_s, self.count)
        self.ledger = BootstrapLedger(s.ledger) if s.ledger else None
        descriptor = ValueStateDescriptor(self.state_name, Types.PICKLED_BYTE_ARRAY())
        self.cache = StateCache(runtime_context.get_state(descriptor), s.cache_size, fresh=not s.restored)

    def boot_rows(self, key: str, read):
        """The online rows key's state starts from: the ledger's (a restored job) or read now."""
        known, rows = self.ledger.get(key) if self.ledger else (False, None)
        if not known:
            rows = retrying(read, self.settings.patience_s, self.count)
            if self.ledger:  # before any write of this key can reach the online store
                self.ledger.put(key, rows)
        return rows


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
        self.pending: dict[int, tuple[user_state.UserState, set]] = {}  # users whose rows wait for a write

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
        self.pending.setdefault(user, (state, set()))[1].update(applied.views)
        for item, ts, kinds, sign in applied.item_deltas:
            yield item, ts, kinds_mask(kinds), sign
        if self.window_ms is not None and event.event_type in ("impression", "click"):
            held[1] = held[1] or ClickJoin()
            impression_ms = held[1].add(event)
            if impression_ms is not None:
                ctx.timer_service().register_event_time_timer(impression_ms + self.window_ms + self.lateness_ms)
        self.cache.put(user, held)

    def _bootstrap(self, user: int) -> user_state.UserState:
        rows = self.boot_rows(f"user:{user}", lambda: {v: self.tables[v].read([user])[0] for v in (LIFELONG, RECENT, STATS)})
        return user_state.bootstrap(self.policy, rows)

    def write(self) -> None:
        if not self.pending:
            return
        rows: dict[str, list[dict]] = {}
        for user, (state, views) in self.pending.items():
            for view, view_rows in user_state.rows(state, user, views, self.policy).items():
                rows.setdefault(view, []).extend(view_rows)
        self.pending = {}
        self.writer.write(rows)

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

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.pending: dict[int, stats.StatsState] = {}

    def process_element(self, delta, ctx):
        self.arm(ctx)
        item, ts, mask, sign = delta
        held = self.cache.get(item) or self._bootstrap(item)  # [stats state, floor]
        if ts <= held[1]:
            self.count("item_deltas_skipped")
        else:
            self.count("item_deltas")
            stats.add(held[0], ts, mask_kinds(mask), sign)
            self.pending[item] = held[0]
        self.cache.put(item, held)
        if self.counts["item_deltas"] >= self.settings.every:
            self.report()
        return iter(())

    def _bootstrap(self, item: int) -> list:
        row = self.boot_rows(f"item:{item}", lambda: self.tables[ITEM_STATS].read([item])[0])
        return [stats.empty(), -1] if row is None else [stats.from_row(row), int(row["newest_ms"])]

    def write(self) -> None:
        if self.pending:
            rows = [{"item_id": item, **stats.to_row(s, s.newest_ms + 1)} for item, s in self.pending.items()]
            self.pending = {}
            self.writer.write({ITEM_STATS: rows})
