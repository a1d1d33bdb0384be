"""bench/backfill_bench.py --parquet at a small size: the backfill (local engine), its Beam engine,
the direct reference and DuckDB run on the same Parquet events (with redeliveries and altered
copies), DuckDB's sequences and statistics are checked equal to both engines', and the speed
fields are there; the check fails
loudly on a difference. The expected numbers of users, items and copies are computed here from
the generated rows, not taken from the bench's own outputs."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.backfill_bench import (AS_OF_MS, BenchMismatch, check_counts, direct_job, make_parquet, parquet_table,
                                  run_parquet)
from bench.backfill_duckdb import SEQUENCE_COLUMNS, compare, duckdb_job
from features.ids import stable_id
from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, UNKNOWN_CATEGORY

EVENTS, DUPLICATES = 5000, 0.05


def expected(table: pa.Table) -> dict:
    """From the raw rows (every synthetic event is valid): the users, the users with a behavior
    (a sequence), the items among the copies kept, and the copies dropped. One copy per (user,
    event_id) is kept: the greatest (timestamp, hashed item, hashed category, type code)."""
    rows = table.to_pylist()
    best = {}
    for r in rows:
        category = UNKNOWN_CATEGORY if r["category_id"] is None else stable_id(r["category_id"])
        rank = (r["timestamp"], stable_id(r["item_id"]), category, EVENT_TYPE_CODE[r["event_type"]])
        key = (r["user_id"], r["event_id"])
        if key not in best or rank > best[key][0]:
            best[key] = (rank, r)
    return {"users": len({r["user_id"] for r in rows}),
            "sequence_users": len({r["user_id"] for r in rows if r["event_type"] in BEHAVIOR_TYPES}),
            "items": len({r["item_id"] for _, r in best.values()}),
            "duplicates": len(rows) - len(best)}


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.engine
def test_parquet_bench_checks_duckdb_against_the_backfill(tmp_path):
    make_parquet(tmp_path / "raw", EVENTS, user_factor=1, duplicates=DUPLICATES)  # what run_parquet generates
    data = pq.read_table(sorted((tmp_path / "raw").glob("*.parquet")))
    want = expected(data)
    [row] = run_parquet(EVENTS, workers=2, user_factor=1, duplicates=DUPLICATES)
    assert row["events"] == data.num_rows
    assert row["equal_to_duckdb"] == {"user_sequence": want["sequence_users"], "user_stats": want["users"],
                                      "item_stats": want["items"]}
    assert row["users"] == want["users"] > 10
    assert row["duplicates"] == want["duplicates"] > 100  # the dedup ran on every side, and agreed
    assert row["beam_args"] == "--direct_num_workers=2 --direct_running_mode=multi_processing"
    assert row["workers"] == row["duckdb_threads"] == 2  # DuckDB gets as many threads as the backfill
    for engine in ("backfill", "beam", "direct", "duckdb"):
        assert row[f"{engine}_events_per_s"] > 0 and row[f"{engine}_peak_mib"] > 0, engine
    # speeds as fractions of DuckDB's, unrounded (a small run's may be under 0.005)
    for engine in ("backfill", "beam"):
        assert row[f"{engine}_over_duckdb"] == pytest.approx(
            row[f"{engine}_events_per_s"] / row["duckdb_events_per_s"], rel=0.02)
    header, rule, line = parquet_table([row]).splitlines()
    printed = dict(zip(cells(header), cells(line)))
    assert len(cells(line)) == len(cells(header)) == rule.count("|") - 1
    assert printed["events"] == f"{data.num_rows:,}" and printed["workers"] == "2"
    assert float(printed["backfill/DuckDB speed"]) == pytest.approx(row["backfill_over_duckdb"], rel=0.05)
    assert float(printed["Beam/DuckDB speed"]) == pytest.approx(row["beam_over_duckdb"], rel=0.05)
    assert printed["equal (users, items)"] == f"{want['sequence_users']:,}, {want['items']:,}"


def test_the_printed_speed_ratio_is_never_rounded_to_zero():
    row = {"data": "d", "events": 5000, "users": 20, "workers": 1, "backfill_s": 0.2, "backfill_events_per_s": 25_000,
           "beam_events_per_s": 555, "direct_events_per_s": 900, "duckdb_s": 0.0, "duckdb_events_per_s": 163_000,
           "backfill_over_duckdb": 0.0034049, "beam_over_duckdb": 0.5671, "backfill_peak_mib": 200,
           "beam_peak_mib": 300, "duckdb_peak_mib": 100, "equal_to_duckdb": {"user_sequence": 20, "item_stats": 900}}
    header, _, line = parquet_table([row]).splitlines()
    printed = dict(zip(cells(header), cells(line)))
    assert printed["backfill/DuckDB speed"] == "0.0034" and printed["Beam/DuckDB speed"] == "0.57"


def test_check_counts_raises_an_explicit_error_naming_the_counts():
    beam = {"read": 10, "accepted": 9, "duplicates": 2}
    check_counts(beam, dict(beam), "DuckDB")
    with pytest.raises(BenchMismatch, match=r"^DuckDB counts differ from the backfill's: read 10 vs 10, "
                                            r"accepted 8 vs 9, duplicates 2 vs 2$"):
        check_counts(beam, {**beam, "accepted": 8}, "DuckDB")


def test_duckdb_job_takes_its_thread_count_and_paths_with_quotes(tmp_path):
    raw = tmp_path / "it's raw"
    rows = make_parquet(raw, 600, duplicates=0.1)
    for threads in (1, 2):
        out = tmp_path / f"o'ut {threads}"
        got = duckdb_job(str(raw / "*.parquet"), str(out), 200, AS_OF_MS, None, threads)
        assert got["threads"] == threads and got["read"] == rows == got["accepted"] and got["duplicates"] > 0
        assert {p.name for p in out.iterdir()} == {"user_sequence.parquet", "user_stats.parquet", "item_stats.parquet"}
    one, two = (pq.read_table(tmp_path / f"o'ut {t}" / "user_stats.parquet").sort_by("user_id") for t in (1, 2))
    assert one.equals(two)  # the same counts on 1 thread as on 2
    with pytest.raises(ValueError, match="threads must be >= 1"):
        duckdb_job(str(raw / "*.parquet"), str(tmp_path / "o"), 200, AS_OF_MS, None, 0)


def test_direct_job_tells_parquet_by_its_name_in_any_case(tmp_path):
    rows = make_parquet(tmp_path / "raw", 600)
    for path in (tmp_path / "raw").glob("*.parquet"):
        path.rename(path.with_suffix(".PARQUET"))
    got = direct_job(str(tmp_path / "raw" / "*.PARQUET"), str(tmp_path / "out"), 1)
    assert got["read"] == rows == got["accepted"]


def test_compare_names_the_user_whose_sequence_differs(tmp_path):
    seq = {"user_id": [1, 2], "seq_item_ids": [[5, 6], [7]], "seq_category_ids": [[0, 0], [1]],
           "seq_event_types": [[2, 3], [2]], "seq_timestamps": [[10, 11], [12]], "seq_length": [2, 1],
           "last_event_ms": [11, 12]}
    (tmp_path / "backfill" / "user_sequence").mkdir(parents=True)
    (tmp_path / "duckdb").mkdir()
    pq.write_table(pa.table(seq), tmp_path / "backfill" / "user_sequence" / "part-00000.parquet")
    pq.write_table(pa.table({**seq, "seq_item_ids": [[5, 6], [8]]}), tmp_path / "duckdb" / "user_sequence.parquet")
    with pytest.raises(AssertionError, match=r"user_sequence\.seq_item_ids differs on 1 user_ids, e\.g\. user_id 2"):
        compare(tmp_path / "backfill", tmp_path / "duckdb")
    pq.write_table(pa.table({k: seq[k][:1] for k in ("user_id", *SEQUENCE_COLUMNS)}),
                   tmp_path / "duckdb" / "user_sequence.parquet")
    with pytest.raises(AssertionError, match="the backfill has 2 user_ids and DuckDB 1"):
        compare(tmp_path / "backfill", tmp_path / "duckdb")


def test_the_step_timings_cover_every_table_the_backfill_writes(tmp_path):
    from bench.backfill_steps import steps
    from features.tables import TABLES

    make_parquet(tmp_path / "raw", 3000)
    got = steps(tmp_path / "raw", str(tmp_path / "out"), shards_n=4)
    assert set(got) == {"read and validate", "dedup and behavior log", "sequences", "examples",
                        "event log and user statistics", "schemas and packed online rows", "Parquet writes",
                        "split by item", "item statistics"}
    assert all(s >= 0 for s in got.values())
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == set(TABLES) - {"rejected"}  # synthetic events are all valid: nothing rejected
    assert pq.read_table(tmp_path / "out" / "item_stats").num_rows > 0
