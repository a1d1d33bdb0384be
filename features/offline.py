"""Vectorized builders of the offline tables from a batch of validated events.

The batch engines call these on whole shards (every event of a set of users),
so no per-event Python loop runs here except next_item labels (seeded per event).
Each function equals its per-user counterpart (sequence, labels, stats); tests
hold them to the naive oracles.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import stats
from features.labels import EXAMPLE_SCHEMA, LabelPolicy, build_examples
from features.negatives import ItemPool
from features.pit import sequences_as_of
from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, UNKNOWN_CATEGORY, table_to_events
from features.sequence import SequencePolicy
from features.tables import BEHAVIOR_LOG_SCHEMA, EVENT_LOG_SCHEMA

FAR_FUTURE_MS = np.iinfo(np.int64).max


_TYPE_NAMES = pa.array(["", *EVENT_TYPE_CODE])  # code i is _TYPE_NAMES[i]


def type_codes(table: pa.Table) -> np.ndarray:
    """EVENT_TYPE_CODE of each row's event_type (0 for a name it lacks)."""
    codes = pc.index_in(table.column("event_type"), value_set=_TYPE_NAMES)
    return pc.fill_null(codes, 0).to_numpy().astype(np.int32) if len(table) else np.empty(0, np.int32)


def dedup(table: pa.Table) -> tuple[pa.Table, int]:
    """One row per (user_id, event_id): the copy with the greatest (timestamp, event_id, item,
    category, type code). Event ids are per user, as in the stream's keyed state.
    Returns the table (in no particular order) and the number of copies dropped."""
    kept = _greatest(table, [])
    return table.take(pa.array(kept)), int(table.num_rows - len(kept))


