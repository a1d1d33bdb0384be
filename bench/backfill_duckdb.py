"""The backfill's core outputs computed by DuckDB in SQL, for bench/backfill_bench.py --parquet to
time beside the backfill on the same Parquet files, and the check that both agree.

What DuckDB computes, with the backfill's definitions (features.validate, features.offline,
features.stats):
  - validation, as far as the bench's synthetic events need it: required fields present (event_id
    non-empty), event_type one of the known types, timestamp within [1990, now + 1 day], strings
    at most 1024 characters, position within int32. The bench's files hold integer IDs, string
    event IDs and integer ms times; other raw types (string IDs, ISO times) are not handled here.
  - IDs hashed as the backfill hashes them (features.ids.stable_id, keyed BLAKE2b): each distinct
    raw ID is hashed once in Python and joined in, so the outputs are in the backfill's ID space
    and the dedup tie-breaks below order hashed IDs as features.offline does;
  - dedup by (user, event_id), keeping the greatest (timestamp, item, category, type code) copy:
    among behaviors for the sequences (the behavior log), among all events for the statistics;
  - user_sequence: each user's latest max_len behaviors in (timestamp, event_id) order;
  - user_stats, item_stats: impressions, clicks and behaviors over 1h, 1d, 7d and lifetime as of
    as_of_ms (a window counts events before as_of_ms whose minute tile starts within it).
Not computed: examples, recent and category sequences, event and behavior logs, CTRs, the stats'
mergeable state, rejected records. The backfill writes all of those too.

DuckDB runs on ``threads`` threads (SET threads; its default is every core): the bench gives it
as many as the backfill has workers, so both use the same cores.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE
from features.stats import KINDS, LIFETIME, TILE_MS, WINDOWS
from features.validate import MAX_FIELD_CHARS, MAX_FUTURE_MS, MIN_TIMESTAMP_MS

SEQUENCE_COLUMNS = ("seq_item_ids", "seq_category_ids", "seq_event_types", "seq_timestamps", "seq_length",
                    "last_event_ms")
COUNT_COLUMNS = tuple(f"{k}_{w}" for w in (*WINDOWS, LIFETIME) for k in KINDS)


def sql_string(text: str) -> str:
    """A SQL string literal of any text: quotes doubled (a path may hold a ')."""
    return "'" + str(text).replace("'", "''") + "'"


def duckdb_job(parquet_glob: str, out: str, max_len: int, as_of_ms: int, now_ms: int | None = None,
               threads: int | None = None) -> dict:
    """Write out/user_sequence.parquet, out/user_stats.parquet and out/item_stats.parquet from the raw
    event files, on ``threads`` threads (None: DuckDB's default, every core); returns {"read",
    "accepted", "duplicates", "threads"} (threads: the setting DuckDB ran with)."""
    import duckdb

    from features.ids import stable_ids

    now = now_ms if now_ms is not None else int(time.time() * 1000)
    Path(out).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        con.execute(f"SET threads = {int(threads)}")
    [(ran_with,)] = con.execute("SELECT current_setting('threads')").fetchall()

    def sql(query: str) -> list[tuple]:
        return con.execute(query).fetchall()  # fetched to the end: the connection takes no new query before

    codes = " ".join(f"WHEN '{name}' THEN {code}" for name, code in EVENT_TYPE_CODE.items())
    sql(f"""
        CREATE TEMP TABLE src AS
        SELECT event_id, user_id, item_id, category_id, event_type, "timestamp" AS ts,
               CAST(CASE event_type {codes} END AS INTEGER) AS code,
               event_id IS NOT NULL AND event_id <> '' AND length(event_id) <= {MAX_FIELD_CHARS}
               AND user_id IS NOT NULL AND item_id IS NOT NULL AND event_type IS NOT NULL
               AND "timestamp" IS NOT NULL AND code IS NOT NULL  -- an unknown event_type has no code
               AND "timestamp" >= {MIN_TIMESTAMP_MS} AND "timestamp" <= {now + MAX_FUTURE_MS}
               AND (request_id IS NULL OR length(request_id) <= {MAX_FIELD_CHARS})
               AND (position IS NULL OR position BETWEEN {-(2**31)} AND {2**31 - 1}) AS valid
        FROM read_parquet({sql_string(parquet_glob)})""")
    [(read, accepted)] = sql("SELECT count(*), count(*) FILTER (valid) FROM src")
    for name in ("user_id", "item_id", "category_id"):  # each distinct raw ID hashed once, as validation does
        raw = con.sql(f"SELECT DISTINCT {name} FROM src WHERE valid AND {name} IS NOT NULL").to_arrow_table()
        con.register(f"{name}_map", pa.table({"raw": raw.column(0), "id": stable_ids(raw.column(0))}))
    sql("""
        CREATE TEMP TABLE ev AS
        SELECT u.id AS user_id, s.event_id, i.id AS item_id, coalesce(c.id, 0) AS category_id, s.code, s.ts
        FROM src s JOIN user_id_map u ON s.user_id = u.raw JOIN item_id_map i ON s.item_id = i.raw
        LEFT JOIN category_id_map c ON s.category_id = c.raw
        WHERE s.valid""")
    greatest = "ORDER BY ts DESC, item_id DESC, category_id DESC, code DESC"  # features.offline.dedup's copy
    sql(f"""CREATE TEMP TABLE deduped AS SELECT * FROM ev
                    QUALIFY row_number() OVER (PARTITION BY user_id, event_id {greatest}) = 1""")
    behaviors = ", ".join(str(EVENT_TYPE_CODE[t]) for t in sorted(BEHAVIOR_TYPES))
    order = "ORDER BY ts, event_id"
    sql(f"""
        COPY (
          WITH log AS (SELECT * FROM ev WHERE code IN ({behaviors})
                       QUALIFY row_number() OVER (PARTITION BY user_id, event_id {greatest}) = 1),
          latest AS (SELECT * FROM log
                     QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, event_id DESC) <= {max_len})
          SELECT user_id, list(item_id {order}) AS seq_item_ids, list(category_id {order}) AS seq_category_ids,
                 list(code {order}) AS seq_event_types, list(ts {order}) AS seq_timestamps,
                 count(*) AS seq_length, max(ts) AS last_event_ms
          FROM latest GROUP BY user_id
        ) TO {sql_string(Path(out) / "user_sequence.parquet")} (FORMAT parquet)""")
    kinds = {"impressions": f"code = {EVENT_TYPE_CODE['impression']}", "clicks": f"code = {EVENT_TYPE_CODE['click']}",
             "behaviors": f"code IN ({behaviors})"}
    counts = [f"count(*) FILTER ({kinds[k]} AND ts < {as_of_ms}) AS {k}_{LIFETIME}" for k in KINDS]
    for w, length in WINDOWS.items():
        counts += [f"count(*) FILTER ({kinds[k]} AND ts < {as_of_ms} AND ts - ts % {TILE_MS} >= {as_of_ms - length}) "
                   f"AS {k}_{w}" for k in KINDS]
    for key, table in (("user_id", "user_stats"), ("item_id", "item_stats")):
        sql(f"COPY (SELECT {key}, {', '.join(counts)} FROM deduped GROUP BY {key}) "
            f"TO {sql_string(Path(out) / f'{table}.parquet')} (FORMAT parquet)")
    [(kept,)] = sql("SELECT count(*) FROM deduped")
    con.close()
    return {"read": read, "accepted": accepted, "duplicates": accepted - kept, "threads": int(ran_with)}


def compare(backfill_out: str | Path, duckdb_out: str | Path) -> dict:
    """Check that DuckDB's user sequences and statistics counts equal the backfill's, for every user
    and item; raises AssertionError naming the first key that differs. Returns how many were compared."""
    checked = {}
    for table, key, columns in (("user_sequence", "user_id", SEQUENCE_COLUMNS),
                                ("user_stats", "user_id", COUNT_COLUMNS),
                                ("item_stats", "item_id", COUNT_COLUMNS)):
        ours = pq.read_table(Path(backfill_out) / table, columns=[key, *columns]).sort_by(key)
        theirs = pq.read_table(Path(duckdb_out) / f"{table}.parquet", columns=[key, *columns]).sort_by(key)
        keys, other = ours.column(key).to_numpy(), theirs.column(key).to_numpy()
        if not np.array_equal(keys, other):
            missing = sorted(set(keys.tolist()) ^ set(other.tolist()))[:3]
            raise AssertionError(f"{table}: the backfill has {len(keys)} {key}s and DuckDB {len(other)}; "
                                 f"in one only: {missing}")
        for column in columns:
            differ = _differing_rows(ours.column(column), theirs.column(column))
            if len(differ):
                i = int(differ[0])
                raise AssertionError(f"{table}.{column} differs on {len(differ)} {key}s, e.g. {key} {keys[i]}: "
                                     f"backfill {ours.column(column)[i]} vs DuckDB {theirs.column(column)[i]}")
        checked[table] = len(keys)
    return checked


def _differing_rows(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """Row numbers where two columns (integers, or lists of integers) differ."""
    a, b = a.combine_chunks(), b.combine_chunks()
    if not (pa.types.is_list(a.type) or pa.types.is_large_list(a.type)):
        return np.flatnonzero(a.to_numpy(zero_copy_only=False) != b.to_numpy(zero_copy_only=False))
    la = pc.list_value_length(a).to_numpy(zero_copy_only=False)
    lb = pc.list_value_length(b).to_numpy(zero_copy_only=False)
    differ = la != lb
    if differ.any():
        return np.flatnonzero(differ)
    va = pc.list_flatten(a).to_numpy(zero_copy_only=False)
    vb = pc.list_flatten(b).to_numpy(zero_copy_only=False)
    row = np.repeat(np.arange(len(la)), la)
    return np.unique(row[va != vb])
