"""features.packed: every row comes back as it went in, for random rows of both layouts; the
column packer agrees with the row packer; anything else is refused, not misread."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from features.packed import SEQUENCE_FIELDS, STATS_FIELDS, is_packed, pack, pack_column, unpack


def random_row(kind: str, rng: random.Random) -> dict:
    n = rng.choice([0, 1, rng.randrange(2, 300)])
    big = lambda: rng.randrange(-2**63, 2**63)  # noqa: E731 - full-width int64 ids
    if kind == "sequence":
        return {"seq_item_ids": [big() for _ in range(n)], "seq_category_ids": [big() for _ in range(n)],
                "seq_event_types": [rng.randrange(-2**31, 2**31) for _ in range(n)],
                "seq_timestamps": [rng.randrange(0, 2**45) for _ in range(n)], "seq_length": n,
                "last_event_ms": rng.randrange(0, 2**45)}
    return {"newest_ms": rng.randrange(0, 2**45), "tile_starts": [big() for _ in range(n)],
            "tile_counts": [rng.randrange(0, 2**40) for _ in range(3 * n)], "impressions_life": big(),
            "clicks_life": big(), "behaviors_life": big()}


@pytest.mark.parametrize("kind", ["sequence", "stats"])
def test_round_trip_random_rows(kind):
    rng = random.Random(7)
    rows = [random_row(kind, rng) for _ in range(200)]
    for row in rows:
        value = pack(kind, row)
        assert is_packed(kind, value) and not is_packed("stats" if kind == "sequence" else "sequence", value)
        assert unpack(kind, value) == row
        arrays = unpack(kind, value, arrays=True)
        assert {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in arrays.items()} == row
    fields = SEQUENCE_FIELDS if kind == "sequence" else STATS_FIELDS
    table = pa.table({f: [row[f] for row in rows] for f in fields})
    assert pack_column(kind, table).to_pylist() == [pack(kind, row) for row in rows]


def test_nothing_else_is_read_as_a_row():
    row = random_row("sequence", random.Random(1))
    value = pack("sequence", row)
    assert unpack("sequence", None) is None and unpack("sequence", b"") is None  # Feast's empty value
    assert not is_packed("sequence", b"hello world") and not is_packed("sequence", value[:-1])
    with pytest.raises(ValueError, match="not a packed stats value"):
        unpack("stats", value)
    with pytest.raises(ValueError, match="expected"):
        unpack("sequence", value + b"\0")


def test_a_row_whose_lengths_disagree_is_refused_when_packed():
    row = random_row("sequence", random.Random(3))
    with pytest.raises(ValueError, match="disagree"):
        pack("sequence", {**row, "seq_item_ids": row["seq_item_ids"] + [1]})
    with pytest.raises(ValueError, match="disagree"):
        pack("sequence", {**row, "seq_length": row["seq_length"] + 1})
    stats_row = random_row("stats", random.Random(3))
    with pytest.raises(ValueError, match="3 per tile"):
        pack("stats", {**stats_row, "tile_counts": stats_row["tile_counts"] + [1]})


@pytest.mark.parametrize("kind", ["sequence", "stats"])
def test_the_column_packer_reads_chunked_and_sliced_columns_and_no_rows(kind):
    rng = random.Random(11)
    rows = [random_row(kind, rng) for _ in range(60)]
    fields = SEQUENCE_FIELDS if kind == "sequence" else STATS_FIELDS
    whole = pa.table({f: [row[f] for row in rows] for f in fields})
    chunked = pa.concat_tables([whole.slice(0, 25), whole.slice(25)]).slice(7, 40)  # two chunks, offsets inside
    assert pack_column(kind, chunked).to_pylist() == [pack(kind, row) for row in rows[7:47]]
    assert pack_column(kind, whole.slice(0, 0)).to_pylist() == []


@pytest.mark.parametrize("field,null", [("last_event_ms", None), ("seq_item_ids", None), ("seq_timestamps", [1, None])])
def test_the_column_packer_refuses_nulls_as_the_row_packer_does(field, null):
    rows = [random_row("sequence", random.Random(s)) for s in range(3)]
    rows = [rows[0], {**rows[1], "seq_length": 2, "seq_item_ids": [1, 2], "seq_category_ids": [3, 4],
                      "seq_event_types": [1, 1], "seq_timestamps": [5, 6]}, rows[2]]
    rows[1][field] = null
    with pytest.raises(TypeError):
        pack("sequence", rows[1])
    with pytest.raises(ValueError, match=f"cannot be packed: {field}"):
        pack_column("sequence", pa.table({f: [row[f] for row in rows] for f in SEQUENCE_FIELDS}))


def test_the_column_packer_refuses_rows_whose_lengths_disagree():
    rows = [random_row("sequence", random.Random(s)) for s in range(4)]
    rows[2] = {**rows[2], "seq_length": rows[2]["seq_length"] + 1}
    with pytest.raises(ValueError, match="disagree"):
        pack_column("sequence", pa.table({f: [row[f] for row in rows] for f in SEQUENCE_FIELDS}))
    stats = [random_row("stats", random.Random(s)) for s in range(4)]
    stats[1] = {**stats[1], "tile_counts": stats[1]["tile_counts"] + [1]}
    with pytest.raises(ValueError, match="3 per tile"):
        pack_column("stats", pa.table({f: [row[f] for row in stats] for f in STATS_FIELDS}))