def _greatest(table: pa.Table, extra_keys: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Row numbers of the greatest copy per (user_id, *extra keys, event_id) (see dedup)."""
    if table.num_rows == 0:
        return np.empty(0, np.int64)
    event = _text_rank(table.column("event_id"))
    keyed = pa.table({"user_id": table.column("user_id"), **{name: pa.array(v) for name, v in extra_keys},
                      "event_id": event, "timestamp": table.column("timestamp"), "item_id": table.column("item_id"),
                      "_cat": pc.fill_null(table.column("category_id"), UNKNOWN_CATEGORY),
                      "_code": pa.array(type_codes(table))})
    group = ["user_id", *[name for name, _ in extra_keys], "event_id"]
    order = pc.sort_indices(keyed, sort_keys=[(k, "ascending") for k in keyed.column_names]).to_numpy()
    last = np.zeros(len(order), dtype=bool)
    last[-1] = True
    for name in group:
        values = keyed.column(name).to_numpy()[order]
        last[:-1] |= values[:-1] != values[1:]
    return order[last]


def _text_rank(column: pa.ChunkedArray) -> pa.Array:
    """Each value's rank among the column's distinct values in text order: sorting by it sorts by
    the text (so the result does not depend on the input's order), without comparing strings in
    a sort of many keys."""
    encoded = column.combine_chunks().dictionary_encode()
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return pa.array(rank[encoded.indices.to_numpy()])


def behavior_log(events: pa.Table, policy: SequencePolicy) -> pa.Table:
    """The sorted, deduplicated log of the policy's event types (dedup among those types only)."""
    mask = pc.is_in(events.column("event_type"), pa.array(sorted(policy.event_types)))
    kept, _ = dedup(events.filter(mask))
    log = pa.table({
        "user_id": kept.column("user_id"),
        "timestamp": kept.column("timestamp"),
        "event_id": kept.column("event_id"),
        "item_id": kept.column("item_id"),
        "category_id": pc.fill_null(kept.column("category_id"), UNKNOWN_CATEGORY),
        "event_type_code": pa.array(type_codes(kept), pa.int32()),
    }, schema=BEHAVIOR_LOG_SCHEMA)
    return log.sort_by([("user_id", "ascending"), ("timestamp", "ascending"), ("event_id", "ascending")])


def capped_log(events: pa.Table, policy: SequencePolicy) -> pa.Table:
    """The behavior-log rows that survive the policy's per-type caps (sequence.py, type_caps):
    in each pool (a capped type's copies; the uncapped types' copies) one copy per event_id and
    the most recent pool-limit of them; then one copy per event_id across pools. Sorted like
    behavior_log; its last max_len per user are the user's sequence."""
    typed = events.filter(pc.is_in(events.column("event_type"), pa.array(sorted(policy.event_types))))
    if typed.num_rows == 0:
        return behavior_log(typed, policy)
    limits = policy.pool_limits()
    codes = type_codes(typed)
    pool = np.where(np.isin(codes, [c for c in limits if c is not None]), codes, 0)
    first = _greatest(typed, [("_pool", pool)])
    typed, pool = typed.take(pa.array(first)), pool[first]
    order = pc.sort_indices(typed.append_column("_pool", pa.array(pool)), sort_keys=[
        ("user_id", "ascending"), ("_pool", "ascending"), ("timestamp", "ascending"),
        ("event_id", "ascending")]).to_numpy()
    users, pools = typed.column("user_id").to_numpy()[order], pool[order]
    ends = np.flatnonzero(np.r_[(users[1:] != users[:-1]) | (pools[1:] != pools[:-1]), True])
    group_end = np.repeat(ends, np.diff(np.r_[-1, ends]))  # each row's last row in its (user, pool)
    limit = np.array([limits.get(code or None, 0) for code in range(max(EVENT_TYPE_CODE.values()) + 1)])[pools]
    survivors = typed.take(pa.array(order[group_end - np.arange(len(order)) < limit]))
    return behavior_log(survivors, policy)


def lifelong_sequences(events: pa.Table, log: pa.Table, policy: SequencePolicy) -> pa.Table:
    """Each user's lifelong sequence under the policy (sequence.finalize after every event):
    ``events`` are the raw (not deduplicated) events, ``log`` is behavior_log(events, policy)."""
    if policy.type_caps:
        log = capped_log(events, policy)
    return latest_sequences(log, policy.max_len)


def event_log(events: pa.Table) -> pa.Table:
    """Deduplicated events reduced to what statistics need, sorted by (user_id, timestamp)."""
    table = pa.table({"user_id": events.column("user_id"), "item_id": events.column("item_id"),
                      "timestamp": events.column("timestamp"),
                      "event_type_code": pa.array(type_codes(events), pa.int32())}, schema=EVENT_LOG_SCHEMA)
    return table.sort_by([("user_id", "ascending"), ("timestamp", "ascending")])


def stat_kinds(codes: np.ndarray) -> np.ndarray:
    """The (n, len(stats.KINDS)) 0/1 matrix of which counters each event increments."""
    behaviors = np.isin(codes, [EVENT_TYPE_CODE[t] for t in BEHAVIOR_TYPES])
    return np.stack([codes == EVENT_TYPE_CODE["impression"], codes == EVENT_TYPE_CODE["click"], behaviors],
                    axis=1).astype(np.int64)


def latest_sequences(log: pa.Table, max_len: int, key: str = "user_id") -> pa.Table:
    """Each key's last max_len behaviors (sequence.finalize after every event), plus last_event_ms.
    Keys with no behavior get no row. ``log`` is sorted by (key, timestamp, event_id)."""
    keys = np.unique(log.column(key).to_numpy())
    seqs = sequences_as_of(log.select([key, "timestamp", "item_id", "category_id", "event_type_code"])
                           .rename_columns(["user_id", "timestamp", "item_id", "category_id", "event_type_code"]),
                           keys, np.full(len(keys), FAR_FUTURE_MS), max_len)
    last_ends = np.searchsorted(log.column(key).to_numpy(), keys, side="right") - 1
    last_ms = log.column("timestamp").to_numpy()[last_ends] if len(keys) else np.empty(0, np.int64)
    return seqs.append_column(key, pa.array(keys, pa.int64())).append_column(
        "last_event_ms", pa.array(last_ms, pa.int64()))


def impression_click(events: pa.Table, window_ms: int) -> pa.Table:
    """labels.impression_click for every user at once: an impression is positive when the same
    (user, item) has a click in [t, t + window]."""
    codes = type_codes(events)
    users, items = events.column("user_id").to_numpy(), events.column("item_id").to_numpy()
    times = events.column("timestamp").to_numpy()
    imp = np.flatnonzero(codes == EVENT_TYPE_CODE["impression"])
    clk = np.flatnonzero(codes == EVENT_TYPE_CODE["click"])
    corder = clk[np.lexsort((times[clk], items[clk], users[clk]))]
    ck_u, ck_i, ck_t = users[corder], items[corder], times[corder]
    # First click of the same (user, item) at or after t: search in the composite sorted order.
    first = _search3(ck_u, ck_i, ck_t, users[imp], items[imp], times[imp])
    hit = first < len(corder)
    safe = np.minimum(first, max(len(corder) - 1, 0))
    same = hit & (ck_u[safe] == users[imp]) & (ck_i[safe] == items[imp]) if len(corder) else hit
    label = same & (ck_t[safe] <= times[imp] + window_ms) if len(corder) else same
    cats = pc.fill_null(events.column("category_id"), UNKNOWN_CATEGORY).to_numpy()
    return pa.table({"user_id": users[imp], "item_id": items[imp], "category_id": cats[imp],
                     "timestamp": times[imp], "label": label.astype(np.int8)}, schema=EXAMPLE_SCHEMA)


def _search3(a, b, c, qa, qb, qc) -> np.ndarray:
    """Left insertion points of (qa, qb, qc) into rows sorted lexicographically by (a, b, c)."""
    n = len(a)
    tag = np.concatenate([np.ones(n, np.int8), np.zeros(len(qa), np.int8)])
    order = np.lexsort((tag, np.concatenate([c, qc]), np.concatenate([b, qb]), np.concatenate([a, qa])))
    before = np.cumsum(tag[order]) - tag[order]
    out = np.empty(len(qa), np.int64)
    is_q = order >= n
    out[order[is_q] - n] = before[is_q]
    return out


def examples(events: pa.Table, policy: LabelPolicy, pool: ItemPool | None = None,
             until_ms: int | None = None) -> pa.Table:
    """Labeled examples of a deduplicated batch of events (any users, any order).

    ``pool``: where next_item negatives come from (features/negatives.py); None: these events'
    own behaviors, which is right when they are every user's. ``until_ms``: the end of the data. An impression whose click window is not over by then
    cannot be labeled yet (its click may come later) and yields no example."""
    if policy.kind == "impression_click":
        labeled = impression_click(events, policy.window_ms)
        if until_ms is None:
            return labeled
        return labeled.filter(pc.less(pc.add(labeled.column("timestamp"), policy.window_ms), until_ms))
    pool = ItemPool.from_table(events) if pool is None else pool
    rows = []
    by_user = events.sort_by([("user_id", "ascending")])
    users = by_user.column("user_id").to_numpy()
    bounds = np.flatnonzero(np.diff(users)) + 1
    for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(users)]):
        if end > start:
            rows += build_examples(table_to_events(by_user.slice(start, end - start)), policy, pool)
    cols = list(zip(*rows)) if rows else [[] for _ in EXAMPLE_SCHEMA]
    return pa.table([pa.array(c, f.type) for c, f in zip(cols, EXAMPLE_SCHEMA)], schema=EXAMPLE_SCHEMA)


