"""Point-in-time sequences as slices of a time-sorted behavior log.

The log holds one row per behavior, sorted by (user_id, timestamp, event_id) and
deduplicated by event_id. The sequence of a user "as of t" is the run of that
user's behaviors with timestamp strictly before t, of which the last
``max_len`` are kept: exactly what sequence.finalize gave at time t, provided the
copies of an event_id share its timestamp (a copy with another timestamp makes the
log hold the event once, at the greatest copy's time, so before then it is absent).
Everything here is vectorized numpy; no per-row Python loop.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LOG_COLUMNS = ("user_id", "timestamp", "event_id", "item_id", "category_id", "event_type_code")
LARGE_LIST_VALUES = 2**31  # list columns with this many values in all need int64 offsets (large_list)
SLICE_COLUMNS = {
    "item_id": "seq_item_ids",
    "category_id": "seq_category_ids",
    "event_type_code": "seq_event_types",
    "timestamp": "seq_timestamps",
}


def sort_log(log: pa.Table) -> pa.Table:
    """Sort a behavior log by (user_id, timestamp, event_id)."""
    return log.sort_by([("user_id", "ascending"), ("timestamp", "ascending"), ("event_id", "ascending")])


def key_time_order(keys: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The stable permutation that sorts rows by (key, time), as np.lexsort((times, keys)) does.
    Cheap (O(n) plus a sort of the distinct keys) when each key's rows already form one
    time-sorted run, as in the backfill's event log (sorted by user within each user shard);
    a full sort otherwise."""
    keys, times = np.asarray(keys, np.int64), np.asarray(times, np.int64)
    n = len(keys)
    new_key = keys[1:] != keys[:-1]
    starts = np.concatenate([[0], np.flatnonzero(new_key) + 1]).astype(np.int64) if n else np.zeros(0, np.int64)
    run_keys = keys[starts]
    time_sorted_runs = bool(np.all(new_key | (times[1:] >= times[:-1])))
    if time_sorted_runs and len(np.unique(run_keys)) == len(run_keys):
        by_key = np.argsort(run_keys, kind="stable")
        lengths = np.diff(np.concatenate([starts, [n]]))[by_key]
        moved = starts[by_key] - np.concatenate([[0], np.cumsum(lengths)[:-1]])  # each run's shift
        return np.arange(n, dtype=np.int64) + np.repeat(moved, lengths)
    return pc.sort_indices(pa.table({"k": keys, "t": times}), sort_keys=[("k", "ascending"), ("t", "ascending")]
                           ).to_numpy().astype(np.int64)


def rows_before(log_keys: np.ndarray, log_times: np.ndarray, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each (key, time) query, the number of log rows ordered before it: rows of smaller
    keys plus rows of the same key with time strictly before. The log is sorted by (key, time)."""
    begin, end = key_ranges(log_keys, keys)
    return first_at_or_after(log_times, begin, end, np.asarray(times, dtype=np.int64))


def key_ranges(log_keys: np.ndarray, keys) -> tuple[np.ndarray, np.ndarray]:
    """The per-key index of a log sorted by key: each query key's rows are [begin, end) (empty,
    at its insertion point, for a key the log lacks). The sorted key column is the index, so
    nothing is built or sorted per call: a binary search per query."""
    distinct, inverse = np.unique(np.asarray(keys, dtype=np.int64), return_inverse=True)  # searched once each
    begin = np.searchsorted(log_keys, distinct, side="left").astype(np.int64)
    end = np.searchsorted(log_keys, distinct, side="right").astype(np.int64)
    return begin[inverse.reshape(-1)], end[inverse.reshape(-1)]


def first_at_or_after(values: np.ndarray, begin: np.ndarray, end: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each query, the first position in [begin, end) whose value is >= its target (end if none),
    where values are sorted within each range: a binary search run for all queries at once
    (about log2 of the longest range rounds of vectorized steps)."""
    order = np.lexsort((targets, begin))  # nearby queries together: the log is read in order
    lo, hi, goal = begin[order], end[order], targets[order]
    live = np.flatnonzero(lo < hi)
    while len(live):
        mid = (lo[live] + hi[live]) // 2
        below = values[mid] < goal[live]
        lo[live] = np.where(below, mid + 1, lo[live])
        hi[live] = np.where(below, hi[live], mid)
        live = live[lo[live] < hi[live]]
    out = np.empty_like(lo)
    out[order] = lo
    return out


def slice_bounds(log_users: np.ndarray, log_times: np.ndarray, users: np.ndarray, times: np.ndarray,
                 max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) row ranges into the sorted log for each (user, time) query: O(queries * log(log rows))."""
    user_begin, user_end = key_ranges(log_users, users)
    end = first_at_or_after(log_times, user_begin, user_end, np.asarray(times, dtype=np.int64))
    return np.maximum(user_begin, end - max_len), end


def sequences_as_of(log: pa.Table, users, times, max_len: int) -> pa.Table:
    """List columns (seq_item_ids, ...) and seq_length for each (user, time) query. Lists use int32
    offsets, or int64 (large_list) when the slices hold 2**31 values or more."""
    log_users = log.column("user_id").to_numpy()
    log_times = log.column("timestamp").to_numpy()
    start, end = slice_bounds(log_users, log_times, users, times, max_len)
    lengths = end - start
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    index = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths) + np.repeat(start, lengths)
    take = pa.array(index)
    large = offsets[-1] >= LARGE_LIST_VALUES
    list_array = pa.LargeListArray if large else pa.ListArray
    offsets = pa.array(offsets if large else offsets.astype(np.int32))
    columns = {}
    for log_name, seq_name in SLICE_COLUMNS.items():
        values = pc.take(log.column(log_name), take).combine_chunks()
        columns[seq_name] = list_array.from_arrays(offsets, values)
    columns["seq_length"] = pa.array(lengths, type=pa.int64())
    return pa.table(columns)


def counts_before(log_keys: np.ndarray, log_times: np.ndarray, keys, times) -> np.ndarray:
    """For each (key, time) query, how many log rows of that key have a time strictly before it.
    The log is sorted by (key, time): e.g. an item-sorted event log gives each item's count of
    events before a request, the point-in-time popularity."""
    begin, end = key_ranges(log_keys, keys)
    return first_at_or_after(log_times, begin, end, np.asarray(times, dtype=np.int64)) - begin
