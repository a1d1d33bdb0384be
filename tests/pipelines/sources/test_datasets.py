"""Dataset loaders: the real MovieLens and Taobao files, a generic CSV, Parquet event logs, errors."""
from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import NOW_MS, T0
from features.ids import stable_id
from features.schema import Event, Rejection
from features.validate import parse_event
from pipelines.sources.datasets import (DatasetError, Notes, csv_events, movielens_catalog, movielens_events,
                                        parquet_events, taobao_events)


def validate_all(records):
    return [parse_event(r, now_ms=NOW_MS) for r in records]


# --- real data (skipped where ../shared/data is absent) ---------------------------------------

def test_movielens_small_ratings_all_validate(shared_data):
    folder = shared_data / "ml-latest-small"
    with open(folder / "ratings.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))  # the independent count: one event per data row
    catalog = movielens_catalog(folder)
    events = validate_all(movielens_events(folder))
    assert len(events) == len(rows)
    assert all(isinstance(e, Event) for e in events)
    assert {e.event_type for e in events} == {"rate"}
    assert len({e.event_id for e in events}) == len(events)
    # The README's figures hold for the ratings of catalog movies: 100,836 ratings by 610 users.
    movies = set(catalog.column("item_id").to_pylist())
    in_catalog = [r for r in rows if r["movieId"] in movies]
    assert len(in_catalog) == 100_836
    assert len({r["userId"] for r in in_catalog}) == 610
    # Values carried over: seconds -> ms, the rating, the first genre as category.
    first, e = rows[0], events[0]
    genre = dict(zip(catalog.column("item_id").to_pylist(), catalog.column("category_id").to_pylist()))
    assert (e.user_id, e.item_id, e.timestamp, e.value) == (
        stable_id(first["userId"]), stable_id(first["movieId"]), int(first["timestamp"]) * 1000, float(first["rating"]))
    assert e.category_id == stable_id(genre[first["movieId"]])
    assert min(e.timestamp for e in events) >= 820_000_000_000  # 1996, in ms


def test_movielens_small_catalog(shared_data):
    catalog = movielens_catalog(shared_data / "ml-latest-small")
    assert catalog.num_rows == 9_742
    assert catalog.column_names == ["item_id", "category_id", "text"]
    assert len(set(catalog.column("item_id").to_pylist())) == 9_742
    row = catalog.slice(0, 1).to_pylist()[0]
    assert row["item_id"] == "1" and row["category_id"] == "Adventure" and row["text"].startswith("Toy Story (1995)")


def test_taobao_slice(shared_data):
    records = list(taobao_events(shared_data / "taobao-userbehavior-slice"))
    assert len(records) == 10_000
    events = validate_all(records)
    assert all(isinstance(e, Event) for e in events)
    assert {e.event_type for e in events} == {"view", "cart", "fav", "buy"}
    assert len({e.user_id for e in events}) == 114
    assert len({e.item_id for e in events}) == 7_623
    assert len({e.category_id for e in events}) == 1_096
    assert all(1_511_481_600_000 <= e.timestamp < 1_512_345_600_000 for e in events)  # 2017-11-24 .. 12-04 UTC
    # The file path works as well as the folder.
    assert len(list(taobao_events(shared_data / "taobao-userbehavior-slice" / "UserBehavior.csv"))) == 10_000


# --- files written here ---------------------------------------------------------------------

def test_csv_with_header_categories_and_bad_rows(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("user,item,time,category\n"
                    "u1,i1,1704067200,books\n"
                    "u2,i2,1704067260\n"
                    "u3,i3\n"                      # too short: must come out as a rejected record, not a crash
                    "\n"
                    "u4,i4,2024-01-01T00:00:05Z,\n", encoding="utf-8")
    results = validate_all(csv_events(path))
    assert len(results) == 5  # header skipped, everything else accounted for
    e1, e2, short, blank, iso = results
    assert (e1.user_id, e1.item_id, e1.timestamp, e1.category_id) == (stable_id("u1"), stable_id("i1"), T0,
                                                                      stable_id("books"))
    assert (e2.timestamp, e2.category_id, e2.event_type) == (T0 + 60_000, None, "rate")
    assert isinstance(short, Rejection) and short.reason == "missing_field"
    assert isinstance(blank, Rejection) and blank.reason == "missing_field"
    assert (iso.user_id, iso.timestamp, iso.category_id) == (stable_id("u4"), T0 + 5_000, None)


def test_csv_without_header_keeps_the_first_row(tmp_path):
    for first_time in ("1704067200000", "2024-01-01T00:00:00Z"):
        path = tmp_path / "log.csv"
        path.write_text(f"u1,i1,{first_time}\nu2,i2,1704067200007\n", encoding="utf-8")
        events = validate_all(csv_events(path, time_unit="ms"))
        assert [e.timestamp for e in events] == [T0, T0 + 7], first_time
        assert [e.user_id for e in events] == [stable_id("u1"), stable_id("u2")]


def write_log(path: Path, rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_parquet_event_log_file_and_folder(tmp_path):
    rows = [{"event_id": f"p{i}", "user_id": f"u{i % 3}", "item_id": i, "event_type": "click",
             "timestamp": T0 + i, "category_id": None if i % 2 else "c", "value": None} for i in range(10)]
    (tmp_path / "log").mkdir()
    write_log(tmp_path / "log" / "b.parquet", rows[5:])
    write_log(tmp_path / "log" / "a.parquet", rows[:5])
    (tmp_path / "log" / "notes.txt").write_text("not a parquet file")
    assert list(parquet_events(tmp_path / "log")) == rows  # files in name order, non-Parquet ignored
    write_log(tmp_path / "one.parquet", rows)
    events = validate_all(parquet_events(tmp_path / "one.parquet"))
    assert [e.user_id for e in events] == [stable_id(f"u{i % 3}") for i in range(10)]
    assert [e.category_id for e in events] == [None if i % 2 else stable_id("c") for i in range(10)]


def test_corrupt_parquet_raises_dataset_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetError, match="garbage.parquet"):
        list(parquet_events(garbage))
    # A file whose footer is intact but whose data pages are damaged fails only while reading.
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"event_id": [f"e{i}" for i in range(50_000)], "timestamp": list(range(50_000))}), good,
                   compression="none")
    data = bytearray(good.read_bytes())
    data[200:len(data) // 2] = b"\xff" * (len(data) // 2 - 200)
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="damaged.parquet"):
        list(parquet_events(damaged))