def latest_stats(events: pa.Table, key: str, as_of_ms: int) -> pa.Table:
    """stats features per key as of as_of_ms (after every event), from deduplicated events."""
    order = np.lexsort((events.column("timestamp").to_numpy(), events.column(key).to_numpy()))
    keys = events.column(key).to_numpy()[order]
    times = events.column("timestamp").to_numpy()[order]
    kinds = stat_kinds(type_codes(events)[order])
    unique, values = stats.every_key_as_of(keys, times, kinds, as_of_ms)
    before = times < as_of_ms  # the state a row holds is the state as of its time, like its values
    state = stats.state_columns(keys[before], times[before], kinds[before], unique)
    lists = {name: pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.int64()))
             for name, (offsets, flat) in ((n, state[n]) for n in ("tile_starts", "tile_counts"))}
    return pa.table({key: pa.array(unique, pa.int64()), **{n: values[n] for n in stats.feature_names()},
                     "newest_ms": pa.array(state["newest_ms"], pa.int64()), **lists})


def latest_category_sequences(log: pa.Table, max_len: int) -> pa.Table:
    """Each (user, category)'s last max_len behaviors: the SIM hard-search sub-sequences."""
    by_cat = log.sort_by([("user_id", "ascending"), ("category_id", "ascending"),
                          ("timestamp", "ascending"), ("event_id", "ascending")])
    users, cats = by_cat.column("user_id").to_numpy(), by_cat.column("category_id").to_numpy()
    new = np.ones(len(users), dtype=bool)
    new[1:] = (users[1:] != users[:-1]) | (cats[1:] != cats[:-1])
    group = np.cumsum(new) - 1  # 0, 1, ... in (user, category) order
    seqs = latest_sequences(by_cat.append_column("group", pa.array(group, pa.int64())), max_len, key="group")
    first = np.flatnonzero(new)
    return seqs.drop_columns(["group"]).append_column("user_id", pa.array(users[first], pa.int64())) \
        .append_column("category_id", pa.array(cats[first], pa.int64()))
