"""The stream job's keyed functions: thin PyFlink adapters over features.user_state and
features.stats (the backfill's algebras), writing every online view themselves. Both are keyed
by bucket (pipelines.stream.batches) and called once per batch.

    UserFeaturesFn   (bucket, its event lines) keyed by user bucket
                       -> user_sequence, user_recent, user_category_sequence, user_stats online
                       -> main output: item statistics deltas, one record per item bucket per flush
                       -> side outputs: dead letters, labeled examples (the click join, one
                          event-time timer per bucket), accepted records (a batch per flush tick)
    ItemStatsFn      deltas keyed by item bucket -> item_stats online

Each keeps a key's state in memory (a BucketCache) over its bucket's MapState (checkpointed),
and saves a bucket's changed keys into the MapState at the mark every bucket gets before each
checkpoint barrier (pipelines.stream.batches.is_mark). A bucket with changed keys is pending
(pipelines.stream.pending) until the next flush tick, at most ``flush_ms`` later, whose one
processing-time timer writes the rows of every changed key due by then in one batch; the user
function also sends the batch's item deltas on, per item bucket. At the mark, a pending bucket
also names its changed keys in a ValueState (in the user function, its unsent item deltas in a
ListState) and registers a timer of its own: a checkpoint taken while a bucket is pending holds
its state, those and its timer, so after a restore the timer writes the keys and sends the deltas.
So every event a checkpoint covers reaches the online store and the item statistics, and
writes never move a key back in time (the store's own rule), which makes the events replayed
after a restore harmless.
"""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np
from pyflink.common import Types
from pyflink.datastream import TimeDomain
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from features import stats, user_state
from features.schema import Event, Rejection
from features.user_state import CATEGORY, LIFELONG, RECENT, STATS, FeaturePolicy
from pipelines.stream.batches import is_mark, pack_lines
from pipelines.stream.examples import EXAMPLE_FIELDS, ClickJoin, ExampleTimers, example_json
from pipelines.stream.pending import Pending
from pipelines.stream.runtime import (ACCEPTED, DEAD_LETTERS, END_OF_INPUT, EXAMPLES, OPENED, BootstrapLedger,
                                      BucketCache, FnSettings, OnlineWriter, Reporting, attempt_number, dead_letter,
                                      parse_line, retrying, short_gc_pauses)

