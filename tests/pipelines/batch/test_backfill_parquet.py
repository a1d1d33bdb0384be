"""Parquet input for the backfill: the same events as JSON lines and as Parquet (and mixed) give the
same tables, row for row, and the same counts; a bad Parquet row is rejected like its JSON line,
held to parse_event row by row; a Parquet file that cannot hold events is a one-line error."""
from __future__ import annotations

import functools
import io
import json
import math
import random
import struct
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import NOW_MS, T0

from features.errors import InputError
from features.schema import Event, events_to_table
from features.tables import TABLES
from features.validate import MAX_RECORD_BYTES, parse_event
from features.validate_arrow import event_columns, parse_table
from pipelines.batch import shards
from pipelines.batch.shards import parquet_batches, read_file
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.cli import main as cli
from pipelines.sources.synthetic import SyntheticConfig, SyntheticStream

AS_OF = T0 + 3 * 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Group A: the synthetic source's own fields and types.
SCHEMA_A = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("category_id", pa.int64()),
                      ("event_type", pa.string()), ("timestamp", pa.int64()), ("request_id", pa.string()),
                      ("position", pa.int64()), ("event_id", pa.string())])
# The same records with the types a Parquet writer might choose: a real timestamp, dictionary
# strings, narrow integers, large strings.
SCHEMA_A_ARROW = pa.schema([("user_id", pa.int32()), ("item_id", pa.uint16()), ("category_id", pa.int8()),
                            ("event_type", pa.dictionary(pa.int8(), pa.string())),
                            ("timestamp", pa.timestamp("ms", tz="UTC")), ("request_id", pa.large_string()),
                            ("position", pa.int64()), ("event_id", pa.string())])
# Group B: other types JSON may hold: string users, float items, ISO times, integer event ids, values.
SCHEMA_B = pa.schema([("event_id", pa.int64()), ("user_id", pa.string()), ("item_id", pa.float64()),
                      ("category_id", pa.string()), ("event_type", pa.string()), ("timestamp", pa.string()),
                      ("value", pa.float64())])


def plain(rec: dict, schema: pa.Schema) -> dict:
    """A record as both forms hold it: the schema's field order, no nulls (absent and null are one)."""
    return {k: rec[k] for k in schema.names if rec.get(k) is not None}


