"""Point-in-time features for an entity table: for each (user_id, timestamp[, item_id,
category_id]) row, what serving would have read at that time. Sequences are slices of
the behavior log strictly before the row's time; statistics come from the event log
with the stats window definition. Rows are neither dropped nor reordered."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import stats
from features.offline import stat_kinds
from features.pit import SLICE_COLUMNS, key_time_order, sequences_as_of
from features.time import gap_bucket


def _prefixed(table: pa.Table, prefix: str) -> dict[str, pa.Array]:
    return {prefix + name: table.column(name) for name in table.column_names}


def _gaps(seq: pa.Table, times: np.ndarray) -> pa.Array:
    """Each behavior's time-gap bucket at the row's time, as a list column beside the sequence."""
    lengths = seq.column("seq_length").to_numpy()
    flat = np.repeat(times, lengths) - pc.list_flatten(seq.column("seq_timestamps")).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(gap_bucket(flat)))


def _pair_keys(a_users, a_cats, b_users, b_cats) -> tuple[np.ndarray, np.ndarray]:
    """Dense int keys for (user, category) pairs, equal across both sets, ordered by (user, category)."""
    pairs = np.stack([np.concatenate([a_users, b_users]), np.concatenate([a_cats, b_cats])], axis=1)
    _, keys = np.unique(pairs, axis=0, return_inverse=True)
    keys = keys.reshape(-1).astype(np.int64)
    return keys[: len(a_users)], keys[len(a_users):]


def point_in_time(entities: pa.Table, behavior_log: pa.Table, event_log: pa.Table,
                  caps: dict[str, int]) -> pa.Table:
    """caps: user_sequence (lifelong), user_recent, user_category_sequence lengths.

    ``behavior_log`` sorted by (user_id, timestamp, event_id); ``event_log`` any order."""
    users = entities.column("user_id").to_numpy()
    times = entities.column("timestamp").to_numpy()
    out: dict[str, pa.Array] = {name: entities.column(name) for name in entities.column_names}

    lifelong = sequences_as_of(behavior_log, users, times, caps["user_sequence"])
    out.update(_prefixed(lifelong, ""))
    out["seq_gap_buckets"] = _gaps(lifelong, times)
    out.update(_prefixed(sequences_as_of(behavior_log, users, times, caps["user_recent"]), "recent_"))

    if "category_id" in entities.column_names:
        log_keys, query_keys = _pair_keys(behavior_log.column("user_id").to_numpy(),
                                          behavior_log.column("category_id").to_numpy(),
                                          users, entities.column("category_id").to_numpy())
        # the log is in (user, timestamp, event_id) order: a stable sort by pair keeps it within each pair
        order = np.argsort(log_keys, kind="stable")
        by_pair = behavior_log.select(["timestamp", *SLICE_COLUMNS.keys() - {"timestamp"}]).take(pa.array(order))
        by_pair = by_pair.append_column("user_id", pa.array(log_keys[order]))
        out.update(_prefixed(sequences_as_of(by_pair, query_keys, times, caps["user_category_sequence"]), "cat_"))

    codes = event_log.column("event_type_code").to_numpy()
    for key, prefix in (("user_id", "user_"), ("item_id", "item_")):
        if key not in entities.column_names:
            continue
        keys = event_log.column(key).to_numpy()
        ev_times = event_log.column("timestamp").to_numpy()
        order = key_time_order(keys, ev_times)
        values = stats.as_of(keys[order], ev_times[order], stat_kinds(codes[order]),
                             entities.column(key).to_numpy(), times)
        out.update({prefix + name: pa.array(values[name]) for name in stats.feature_names()})
    return pa.table(out)