ITEM_STATS = "item_stats"
# (item bucket, its items' deltas as little-endian int64 triples: item_id, timestamp, signed kinds
# mask). The mask has bit k for stats.KINDS[k]; its sign is the delta's: +1 counts, -1 takes a
# replaced copy back. An item's bucket is item_id % buckets.
DELTA_TYPE = Types.TUPLE([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
# The order of the writes of one flush: the views the bootstrap floors come from go last, so a
# crash between writes leaves those floors at or below what the other views hold.
USER_WRITE_ORDER = (CATEGORY, RECENT, STATS, LIFELONG)
# Native modules kept out of the TaskManager's JVM (open_tables): SciPy's hung a start there; torch,
# which Feast also tries to import, is kept out as a precaution (the stream uses neither).
UNSAFE_IN_THE_JVM = ("torch", "scipy")
LABEL_MS = EXAMPLE_FIELDS.index("label_ms")


def kinds_mask(kinds: tuple[int, ...]) -> int:
    mask = _MASKS.get(kinds)
    if mask is None:
        mask = _MASKS[kinds] = sum(1 << k for k in kinds)
    return mask


_MASKS: dict[tuple[int, ...], int] = {}


def mask_kinds(mask: int) -> tuple[int, ...]:
    return _KINDS_OF[mask]


_KINDS_OF = [tuple(k for k in range(len(stats.KINDS)) if mask >> k & 1) for mask in range(1 << len(stats.KINDS))]


def item_key(record: tuple) -> int:
    return record[0]


def combine(deltas, buckets: int) -> list[tuple[int, bytes]]:
    """Deltas (item, timestamp, signed mask) as one record per item bucket (DELTA_TYPE), in their order."""
    out: dict[int, list[int]] = {}
    for delta in deltas:
        out.setdefault(delta[0] % buckets, []).extend(delta)
    return [(bucket, np.asarray(flat, "<i8").tobytes()) for bucket, flat in out.items()]


def split(packed: bytes) -> list[list[int]]:
    """combine's bytes back as [[item, timestamp, signed mask], ...]."""
    return np.frombuffer(packed, "<i8").reshape(-1, 3).tolist()


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
        short_gc_pauses()
        s = self.settings
        self.tables = open_tables(Path(s.workdir), s.online, self.views)
        self.writer = OnlineWriter(self.tables, self.views, s.patience_s, self.count)
        self.ledger = BootstrapLedger(s.ledger) if s.ledger else None
        # a restore, or Flink's own restart of a failed task (from the last checkpoint) on a cluster
        self.restored = s.restored or attempt_number(runtime_context) > 0
        # each key's state in its bucket's MapState, read through a cache saved at each mark
        descriptor = MapStateDescriptor(self.state_name, Types.LONG(), Types.PICKLED_BYTE_ARRAY())
        self.cache = BucketCache(runtime_context.get_map_state(descriptor), s.cache_size, fresh=not self.restored)
        # the keys of a pending bucket, named at a mark (a timer restored from a checkpoint writes them: recover)
        self.changed = runtime_context.get_state(ValueStateDescriptor("changed", Types.PICKLED_BYTE_ARRAY()))
        # the buckets whose Flink state names pending keys (keep): cleared (forget) when the
        # bucket's own timer finds its flush done, or at its next mark once it is not pending
        self.kept: set = set()
        # after a restore, the buckets whose checkpointed pending keys were taken up (take_restored)
        self.taken: set = set()
        self.pending = Pending(s.flush_ms, start_ms=int(time.time() * 1000))
        self.sender.send({OPENED: 1})  # the driver's start deadline (driver.run_here)

    def read(self, views: tuple, keys: list) -> list[list]:
        """Each view's online rows of keys (None where absent), read together: one round trip on Redis."""
        from pipelines.store.online_rows import read_together

        return read_together([(self.tables[view], keys) for view in views])

    def reader(self, view: str):
        """keys -> view's online rows of them."""
        return lambda keys: self.read((view,), keys)[0]

    def boot_rows(self, keys, label, read) -> dict:
        """The online rows each of keys' state starts from, by key: the ledger's (a restored job,
        by label(key)) or read now, every other key in one call, read(those keys) -> their rows."""
        out, todo = {}, []
        for key in keys:
            known, rows = self.ledger.get(label(key)) if self.ledger else (False, None)
            if known:
                out[key] = rows
            else:
                todo.append(key)
        if todo:
            got = retrying(lambda: read(todo), self.settings.patience_s, self.count)
            for key, rows in zip(todo, got):
                out[key] = rows
                if self.ledger:  # before any write of this key can reach the online store
                    self.ledger.put(label(key), rows)
        return out

    def mark(self, key, ctx) -> dict:
        """key is pending (the first key of a flush tick registers the tick's timer); returns its payload."""
        timers = ctx.timer_service()
        payload, new, at = self.pending.add(key, timers.current_processing_time())
        if at is not None:
            timers.register_processing_time_timer(at)
        if new:
            self.started(key, payload)
        return payload

    def started(self, key, payload: dict) -> None:
        """Bucket key's pending period starts (subclasses fill its payload; current key: key)."""

    def save(self, bucket, ctx) -> None:
        """The mark before a checkpoint barrier (current key: bucket): save what the bucket holds
        in memory into its Flink state and, while it is pending, what a restored job would owe,
        with a timer of the bucket's own at its flush time. Its cost (the states' pickling, in this
        thread's CPU time) goes with the counts: a checkpoint stalls the job while it runs."""
        started = time.thread_time_ns()
        self.count("state_saved", self.cache.save(bucket))
        self.count("state_save_us", (time.thread_time_ns() - started) // 1000)
        self.count("state_marks")
        pending = self.pending.get(bucket)
        if pending is not None:
            ctx.timer_service().register_processing_time_timer(pending[0])
            self.keep(pending[1])
            self.kept.add(bucket)
        elif bucket in self.kept:
            self.forget()
            self.kept.discard(bucket)

    def keep(self, payload: dict) -> None:
        """Name a pending bucket's changed keys (and what else it owes) in its Flink state."""

    def forget(self) -> None:
        """Clear what keep wrote for the current bucket."""
        self.changed.clear()

    def take_restored(self, bucket) -> bool:
        """Whether a restored job has still to take up the pending keys the checkpoint holds for
        bucket (the current key); it takes them now: with the bucket's next pending period
        (started) or by the bucket's restored timer (recover), whichever comes first."""
        if not self.restored or bucket in self.taken:
            return False
        self.taken.add(bucket)
        self.kept.add(bucket)  # the state still names them until the bucket's next mark (or recover) clears it
        return True

    def restored_states(self) -> list[tuple]:
        """(key, state) of each key the current bucket's ``changed`` names: keys a checkpoint
        caught pending, which a restored job must write (take_restored)."""
        out = []
        for key in self.changed.value() or ():
            held = self.cache.get(key)
            if held is not None:
                out.append((key, held[0]))
        return out

    def on_timer(self, timestamp: int, ctx):
        key = ctx.get_current_key()
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            reporting = self.disarm(key, timestamp)
            yield from self.flush_batch(self.pending.take(timestamp))
            found = self.pending.state_of(key)
            if found == "done" and key in self.kept:  # flushed after its mark: the checkpoint to come must not hold it
                self.forget()
                self.kept.discard(key)
            elif found == "unknown" and not reporting and self.take_restored(key):
                self.count("recovered")
                yield from self.recover(key)
                self.forget()
                self.kept.discard(key)
        elif timestamp == END_OF_INPUT:
            yield from self.flush_batch(self.pending.take())
        else:  # an example timer (one per bucket): its counts go with the next report, not a receipt each
            self.arm(ctx)
            return
        self.report()

    def flush_batch(self, batch: dict):
        """Write the batch's rows (and send what else it owes); a generator of records."""
        return iter(())

    def recover(self, key):
        """A timer restored from a checkpoint: write bucket key's changed keys (current key: key)."""
        return iter(())

    def close(self) -> None:
        for _ in self.flush_batch(self.pending.take()):
            pass  # a closing function cannot send records on: a restore sends them (their timers)
        super().close()
        # this instance (its state in memory with it) sits in a reference cycle, which only the
        # garbage collector frees, and not while frozen (short_gc_pauses): the interpreter may
        # outlive it. Its timers can still fire after close (Flink's finish), so it keeps its state.
        gc.unfreeze()


class UserFeaturesFn(_Keyed):
    """Every per-user view, from the same algebra as the backfill (features.user_state), over
    batches of event lines keyed by user bucket (pipelines.stream.batches).

    Each user's state lives in memory and in the bucket's MapState (saved at each mark). A bucket
    with changed users is pending (until the next flush tick); its payload holds the changed
    users' states and views, and at a mark a ValueState names them, so a timer restored from a
    checkpoint writes them (``recover``).

    An event is late (dead-lettered with reason 'late') when its timestamp is below the
    watermark minus the allowed lateness, or when it is at or below every floor of the views it
    feeds (it was online when the user's state was bootstrapped). A batch comes before the next
    watermark, so every line of it meets the watermark it would have met alone. The click join
    (labels: window_ms, or None for no examples) sees every accepted impression and click; its
    event-time timers fire per bucket, for the users a MapState index names."""

    state_name = "users"
    views = USER_WRITE_ORDER

    def __init__(self, settings: FnSettings, policy: FeaturePolicy, lateness_ms: int, window_ms: int | None,
                 log_accepted: bool = False, now_ms: int | None = None, buckets: int = 128):
        super().__init__(settings)
        self.buckets = buckets  # of the items its deltas go to (DELTA_TYPE)
        self.policy, self.lateness_ms, self.window_ms = policy, lateness_ms, window_ms
        self.log_accepted = log_accepted  # every accepted record to the ACCEPTED side output
        self.now_ms = now_ms  # the validation clock (None: the wall clock)

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        # the item deltas of a pending bucket, kept until sent (they survive a crash with the timer)
        self.unsent = runtime_context.get_list_state(ListStateDescriptor("unsent", Types.PICKLED_BYTE_ARRAY()))
        # the users of the bucket with a click join open
        self.joins = runtime_context.get_map_state(MapStateDescriptor("joins", Types.LONG(), Types.BOOLEAN()))
        self.due: dict[int, ExampleTimers] = {}  # bucket -> its users by due time (rebuilt after a restore)
        # accepted lines not sent yet: sent together by the next flush tick (an accepted line
        # changed a user, so one is coming) or the next mark, whichever is first
        self.accepted: list[str] = []

    def process_element(self, batch, ctx):
        bucket, lines = batch
        if is_mark(lines):
            yield from self.accepted_out()  # before the barrier that follows the marks
            self.save(bucket, ctx)
            return
        self.arm(ctx)
        watermark = ctx.timer_service().current_watermark()
        changed: dict[int, list] = {}  # user -> [its state, the views it changed]
        deltas: list = []
        accepted = self.accepted
        parsed = [parse_line(raw, self.now_ms) for raw in lines]
        # the batch's users new to this function, bootstrapped together (3 reads, not 3 per user)
        users = {e.user_id for _, e in parsed if isinstance(e, Event) and e.timestamp >= watermark - self.lateness_ms}
        booted = self._bootstrap([user for user in users if self.cache.get(user) is None])
        categories = self._categories(parsed, booted, watermark - self.lateness_ms)
        for line, event in parsed:
            self.count("read")
            if isinstance(event, Rejection):
                self.count(f"rejected.{event.reason}")
                yield DEAD_LETTERS, dead_letter(event)
            elif event.timestamp < watermark - self.lateness_ms:
                self.count("rejected.late")
                yield DEAD_LETTERS, dead_letter(Rejection(
                    "late", "timestamp", f"{event.timestamp} < watermark {watermark} - allowed lateness "
                                         f"{self.lateness_ms}", line))
            else:
                late = self._apply(bucket, line, event, (booted, categories), watermark - self.lateness_ms, changed,
                                   deltas)
                if late is not None:
                    yield DEAD_LETTERS, late
                elif self.log_accepted:
                    accepted.append(line)
        timers = self.due.get(bucket)
        if timers is not None and timers.to_register is not None:
            ctx.timer_service().register_event_time_timer(timers.to_register)
            timers.to_register = None
        if changed:
            payload = self.mark(bucket, ctx)
            users = payload["users"]
            for user, (state, views) in changed.items():
                if user in users:  # the newest state object: a cache miss reads a copy from Flink
                    users[user][0] = state
                    users[user][1].update(views)
                else:
                    users[user] = [state, views]
            payload["deltas"].extend(deltas)
        self.cache.trim(bucket)
        if self.counts["read"] >= self.settings.every:
            self.report()

    def _apply(self, bucket: int, line: str, event: Event, boot: tuple[dict, dict], settled_ms: int, changed: dict,
               deltas: list) -> str | None:
        """Apply an event to its user's state (boot: the states of the batch's new users, and the
        rows of the categories its events start); the dead letter of a late one, else None."""
        user = event.user_id
        booted, categories = boot
        held = self.cache.get(user)
        if held is None:  # state, click join, changed
            held = [booted[user] if user in booted else self._bootstrap([user])[user], None, False]
        state = held[0]
        category = user_state.needs_category(state, event, self.policy)
        if category is not None:
            key = (user, category)
            row = categories[key] if key in categories else \
                self.boot_rows([key], _category_label, self.reader(CATEGORY))[key]
            user_state.add_category(state, category, row, self.policy)
        applied = user_state.apply(state, event, self.policy, settled_ms)
        if applied is None:
            self.cache.put(bucket, user, held)
            self.count("rejected.late")
            return dead_letter(Rejection(
                "late", "timestamp", f"{event.timestamp} is at or below what the online store held for user "
                                     f"{user} when the stream met it", line))
        self.count("accepted")
        if LIFELONG in applied.views:
            self.count("applied")
        if not held[2]:
            self.count("users_updated")
            held[2] = True
        changed.setdefault(user, [state, set()])[1].update(applied.views)
        deltas.extend((item, ts, kinds_mask(kinds) * sign) for item, ts, kinds, sign in applied.item_deltas)
        if self.window_ms is not None and event.event_type in ("impression", "click"):
            if held[1] is None:
                held[1] = ClickJoin()
                self.joins.put(user, True)
            impression_ms = held[1].add(event)
            if impression_ms is not None:
                self._timers(bucket).add(impression_ms + self.window_ms + self.lateness_ms, user)
        self.cache.put(bucket, user, held)
        return None

    def started(self, key, payload: dict) -> None:
        payload["users"], payload["deltas"] = {}, []
        if self.take_restored(key):  # what a crashed run kept for this bucket goes with this batch
            payload["deltas"] = list(self.unsent.get() or ())
            for user, state in self.restored_states():
                payload["users"][user] = [state, self._all_views(state)]

    def _all_views(self, state) -> set:
        return {LIFELONG, RECENT, STATS, *((CATEGORY, c) for c in state.categories)}

    def _categories(self, parsed: list, booted: dict, settled_ms: int) -> dict:
        """The online rows of the categories the batch's events start in their users' states, by
        (user, category), read in one call."""
        wanted = set()
        for _, event in parsed:
            if isinstance(event, Event) and event.timestamp >= settled_ms:
                held = self.cache.get(event.user_id)
                state = held[0] if held is not None else booted.get(event.user_id)
                category = None if state is None else user_state.needs_category(state, event, self.policy)
                if category is not None:
                    wanted.add((event.user_id, category))
        return self.boot_rows(sorted(wanted), _category_label, self.reader(CATEGORY)) if wanted else {}

    def _bootstrap(self, users: list[int]) -> dict[int, user_state.UserState]:
        """The states of users from their online rows (one read per view for them all)."""
        if not users:
            return {}
        views = (LIFELONG, RECENT, STATS)

        def read(todo: list[int]) -> list[dict]:
            return [dict(zip(views, rows)) for rows in zip(*self.read(views, todo))]
        rows = self.boot_rows(users, _user_label, read)
        return {user: user_state.bootstrap(self.policy, rows[user]) for user in users}

    def accepted_out(self):
        """The accepted lines not sent yet, as one ACCEPTED record."""
        if self.accepted:
            lines, self.accepted = self.accepted, []
            yield ACCEPTED, pack_lines(lines)

    def flush_batch(self, batch: dict):
        if not batch:
            return
        rows: dict[str, list[dict]] = {}
        deltas = []
        for payload in batch.values():
            for user, (state, views) in payload["users"].items():
                self._rows(rows, state, user, views)
            deltas.extend(payload["deltas"])
        self.writer.write(rows)
        yield from combine(deltas, self.buckets)

    def _rows(self, rows: dict, state, user: int, views) -> None:
        for view, view_rows in user_state.rows(state, user, views, self.policy, arrays=True).items():
            rows.setdefault(view, []).extend(view_rows)

    def keep(self, payload: dict) -> None:
        self.changed.update(list(payload["users"]))
        self.unsent.clear()
        if payload["deltas"]:
            self.unsent.add_all(payload["deltas"])

    def forget(self) -> None:
        self.unsent.clear()
        self.changed.clear()

    def recover(self, key):
        rows: dict[str, list[dict]] = {}
        for user, state in self.restored_states():
            self._rows(rows, state, user, self._all_views(state))
        self.writer.write(rows)
        yield from combine(self.unsent.get() or (), self.buckets)

    def _timers(self, bucket: int) -> ExampleTimers:
        timers = self.due.get(bucket)
        if timers is None:
            timers = self.due[bucket] = ExampleTimers()
            if self.restored:  # the bucket's joins from the checkpoint
                for user in self.joins.keys():
                    held = self.cache.get(user)
                    for ts in held[1].waiting() if held is not None and held[1] is not None else ():
                        timers.add(ts + self.window_ms + self.lateness_ms, user)
        return timers

    def on_timer(self, timestamp: int, ctx):
        yield from self.accepted_out()  # a flush tick's (or any timer's): not in flush_batch, which close() discards
        if ctx.time_domain() == TimeDomain.EVENT_TIME and self.window_ms is not None:
            bucket = ctx.get_current_key()
            watermark = ctx.timer_service().current_watermark()
            timers = self._timers(bucket)
            examples = []
            for user in timers.take(watermark):
                held = self.cache.get(user)
                if held is None or held[1] is None:
                    continue
                examples.extend(held[1].due(user, watermark - self.lateness_ms, self.window_ms))
                if not held[1].copies:
                    held[1] = None
                    self.joins.remove(user)
                self.cache.put(bucket, user, held)
            self.cache.trim(bucket)
            if timers.to_register is not None:
                ctx.timer_service().register_event_time_timer(timers.to_register)
                timers.to_register = None
            if examples:
                self.count("examples", len(examples))
                times = np.asarray([e[LABEL_MS] for e in examples], "<i8").tobytes()
                yield EXAMPLES, (times, pack_lines([example_json(e) for e in examples]))
        yield from super().on_timer(timestamp, ctx)


class ItemStatsFn(_Keyed):
    """Item statistics from the users' deltas, a record per item bucket: each item's stats state
    (in the bucket's MapState), started from its online row; a delta at or below that row's
    newest event is already in it and skipped (counted). A pending bucket's changed items are
    named in a ValueState at a mark, so a timer restored from a checkpoint writes them (``recover``)."""

    state_name = "items"
    views = (ITEM_STATS,)

    def process_element(self, record, ctx):
        if is_mark(record[1]):
            self.save(record[0], ctx)
            return iter(())
        self.arm(ctx)
        changed: dict[int, list] = {}  # item -> [stats state, floor]
        applied = skipped = 0
        deltas = split(record[1])
        booted = self._bootstrap([item for item in {d[0] for d in deltas} if self.cache.get(item) is None])
        for item, ts, signed in deltas:
            held = changed.get(item) or self.cache.get(item) or booted[item]
            changed[item] = held
            if ts <= held[1]:
                skipped += 1
            else:
                applied += 1
                stats.add(held[0], ts, mask_kinds(abs(signed)), 1 if signed > 0 else -1)
        for item, held in changed.items():
            self.cache.put(record[0], item, held)
        self.cache.trim(record[0])
        self.count("item_deltas_skipped", skipped)
        if applied:
            self.count("item_deltas", applied)
            items = self.mark(record[0], ctx)["items"]
            items.update((item, held[0]) for item, held in changed.items())
        if self.counts["item_deltas"] >= self.settings.every:
            self.report()
        return iter(())

    def started(self, key, payload: dict) -> None:
        payload["items"] = dict(self.restored_states()) if self.take_restored(key) else {}

    def _bootstrap(self, items: list[int]) -> dict[int, list]:
        """[stats state, floor] of items from their online rows (one read for them all)."""
        rows = self.boot_rows(items, _item_label, self.reader(ITEM_STATS)) if items else {}
        return {item: [stats.empty(), -1] if row is None else [stats.from_row(row), int(row["newest_ms"])]
                for item, row in rows.items()}

    def flush_batch(self, batch: dict):
        rows = [_item_row(item, state) for payload in batch.values() for item, state in payload["items"].items()]
        if rows:
            self.writer.write({ITEM_STATS: rows})
        return iter(())

    def keep(self, payload: dict) -> None:
        self.changed.update(list(payload["items"]))

    def recover(self, key):
        rows = [_item_row(item, state) for item, state in self.restored_states()]
        if rows:
            self.writer.write({ITEM_STATS: rows})
        return iter(())


def _user_label(user: int) -> str:
    return f"user:{user}"


def _category_label(key: tuple[int, int]) -> str:
    return f"cat:{key[0]}:{key[1]}"


def _item_label(item: int) -> str:
    return f"item:{item}"


def _item_row(item: int, state: stats.StatsState) -> dict:
    return {"item_id": item, **stats.state_row(state, arrays=True)}