def group_a(rng: random.Random) -> list[dict]:
    cfg = SyntheticConfig(users=8, items=40, categories=4, days=2, sessions_per_user=5, seed=3)
    valid = [json.loads(x) for window, _ in SyntheticStream(cfg).windows() for x in window]
    recs = valid + [dict(r) for r in rng.sample(valid, 20)]  # exact redeliveries
    for r in rng.sample(valid, 20):  # same event_id, other content (the type may cross the sequence policy)
        recs.append({**r, "item_id": r["item_id"] + 1, "timestamp": r["timestamp"] + rng.choice([0, 7]),
                     "event_type": rng.choice(["impression", "click", "view"])})
    base = valid[0]
    recs += [{**base, "event_id": "bad-user", "user_id": None}, {**base, "event_id": ""},
             {**base, "event_id": "bad-type", "event_type": "teleport"},
             {**base, "event_id": "no-type", "event_type": None},
             {**base, "event_id": "seconds", "timestamp": base["timestamp"] // 1000},
             {**base, "event_id": "future", "timestamp": NOW_MS + 2 * 86_400_000},
             {**base, "event_id": "far-position", "position": 2**40},
             {**base, "event_id": "long-request", "request_id": "r" * 2000}]
    rng.shuffle(recs)
    return [plain(r, SCHEMA_A) for r in recs]


def group_b() -> list[dict]:
    recs = [{"event_id": 900 + i, "user_id": f"u{i % 3}", "item_id": float(i % 5),
             "category_id": ["c1", "", None][i % 3],
             "event_type": ["view", "click", "impression", "buy"][i % 4],
             "timestamp": f"2024-01-0{1 + i % 2}T10:{i:02d}:00.{i:03d}999Z", "value": [None, 1.5, 2.0][i % 3]}
            for i in range(24)]
    recs += [{**recs[0], "event_id": 990, "item_id": 2.5}, {**recs[1], "event_id": 991, "timestamp": "yesterday"},
             {**recs[2], "event_id": 992, "value": math.nan}, {**recs[3], "event_id": 993, "value": math.inf},
             {**recs[4], "event_id": 994, "user_id": ""}, {**recs[5], "event_id": 995, "user_id": "u" * 1500}]
    return [plain(r, SCHEMA_B) for r in recs]


def write(folder, name: str, recs: list[dict], schema: pa.Schema | None) -> None:
    """As JSON lines (schema None) or as Parquet in that schema."""
    folder.mkdir(parents=True, exist_ok=True)
    if schema is None:
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    else:
        pq.write_table(pa.Table.from_pylist(recs, schema=schema), folder / f"{name}.parquet", row_group_size=100)


def backfill(tmp, name: str, files: list[tuple[str, list[dict], pa.Schema | None]],
             engine: str = "local") -> tuple[dict, dict]:
    raw = tmp / name / "raw"
    for file, recs, schema in files:
        write(raw, file, recs, schema)
    counts = run_backfill(BackfillConfig(input=f"{raw}/*.jsonl,{raw}/*.parquet", output=str(tmp / name / "offline"),
                                         now_ms=NOW_MS, stats_as_of_ms=AS_OF, labels_until_ms=AS_OF),
                          engine=engine)
    return counts, {t: pq.read_table(tmp / name / "offline" / t) for t in TABLES}


def as_multiset(table: pa.Table) -> Counter:
    return Counter(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parquet")
    a, b = group_a(random.Random(0)), group_b()
    half = len(a) // 2
    forms = {
        "json": [("a0", a[:half], None), ("a1", a[half:], None), ("b", b, None)],
        "parquet": [("a0", a[:half], SCHEMA_A), ("a1", a[half:], SCHEMA_A), ("b", b, SCHEMA_B)],
        "mixed": [("a0", a[:half], None), ("a1", a[half:], SCHEMA_A), ("b", b, SCHEMA_B)],
        "arrow_types": [("a0", a[:half], SCHEMA_A_ARROW), ("a1", a[half:], SCHEMA_A_ARROW), ("b", b, None)],
    }
    got = {name: backfill(tmp, name, files) for name, files in forms.items()}
    got["mixed on Beam"] = backfill(tmp, "mixed_beam", forms["mixed"], engine="beam")  # the engines agree
    return got, a + b


@pytest.mark.engine
@pytest.mark.parametrize("form", ["parquet", "mixed", "arrow_types", "mixed on Beam"])
def test_parquet_and_json_give_the_same_tables_and_counts(runs, form):
    got, _ = runs
    json_counts, json_tables = got["json"]
    counts, tables = got[form]
    assert counts == json_counts
    assert counts["duplicates"] >= 40 and counts["examples"] > 0
    for name in TABLES:
        assert tables[name].num_rows == json_tables[name].num_rows, name
        assert as_multiset(tables[name]) == as_multiset(json_tables[name]), name
    assert all(json_tables[n].num_rows for n in TABLES), "every table should have rows"


@pytest.mark.engine
def test_bad_parquet_rows_are_rejected_with_their_reasons_like_json_lines(runs):
    got, recs = runs
    counts, tables = got["parquet"]
    expected = [parse_event(json.dumps(r), NOW_MS) for r in recs]  # each record's JSON line
    rejected = Counter((r.reason, r.field, r.detail, r.raw) for r in expected if not isinstance(r, Event))
    assert Counter(tuple(r.values()) for r in tables["rejected"].to_pylist()) == rejected
    assert counts["rejected"] == dict(Counter(reason for reason, *_ in rejected.elements()))
    assert {"missing_field", "unknown_event_type", "timestamp_too_old", "timestamp_in_future", "wrong_type",
            "field_too_large"} == set(counts["rejected"])
    assert counts["read"] == len(recs) == counts["accepted"] + counts["rejected_total"]


def as_ms(value):
    """A datetime (an Arrow timestamp's Python value) as integer UTC ms, floored; anything else as it is."""
    if not isinstance(value, datetime):
        return value
    return (value.replace(tzinfo=value.tzinfo or timezone.utc) - EPOCH) // timedelta(milliseconds=1)


def oracle(table: pa.Table) -> list:
    """parse_event of each row as the dict of its non-null fields (Arrow timestamps as integer ms)."""
    return [parse_event({k: as_ms(v) for k, v in row.items() if v is not None}, NOW_MS) for row in table.to_pylist()]


@pytest.mark.parametrize("schema", [SCHEMA_A, SCHEMA_A_ARROW, SCHEMA_B])
def test_parse_table_equals_parse_event_row_by_row(schema):
    recs = group_b() if schema is SCHEMA_B else group_a(random.Random(1))
    table = pa.Table.from_pylist(recs, schema=schema)
    got, want = parse_table(table, NOW_MS), oracle(table)
    assert got.events.equals(events_to_table([w for w in want if isinstance(w, Event)]))
    assert got.rejections == [w for w in want if not isinstance(w, Event)]
    assert got.fast > len(recs) // 2  # the vectorized path decides most rows


def test_parse_table_on_edge_types():
    """Unsigned IDs beyond int64, sub-millisecond and second timestamps, float32, bools, extra columns."""
    table = pa.table({
        "event_id": pa.array([1, 2, 3, 4, 5], pa.int32()),
        "user_id": pa.array([2**64 - 1, 5, 6, 7, None], pa.uint64()),
        "item_id": pa.array(["x", "y", "x", "z", "x"]).dictionary_encode(),
        "event_type": pa.array(["click", "view", "buy", "view", "view"], pa.large_string()),
        "timestamp": pa.array([T0 * 1000 + 999, T0 * 1000 - 1, None, T0 * 1000, T0 * 1000], pa.timestamp("us")),
        "value": pa.array([1.5, None, 2, 0.1, None], pa.float32()),
        "position": pa.array([None, None, False, True, None], pa.bool_()),
        "other": [[1], [2], [3], [4], [5]],
    })
    got, want = parse_table(table, NOW_MS), oracle(table.drop_columns(["other"]))
    assert got.events.equals(events_to_table([w for w in want if isinstance(w, Event)]))
    assert got.rejections == [w for w in want if not isinstance(w, Event)]
    assert got.events.column("timestamp").to_pylist() == [T0, T0 - 1]  # floored to ms
    assert got.fast == 1  # the ID beyond int64 went to parse_event, which accepts it
    assert [(r.reason, r.field) for r in got.rejections] == [("missing_field", "timestamp"), ("wrong_type", "position"),
                                                             ("missing_field", "user_id")]


def test_event_columns_names_the_file_column_and_fix():
    ok = pa.schema([*SCHEMA_A, ("extra", pa.list_(pa.int64()))])
    assert event_columns(ok, "f.parquet") == SCHEMA_A.names
    with pytest.raises(InputError, match=r"^f\.parquet: has no 'timestamp' column.*; write the events with"):
        event_columns(pa.schema([f for f in SCHEMA_A if f.name != "timestamp"]), "f.parquet")
    with pytest.raises(InputError, match="rename its column 'User_Id' to 'user_id'"):
        event_columns(pa.schema([f.with_name("User_Id") if f.name == "user_id" else f for f in SCHEMA_A]), "f")
    with pytest.raises(InputError, match=r"column 'event_type' has Arrow type int64.*; write event_type as UTF-8"):
        event_columns(SCHEMA_A.set(SCHEMA_A.get_field_index("event_type"), pa.field("event_type", pa.int64())), "f")
    with pytest.raises(InputError, match=r"column 'user_id' has Arrow type bool.*; write user_id as UTF-8"):
        event_columns(SCHEMA_A.set(0, pa.field("user_id", pa.bool_())), "f")
    # A column of type null (no row has a value) is no error: every row is without that field.
    assert event_columns(SCHEMA_A.set(0, pa.field("user_id", pa.null())), "f") == SCHEMA_A.names
    with pytest.raises(InputError, match="column 'value' has Arrow type bool"):
        event_columns(pa.schema([*SCHEMA_A, ("value", pa.bool_())]), "f")
    assert "position" in event_columns(pa.schema([*SCHEMA_A.remove(6), ("position", pa.null())]), "f")


def test_a_parquet_file_that_cannot_hold_events_is_a_one_line_error(tmp_path, capsys):
    raw = tmp_path / "raw"
    write(raw, "good", group_b(), SCHEMA_B)
    write(raw, "bad", [{k: v for k, v in r.items() if k != "timestamp"} for r in group_b()],
          pa.schema([f for f in SCHEMA_B if f.name != "timestamp"]))
    with pytest.raises(InputError) as err:
        run_backfill(BackfillConfig(input=str(raw / "*.parquet"), output=str(tmp_path / "out"), now_ms=NOW_MS))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(raw / "bad.parquet")) and "'timestamp'" in message
    assert cli(["backfill", "--input", str(raw / "*.parquet"), "--output", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"recstream backfill: error: {message}"]
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    (raw / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"bad\.parquet: is not a readable Parquet file"):
        run_backfill(BackfillConfig(input=str(raw / "*.parquet"), output=str(tmp_path / "out"), now_ms=NOW_MS))


# Rows whose Parquet reading once differed from their JSON line's: strings that are not UTF-8,
# float16 columns, columns of Arrow type null, rows over MAX_RECORD_BYTES. Each is held to the
# JSON line of the same record, written here by hand.

BASE = {"event_id": "e", "user_id": "u1", "item_id": 7, "event_type": "click", "timestamp": T0}


def json_line(rec: dict) -> bytes:
    """The record's JSON line as json.dumps writes it, a bytes value as a string of those raw bytes."""
    def value(v):
        if isinstance(v, bytes):
            return b'"' + v.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return json.dumps(v).encode()
    return b"{" + b", ".join(json.dumps(k).encode() + b": " + value(v) for k, v in rec.items()) + b"}"


def strings(values: list, arrow_type=pa.string()) -> pa.Array:
    """A string column holding the values' raw bytes as they are, UTF-8 or not (as a Parquet file may)."""
    binary = pa.large_binary() if pa.types.is_large_string(arrow_type) else pa.binary()
    return pa.array(values, binary).view(arrow_type)


def round_trip(table: pa.Table) -> pa.Table:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return pq.read_table(io.BytesIO(buf.getvalue()))


def assert_like_json_lines(table: pa.Table, recs: list[dict]) -> None:
    """parse_table on the table gives what parse_event gives on each record's JSON line."""
    got, want = parse_table(table, NOW_MS), [parse_event(json_line(r), NOW_MS) for r in recs]
    assert got.rejections == [w for w in want if not isinstance(w, Event)]
    assert got.events.equals(events_to_table([w for w in want if isinstance(w, Event)]))


def test_strings_that_are_not_utf8_are_rejected_as_not_utf8_like_their_json_line():
    """Arrow reads a Parquet string column without checking its UTF-8: such a row is the JSON line
    of those bytes, rejected as not_utf8 (or record_too_large first, as a line is), never a crash."""
    recs = [{"event_id": b"e0", "user_id": b"caf\xe9", "event_type": b"click", "request_id": b"r"},
            {"event_id": b"e1", "user_id": b'q"uo\\te \xff', "event_type": b"click", "request_id": b"r\xed\xa0\x80"},
            {"event_id": b"e2", "user_id": b"\xc3\xa9t\xc3", "event_type": b"click", "request_id": b"r"},
            {"event_id": b"e3", "user_id": b"ok", "event_type": b"click", "request_id": b"r"},
            {"event_id": b"e4", "user_id": b"u", "event_type": b"cl\xffick", "request_id": b"r"},
            {"event_id": b"e5", "user_id": b"u\xe9" * 40_000, "event_type": b"click", "request_id": b"r"}]
    recs = [{**r, "item_id": 7, "timestamp": T0} for r in recs]
    for user_type in (pa.string(), pa.large_string()):
        table = pa.table({"event_id": strings([r["event_id"] for r in recs]),
                          "user_id": strings([r["user_id"] for r in recs], user_type),
                          "event_type": strings([r["event_type"] for r in recs]).dictionary_encode(),
                          "request_id": strings([r["request_id"] for r in recs]),
                          "item_id": [7] * len(recs), "timestamp": [T0] * len(recs)})
        table = round_trip(table)  # as Arrow reads it back: unchecked
        assert pa.types.is_dictionary(table.schema.field("event_type").type)
        got = parse_table(table, NOW_MS)
        assert [(r.reason, r.field) for r in got.rejections] == [("not_utf8", None)] * 4 + [("record_too_large", None)]
        assert got.events.column("event_id").to_pylist() == ["e3"]
        # the raw record: the row as JSON with the string's bytes, undecodable ones as \xNN (as for a line)
        assert got.rejections[0].raw == ('{"event_id": "e0", "user_id": "caf\\xe9", "event_type": "click", '
                                         f'"request_id": "r", "item_id": 7, "timestamp": {T0}}}')
        assert_like_json_lines(table, [{k: r[k] for k in table.column_names} for r in recs])


def test_float16_columns_are_read_as_their_json_line_is():
    table = pa.table({"event_id": ["a", "b", "d"],
                      "user_id": pa.array([5, 2**64 - 1, 3], pa.uint64()),
                      "item_id": pa.array(np.array([7, 7, 8], np.float16)),
                      "event_type": ["click"] * 3, "timestamp": [T0] * 3,
                      "value": pa.array(np.array([1.5, 1.5, -2], np.float16)),
                      "position": pa.array([2**40, None, 4], pa.int64())})
    recs = [{"event_id": "a", "user_id": 5, "item_id": 7.0, "event_type": "click", "timestamp": T0, "value": 1.5,
             "position": 2**40},  # wrong_type on position, not on value
            {"event_id": "b", "user_id": 2**64 - 1, "item_id": 7.0, "event_type": "click", "timestamp": T0,
             "value": 1.5},  # an ID beyond int64 with a float16 value: accepted
            {"event_id": "d", "user_id": 3, "item_id": 8.0, "event_type": "click", "timestamp": T0, "value": -2.0,
             "position": 4}]
    got = parse_table(table, NOW_MS)
    assert [(r.reason, r.field) for r in got.rejections] == [("wrong_type", "position")]
    assert got.events.column("event_id").to_pylist() == ["b", "d"]
    assert got.events.column("value").to_pylist() == [1.5, -2.0]
    assert_like_json_lines(table, recs)
    stamps = pa.table({"event_id": ["c"], "user_id": [5], "item_id": [7], "event_type": ["click"],
                       "timestamp": pa.array(np.array([1024], np.float16))})
    assert [(r.reason, r.field) for r in parse_table(stamps, NOW_MS).rejections] == [("timestamp_too_old",
                                                                                     "timestamp")]
    assert_like_json_lines(stamps, [{"event_id": "c", "user_id": 5, "item_id": 7, "event_type": "click",
                                     "timestamp": 1024.0}])


def test_a_null_typed_column_is_absent_in_every_row():
    """pandas writes a text column of no values as Arrow type null: each row is the JSON line without it."""
    table = pa.table({"event_id": ["a", "b"], "user_id": pa.nulls(2), "item_id": [1, 2], "event_type": ["view"] * 2,
                      "timestamp": [T0, T0], "request_id": pa.nulls(2), "category_id": pa.nulls(2)})
    assert event_columns(table.schema, "f") == table.column_names
    got = parse_table(table, NOW_MS)
    assert [(r.reason, r.field) for r in got.rejections] == [("missing_field", "user_id")] * 2
    assert_like_json_lines(table, [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()])
    ok = parse_table(table.drop_columns(["user_id"]).append_column("user_id", pa.array([1, 2])), NOW_MS)
    assert ok.events.num_rows == 2 and ok.fast == 2  # null optional columns: decided fast, category null
    assert ok.events.column("category_id").null_count == 2
    empty = pq.read_table(pandas_parquet(pd.DataFrame({k: pd.Series([], dtype=object) for k in SCHEMA_B.names})))
    assert pa.types.is_null(empty.schema.field("user_id").type)
    assert event_columns(empty.schema, "f") == SCHEMA_B.names
    got = parse_table(empty, NOW_MS)
    assert got.events.num_rows == 0 and got.rejections == []


def pandas_parquet(frame: pd.DataFrame) -> io.BytesIO:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    buf.seek(0)
    return buf


def test_a_row_over_64_kib_is_record_too_large_like_its_json_line():
    recs = [{**BASE, "event_id": "big", "request_id": "\U0001F600" * 6000},  # 12 JSON bytes a character
            {**BASE, "event_id": "wide", "request_id": "r" * (MAX_RECORD_BYTES + 1)},
            {**BASE, "event_id": "small", "request_id": "r" * 1000}]
    table = pa.Table.from_pylist(recs)
    got = parse_table(table, NOW_MS)
    assert [(r.reason, r.field) for r in got.rejections] == [("record_too_large", None)] * 2
    assert got.rejections[0].detail == f"{len(json.dumps(recs[0]))} bytes"
    assert_like_json_lines(table, recs)


@pytest.mark.engine
def test_edge_parquet_files_give_what_their_json_lines_give_in_a_backfill(tmp_path):
    """Not UTF-8, float16, null-typed columns, an oversized row and a file of no rows (as pandas
    writes it): the backfill of the Parquet files and of the same records as JSON lines agree."""
    recs = [{**BASE, "event_id": "ok", "value": 1.5},
            {**BASE, "event_id": "bad-utf8", "user_id": b"caf\xe9"},
            {**BASE, "event_id": "far", "value": 1.5, "position": 2**40},
            {**BASE, "event_id": "big", "request_id": "r" * (MAX_RECORD_BYTES + 10)}]
    raw = {"json": tmp_path / "json", "parquet": tmp_path / "parquet"}
    for folder in raw.values():
        folder.mkdir()
    (raw["json"] / "a.jsonl").write_bytes(b"".join(json_line(r) + b"\n" for r in recs))
    (raw["json"] / "empty.jsonl").write_bytes(b"")
    (raw["json"] / "no-users.jsonl").write_bytes(b"".join(json_line({**BASE, "event_id": f"n{i}"}) + b"\n"
                                                          for i in range(3)).replace(b'"user_id": "u1", ', b""))
    table = pa.table({"event_id": [r["event_id"] for r in recs],
                      "user_id": strings([b"caf\xe9" if r["event_id"] == "bad-utf8" else b"u1" for r in recs]),
                      "item_id": [7] * 4, "event_type": ["click"] * 4, "timestamp": [T0] * 4,
                      "value": pa.array(np.array([1.5, 0, 1.5, 0], np.float16), mask=np.array([0, 1, 0, 1], bool)),
                      "position": [None, None, 2**40, None], "request_id": [r.get("request_id") for r in recs]})
    pq.write_table(table, raw["parquet"] / "a.parquet")
    empty = pd.DataFrame({k: pd.Series([], dtype=object) for k in SCHEMA_B.names})
    empty.to_parquet(raw["parquet"] / "empty.parquet", index=False)
    no_users = pd.DataFrame({"event_id": ["n0", "n1", "n2"], "user_id": [None] * 3, "item_id": [7] * 3,
                             "event_type": ["click"] * 3, "timestamp": [T0] * 3})
    no_users.to_parquet(raw["parquet"] / "no-users.parquet", index=False)
    assert pa.types.is_null(pq.read_schema(raw["parquet"] / "no-users.parquet").field("user_id").type)
    got = {}
    for form, folder in raw.items():
        counts = run_backfill(BackfillConfig(input=str(folder / "*"), output=str(tmp_path / f"out-{form}"),
                                             now_ms=NOW_MS))
        got[form] = counts, as_multiset(pq.read_table(tmp_path / f"out-{form}" / "rejected"))
    assert got["parquet"] == got["json"]
    counts = got["parquet"][0]
    assert counts["read"] == 7 and counts["accepted"] == 1
    assert counts["rejected"] == {"not_utf8": 1, "wrong_type": 1, "record_too_large": 1, "missing_field": 3}


def corrupt_footer(path, seed: int) -> None:
    """Scramble the Parquet footer's bytes (its length and the magic kept)."""
    data = bytearray(path.read_bytes())
    n = struct.unpack("<i", data[-8:-4])[0]
    for j in range(len(data) - 8 - n, len(data) - 8):
        data[j] = (data[j] * 7 + seed * 13 + j) % 256
    path.write_bytes(bytes(data))


def test_arrow_errors_are_one_printable_line(tmp_path, monkeypatch):
    """A corrupt footer's Arrow message ends in a newline and may hold control characters."""
    raw = tmp_path / "raw"
    write(raw, "good", group_b(), SCHEMA_B)
    write(raw, "bad", group_b(), SCHEMA_B)
    messages = []
    for seed in (8, 0, 1):  # seen: "...don't know what type: \x0f\n", "...: \r\n", "...: Invalid data\n"
        write(raw, "bad", group_b(), SCHEMA_B)
        corrupt_footer(raw / "bad.parquet", seed)
        try:
            pq.ParquetFile(raw / "bad.parquet")
        except (OSError, pa.ArrowException) as err:
            assert not str(err).isprintable()  # Arrow's own text: not one line
        with pytest.raises(InputError, match=r"bad\.parquet: is not a readable Parquet file") as err:
            run_backfill(BackfillConfig(input=str(raw / "*.parquet"), output=str(tmp_path / "out"), now_ms=NOW_MS))
        messages.append(str(err.value))
    assert any("Couldn't deserialize thrift" in m for m in messages)
    assert all(m.isprintable() and "  " not in m for m in messages), messages
    write(raw, "bad", group_b(), SCHEMA_B)

    def broken(self, *args, **kwargs):  # a corrupt page: Arrow fails while reading, after the footer
        raise pa.ArrowInvalid("Corrupt page:\n\tbad\x0fheader\r\n")
        yield
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", broken)
    with pytest.raises(InputError) as err:
        list(parquet_batches(str(raw / "bad.parquet"), "bad.parquet"))
    assert str(err.value) == "bad.parquet: cannot be read (Corrupt page: badheader); rewrite the file"


def test_read_file_opens_local_parquet_files_by_path(tmp_path, monkeypatch):
    """Arrow reads a local file itself (not through a Python file object); a remote path (a scheme)
    goes through Beam's FileSystems."""
    from apache_beam.io.filesystems import FileSystems

    write(tmp_path, "EVENTS", group_b(), SCHEMA_B)
    (tmp_path / "EVENTS.parquet").rename(tmp_path / "EVENTS.PARQUET")  # Parquet by its name, in any case
    path = str(tmp_path / "EVENTS.PARQUET")
    sources = []
    real = pq.ParquetFile

    def recording(source, *args, **kwargs):
        sources.append(source)
        return real(source, *args, **kwargs)
    monkeypatch.setattr(shards.pq, "ParquetFile", recording)

    def no_open(*args, **kwargs):
        raise AssertionError("FileSystems.open used for a local Parquet file")
    monkeypatch.setattr(FileSystems, "open", no_open)
    read = functools.partial(read_file, 0, output=str(tmp_path / "out"), shards=2, now_ms=NOW_MS,
                             count=lambda name, n: None)
    local = list(read(path))
    assert sources == [path]
    remote_path = "gs://bucket/EVENTS.PARQUET"
    monkeypatch.setattr(FileSystems, "open", lambda p: open(path, "rb") if p == remote_path else no_open())
    remote = list(read(remote_path))
    assert not isinstance(sources[1], str)  # a file object, from FileSystems.open
    assert sum(t.num_rows for _, t in local) == sum(t.num_rows for _, t in remote) > 0
