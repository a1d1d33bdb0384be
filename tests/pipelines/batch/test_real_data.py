"""The backfill on the real datasets in ../shared/data equals the naive oracles: every sequence
view, the user and item statistics, and point-in-time features on sampled rows (skipped where
the data is absent)."""
from __future__ import annotations

import json
import random
from collections import defaultdict

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.conftest import naive_dedup, naive_views
from features.historical import point_in_time
from features.pit import sort_log
from features.schema import Event
from features.sequence import SequencePolicy
from features.validate import parse_event
from pipelines.batch.backfill import BackfillConfig, run_backfill
from pipelines.sources.datasets import movielens_events, taobao_events
from pipelines.sources.raw_files import write_json_lines
from tests.helpers import views_differences
from tests.features.test_historical import CAPS, oracle_row

pytestmark = pytest.mark.engine

LENGTHS = {"user_sequence": 200, "user_recent": 50, "user_category_sequence": 20}
DATASETS = {"ml-latest-small": (movielens_events, "ml-latest-small"),
            "taobao": (taobao_events, "taobao-userbehavior-slice/UserBehavior.csv")}
KEYS = {"user_sequence": ("user_id",), "user_recent": ("user_id",),
        "user_category_sequence": ("user_id", "category_id"),
        "user_stats": ("user_id",), "item_stats": ("item_id",)}


def _offline_rows(offline, view: str) -> dict:
    keys = KEYS[view]
    rows = ds.dataset(offline / view, format="parquet").to_table().to_pylist()
    return {(tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]): r for r in rows}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_backfill_of_a_real_dataset_equals_the_oracles(name, shared_data, tmp_path):
    load, relative = DATASETS[name]
    lines = [json.dumps(r) for r in load(shared_data / relative)]
    events = [e for e in (parse_event(line) for line in lines) if isinstance(e, Event)]
    assert len(events) > 0.99 * len(lines)
    end_ms = max(e.timestamp for e in events) + 1
    write_json_lines(lines, tmp_path / "raw")
    counts = run_backfill(BackfillConfig(input=str(tmp_path / "raw" / "*.jsonl"), output=str(tmp_path / "offline"),
                                         sequence=SequencePolicy(max_len=LENGTHS["user_sequence"]),
                                         recent_len=LENGTHS["user_recent"],
                                         category_len=LENGTHS["user_category_sequence"], stats_as_of_ms=end_ms))
    assert counts["accepted"] == len(events)

    expected = naive_views(events, *LENGTHS.values())
    offline = {view: _offline_rows(tmp_path / "offline", view) for view in expected}
    assert {view: len(rows) for view, rows in offline.items()} == {view: len(rows) for view, rows in expected.items()}
    assert views_differences(offline, expected, end_ms) == []

    # Point in time, on sampled rows: times at, between and before events, users and items mixed.
    rng = random.Random(7)
    by_user, by_item = defaultdict(list), defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
        by_item[e.item_id].append(e)
    rows = []
    for e in rng.sample(events, 150):
        item = rng.choice(events).item_id
        t = rng.choice((e.timestamp, e.timestamp + 1, e.timestamp - 60_000))
        rows.append((e.user_id, item, rng.choice((e.category_id or 0, 0)), t))
    entities = pa.table({name: [r[i] for r in rows] for i, name in enumerate(("user_id", "item_id", "category_id",
                                                                             "timestamp"))})
    log = sort_log(ds.dataset(tmp_path / "offline" / "behavior_log", format="parquet").to_table())
    event_log = ds.dataset(tmp_path / "offline" / "event_log", format="parquet").to_table()
    got = point_in_time(entities, log, event_log, CAPS).to_pylist()
    for row, (user, item, category, t) in zip(got, rows):
        # the oracle reads every (deduplicated) event of the row's user and of its item
        nearby = naive_dedup(list({id(e): e for e in by_user[user] + by_item[item]}.values()))
        want = oracle_row(nearby, user, item, category, t)
        for field, value in want.items():
            assert row[field] == (pytest.approx(value) if "ctr" in field else value), (name, field, user, t)