@pytest.mark.parametrize("loader", [movielens_events, taobao_events, csv_events, parquet_events])
def test_missing_path_is_a_dataset_error(loader, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list(loader(tmp_path / "absent"))


def test_not_a_movielens_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a MovieLens folder"):
        list(movielens_events(tmp_path))


def test_csv_lines_not_utf8_stay_bytes_and_extra_columns_are_noted(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"user,item,time,category\n"
                     b"u1,i1,1704067200,books,5 stars,verified\n"
                     b"u2,\xff\xfe,1704067260,books\n"
                     b"u3,i3,1704067320,toys,x\n"
                     b"u4,caf\xe9,1704067380\n")
    notes = Notes()
    records = list(csv_events(path, notes=notes))
    assert records[1] == b"u2,\xff\xfe,1704067260,books" and records[3] == b"u4,caf\xe9,1704067380"
    results = validate_all(records)
    assert [r.reason for r in results if isinstance(r, Rejection)] == ["not_utf8", "not_utf8"]
    assert [(e.user_id, e.category_id) for e in results if not isinstance(e, Rejection)] == [
        (stable_id("u1"), stable_id("books")), (stable_id("u3"), stable_id("toys"))]
    assert notes.lines() == [f"{path}: 2 lines with more than 4 columns (first: line 2, 6 columns; only "
                             f"user,item,time,category are read)",
                             f"{path}: 2 lines not UTF-8 (first: line 3; the backfill rejects them as not_utf8)"]
