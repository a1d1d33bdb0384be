"""Ingest: every record lands on exactly one side of the time cutoff; catalog IDs hash like events."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from features.errors import ConfigError
from features.ids import stable_id
from pipelines.sources.ingest import ingest
from pipelines.sources.datasets import DatasetError
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream


def _lines(folder):
    return [line for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_synthetic_split_keeps_every_record(tmp_path):
    cfg = SyntheticConfig(users=20, days=3, bad_fraction=0.02)
    expected = sum(len(lines) for lines, _ in SyntheticStream(cfg).windows())
    got = ingest("synthetic", None, cfg, tmp_path, stream_fraction=0.25)
    back, later = _lines(tmp_path / "raw" / "backfill"), _lines(tmp_path / "raw" / "stream")
    assert got.backfill_records + got.stream_records == expected == len(back) + len(later)
    assert later and all(json.loads(line)["timestamp"] >= got.cutoff_ms for line in later)
    for line in back:
        try:
            ts = json.loads(line).get("timestamp")
        except ValueError:
            continue  # a corrupt record: it goes to the backfill, which rejects it
        assert not isinstance(ts, int) or ts < got.cutoff_ms
    catalog = pq.read_table(tmp_path / "catalog.parquet").to_pylist()
    assert len(catalog) == cfg.items
    first = SyntheticStream(cfg).catalog().slice(0, 1).to_pylist()[0]
    assert catalog[0]["item_id"] == stable_id(first["item_id"])
    assert catalog[0]["category_id"] == stable_id(first["category_id"])
    assert pq.read_table(tmp_path / "truth.parquet").num_rows >= cfg.users


def test_movielens_split(tmp_path, shared_data):
    folder = shared_data / "ml-latest-small"
    rows = (folder / "ratings.csv").read_text().splitlines()[1:]  # the file's own count, not the README's
    got = ingest("ml-latest-small", folder, SyntheticConfig(), tmp_path, 0.1)
    assert got.backfill_records + got.stream_records == len(rows)
    assert 0.08 < got.stream_records / len(rows) < 0.12
    # A rating of a movie that movies.csv lacks is kept, with no category (not dropped).
    known = {line.split(",", 1)[0] for line in (folder / "movies.csv").read_text().splitlines()[1:]}
    orphans = [r for r in rows if r.split(",")[1] not in known]
    everything = [json.loads(x) for x in _lines(tmp_path / "raw" / "backfill") + _lines(tmp_path / "raw" / "stream")]
    kept = [r for r in everything if r["item_id"] not in known]
    assert len(kept) == len(orphans) and all(r["category_id"] is None for r in kept)
    assert got.label_kind == "next_item" and got.catalog_items == 9_742


def test_iso_times_split_and_empty_categories_hash_like_events(tmp_path):
    from features.validate import parse_event

    csv = tmp_path / "events.csv"
    csv.write_text("user,item,time,category\n"
                   "u1,i1,2024-01-01T00:00:00Z,c1\n"
                   "u1,i2,2024-01-02T00:00:00Z,\n"
                   "u1,i3,2024-01-03T00:00:00Z,c1\n"
                   "u1,i4,2024-01-04T00:00:00Z,c2\n")
    got = ingest("csv", csv, SyntheticConfig(), tmp_path / "run", stream_fraction=0.25)
    later = _lines(tmp_path / "run" / "raw" / "stream")
    assert got.backfill_records == 3 and [json.loads(x)["item_id"] for x in later] == ["i4"]
    catalog = {r["item_id"]: r["category_id"] for r in pq.read_table(tmp_path / "run" / "catalog.parquet").to_pylist()}
    event = parse_event({"event_id": "x", "user_id": "u1", "item_id": "i2", "event_type": "rate",
                         "timestamp": "2024-01-02T00:00:00Z", "category_id": ""})
    assert catalog[stable_id("i2")] == 0 and (event.category_id or 0) == 0  # both: no category


def test_bad_dataset_arguments(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        ingest("nope", None, SyntheticConfig(), tmp_path, 0.1)
    with pytest.raises(DatasetError, match="needs a path"):
        ingest("taobao", None, SyntheticConfig(), tmp_path, 0.1)
    for fraction in (2.0, 1.0, -0.1):  # 2 used to write every record to the stream part and exit 0
        with pytest.raises(ConfigError, match=f"stream_fraction .* must be in \\[0, 1\\), got {fraction}"):
            ingest("synthetic", None, SyntheticConfig(), tmp_path / "x", fraction)
    assert not (tmp_path / "x").exists()


def test_a_csv_line_not_utf8_reaches_the_backfill_as_it_was_and_is_rejected_there(tmp_path):
    from features.validate_arrow import parse_lines

    path = tmp_path / "reviews.csv"
    path.write_bytes(b"u1,i1,1704067200,books\nu2,\xff,1704067260,books\nu3,i3,1704067320,toys,extra\n"
                     b'u4,"' + b"x" * 200_000 + b'",1704067380,books\n')  # past the csv module's 128 KB field limit
    got = ingest("csv", path, SyntheticConfig(), tmp_path / "run", stream_fraction=0.0)
    assert got.backfill_records == 4 and got.catalog_items == 3  # the line not UTF-8 has no item to list
    assert [n.split(": ", 1)[1] for n in got.notes] == [
        "1 line not UTF-8 (first: line 2; the backfill rejects them as not_utf8)",
        "1 line with more than 4 columns (first: line 3, 5 columns; only user,item,time,category are read)"]
    raw = b"".join(f.read_bytes() for f in sorted((tmp_path / "run" / "raw" / "backfill").glob("*.jsonl")))
    lines = raw.splitlines()
    assert lines[1] == b"u2,\xff,1704067260,books"  # the user's bytes, not a re-encoding of them
    parsed = parse_lines(lines, now_ms=1_800_000_000_000)
    assert parsed.events.num_rows == 2
    assert sorted(r.reason for r in parsed.rejections) == ["not_utf8", "record_too_large"]
