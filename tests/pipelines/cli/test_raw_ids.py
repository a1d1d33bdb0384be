"""Raw IDs in and out: ingest writes the run's ID dictionary and its label kind; the backfill
labels a dataset without impressions the way ingest found fits; `historical` takes the IDs
as the data has them (or the run's hashed ones) and writes the raw ones beside the hashed."""
from __future__ import annotations

import contextlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.ids import stable_id
from pipelines.cli import main

pytestmark = pytest.mark.engine
DAY_S = 86_400
START_S = 1_704_067_200  # 2024-01-01


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two users with numeric raw IDs rate items with string IDs for 12 days; ingested and backfilled
    through the CLI as the README says, with no --labels."""
    work = tmp_path_factory.mktemp("raw-ids")
    rows = ["user,item,time,category"]
    for day in range(12):
        for user in (30, 31):
            rows.append(f"{user},m{(day * 7 + user) % 9},{START_S + day * DAY_S + user},g{day % 3}")
    (work / "ratings.csv").write_text("\n".join(rows) + "\n")
    assert main(["ingest", "--dataset", "csv", "--path", str(work / "ratings.csv"), "--workdir", str(work / "w"),
                 "--stream-fraction", "0"]) == 0
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["backfill", "--input", str(work / "w" / "raw" / "backfill" / "*.jsonl"),
                     "--output", str(work / "w" / "offline"), "--stats-as-of", str((START_S + 12 * DAY_S) * 1000),
                     "--json"])
    assert code == 0
    return work / "w", out.getvalue(), err.getvalue()


def test_ingest_writes_the_id_dictionary_and_its_result(run, capsys):
    run, _, _ = run
    assert main(["ingest", "--dataset", "csv", "--path", str(run.parent / "ratings.csv"), "--workdir",
                 str(run.parent / "again"), "--stream-fraction", "0.25"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("ingest: 18 records for the backfill (before 2024-01-09T06:00:30Z), 6 held back for the "
                      "stream; 9 catalog items; labels that fit: next_item")
    ids = pq.read_table(run / "ids.parquet").to_pylist()
    users = {r["raw"]: r["id"] for r in ids if r["entity"] == "user_id"}
    assert users == {"30": stable_id(30), "31": stable_id("31")}
    items = {r["raw"] for r in ids if r["entity"] == "item_id"}
    assert items == {f"m{i}" for i in range(9)}
    assert json.loads((run / "ingest.json").read_text())["label_kind"] == "next_item"


def test_backfill_labels_the_way_ingest_found_fits(run):
    _, out, err = run
    assert json.loads(out)["examples"] > 0  # impression_click would find none: ratings have no impressions
    assert "labels next_item" in err and "ingest.json" in err


def test_historical_takes_raw_ids_and_writes_them_back(run, capsys):
    run, _, _ = run
    t = (START_S + 10 * DAY_S) * 1000
    entities = run / "entities.parquet"
    pq.write_table(pa.table({"user_id": [30, 31, stable_id(30)], "item_id": ["m1", "m2", "m1"],
                             "timestamp": [t, t, t]}), entities)
    capsys.readouterr()
    assert main(["historical", "--workdir", str(run), "--entities", str(entities), "--out", str(run / "h.parquet")]) == 0
    assert "1 of 3 user_id values are hashed IDs of this run" in capsys.readouterr().err
    got = pq.read_table(run / "h.parquet").to_pydict()
    assert got["user_id"] == [stable_id(30), stable_id(31), stable_id(30)]
    assert got["raw_user_id"] == ["30", "31", "30"] and got["raw_item_id"] == ["m1", "m2", "m1"]
    assert got["item_id"] == [stable_id("m1"), stable_id("m2"), stable_id("m1")]
    assert got["seq_length"][0] == got["seq_length"][2] == 10  # ten days of ratings before day 10, raw or hashed
    assert got["seq_length"][1] == 10


def test_online_reads_raw_and_hashed_ids(run, capsys):
    run, _, _ = run
    assert main(["materialize", "--workdir", str(run)]) == 0
    users = ["30", str(stable_id(31)), "nobody"]
    capsys.readouterr()
    assert main(["online", "--workdir", str(run), "--json", *users]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [got[u]["raw_user_id"] for u in users] == ["30", "31", "nobody"]
    assert [got[u]["given_hashed"] for u in users] == [False, True, False]
    assert got["30"]["user_sequence"]["seq_length"] == got[users[1]]["user_sequence"]["seq_length"] == 12
    assert got["nobody"]["user_sequence"] is None
    assert got["30"]["user_recent"]["seq_raw_item_ids"][-1] == "m8"  # day 11: (11 * 7 + 30) % 9
    assert main(["online", "--workdir", str(run), "--now", str((START_S + 11 * DAY_S + 3600) * 1000), *users]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == f"user 30  [id {stable_id(30)}]"
    assert text[1] == "  lifelong: 12 behaviors, last 2024-01-12T00:00:30Z"
    assert text[2].startswith("  recent (newest first): m8 rate 2024-01-12T00:00:30Z, m1 rate 2024-01-11T00:00:30Z")
    assert text[3].startswith("  as of 2024-01-12T01:00:00Z: behaviors 1h 1 1d 1 7d 7 life 12;")
    assert text[4] == f"user 31 (given as hashed ID {stable_id(31)})"
    assert text[-1] == f"user nobody  [id {stable_id('nobody')}]: not in the online store"
