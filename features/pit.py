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
SLICE_COLUMNS = {
    "item_id": "seq_item_ids",
    "category_id": "seq_category_ids",
    "event_type_code": "seq_event_types",
    "timestamp": "seq_timestamps",
}


def sort_log(log: pa.Table) -> pa.Table:
    """Sort a behavior log by (user_id, timestamp, event_id)."""
    return log.sort_by([("user_id", "ascending"), ("timestamp", "ascending"), ("event_id", "ascending")])


def rows_before(log_keys: np.ndarray, log_times: np.ndarray, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each (key, time) query, the number of log rows ordered before it: rows of smaller
    keys plus rows of the same key with time strictly before. The log is sorted by (key, time)."""
    keys = np.asarray(keys, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    n_log = len(log_keys)
    # Merge queries into the log order; a query sorts before log rows of equal (key, time).
    is_log = np.concatenate([np.ones(n_log, np.int8), np.zeros(len(keys), np.int8)])
    order = np.lexsort((is_log, np.concatenate([log_times, times]), np.concatenate([log_keys, keys])))
    log_rows_before = np.cumsum(is_log[order]) - is_log[order]
    out = np.empty(len(keys), dtype=np.int64)
    query_pos = order >= n_log
    out[order[query_pos] - n_log] = log_rows_before[query_pos]
    return out


def slice_bounds(log_users: np.ndarray, log_times: np.ndarray, users: np.ndarray, times: np.ndarray,
                 max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) row ranges into the sorted log for each (user, time) query."""
    user_begin = np.searchsorted(log_users, np.asarray(users, dtype=np.int64), side="left")
    end = rows_before(log_users, log_times, users, times)
    start = np.maximum(user_begin, end - max_len)
    return start, end


def sequences_as_of(log: pa.Table, users, times, max_len: int) -> pa.Table:
    """List columns (seq_item_ids, ...) and seq_length for each (user, time) query."""
    log_users = log.column("user_id").to_numpy()
    log_times = log.column("timestamp").to_numpy()
    start, end = slice_bounds(log_users, log_times, users, times, max_len)
    lengths = end - start
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    index = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths) + np.repeat(start, lengths)
    take = pa.array(index)
    columns = {}
    for log_name, seq_name in SLICE_COLUMNS.items():
        values = pc.take(log.column(log_name), take).combine_chunks()
        columns[seq_name] = pa.ListArray.from_arrays(pa.array(offsets), values)
    columns["seq_length"] = pa.array(lengths, type=pa.int64())
    return pa.table(columns)
