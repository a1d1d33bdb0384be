"""Point-in-time features equal a naive per-row oracle on every row: rows before a user's first
event, rows exactly at event times, unknown users/items, all three sequence kinds, user and
item statistics; and the run-folder API on real data where it is present."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401  (pa.parquet)
import pytest

from tests.conftest import T0, random_events
from features import offline, stats
from features.historical import point_in_time
from features.schema import BEHAVIOR_TYPES, EVENT_TYPE_CODE, events_to_table, table_to_events
from features.sequence import SequencePolicy
from features.time import gap_bucket

CAPS = {"user_sequence": 12, "user_recent": 4, "user_category_sequence": 3}
USERS = (1, 2, 3)


def oracle_row(events, user, item, category, t):
    """The slow obvious features of one row (events already deduplicated)."""
    behaviors = sorted((e for e in events if e.user_id == user and e.event_type in BEHAVIOR_TYPES
                        and e.timestamp < t), key=lambda e: (e.timestamp, e.event_id))
    out = {}
    for prefix, chosen, cap in (("", behaviors, CAPS["user_sequence"]), ("recent_", behaviors, CAPS["user_recent"]),
                                ("cat_", [e for e in behaviors if (e.category_id or 0) == category],
                                 CAPS["user_category_sequence"])):
        kept = chosen[-cap:]
        out[prefix + "seq_item_ids"] = [e.item_id for e in kept]
        out[prefix + "seq_event_types"] = [EVENT_TYPE_CODE[e.event_type] for e in kept]
        out[prefix + "seq_timestamps"] = [e.timestamp for e in kept]
        out[prefix + "seq_length"] = len(kept)
    out["seq_gap_buckets"] = gap_bucket(np.array([t - ts for ts in out["seq_timestamps"]], np.int64)).tolist()
    for key, value, prefix in (("user_id", user, "user_"), ("item_id", item, "item_")):
        s = stats.empty()
        for e in events:
            if getattr(e, key) == value and e.timestamp < t:
                stats.add(s, e.timestamp, stats.kind_index(e.event_type, BEHAVIOR_TYPES))
        s.newest_ms = -(1 << 62)  # at() refuses reads before the newest event; the oracle holds only older ones
        out.update({prefix + n: v for n, v in stats.at(s, t).items()})
    return out


@pytest.mark.parametrize("seed", range(4))
def test_every_row_equals_the_oracle(seed):
    rng = random.Random(seed)
    events, _ = offline.dedup(events_to_table(random_events(rng, 300, users=USERS, items=8, span_ms=5_000)))
    deduped = table_to_events(events)
    log = offline.behavior_log(events, SequencePolicy())
    event_log = offline.event_log(events)
    times = [T0 - 10, T0, *(rng.choice(deduped).timestamp for _ in range(20)), *(T0 + rng.randrange(6_000) for _ in range(20))]
    rows = [(rng.choice((*USERS, 99)), rng.choice((0, 1, 5, 77)), rng.choice((0, 1, 2, 3)), t) for t in times]
    entities = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "category_id": [r[2] for r in rows], "timestamp": [r[3] for r in rows]})
    got = point_in_time(entities, log, event_log, CAPS).to_pylist()
    assert len(got) == len(rows)
    for row, (user, item, cat, t) in zip(got, rows):
        expected = oracle_row(deduped, user, item, cat, t)
        assert row["user_id"] == user and row["timestamp"] == t  # rows keep their order
        for name, value in expected.items():
            assert row[name] == (pytest.approx(value) if "ctr" in name else value), (name, user, t)


@pytest.mark.engine
def test_run_folder_api_keeps_every_row_through_the_feast_join(tmp_path):
    from pipelines.store.feature_store import open_store
    from pipelines.store.historical import historical_features
    from pipelines.store.publish import publish
    from pipelines.sources.synthetic import DAY_MS, SyntheticConfig
    from tests.helpers import backfilled_run

    as_of = SyntheticConfig().start_ms + 3 * DAY_MS + 1
    backfilled_run(tmp_path, users=12, days=3, stats_as_of_ms=as_of)
    publish(open_store(tmp_path), tmp_path, {"user_sequence": 200, "user_recent": 50, "user_category_sequence": 50})
    users = pa.parquet.read_table(tmp_path / "offline" / "user_stats").column("user_id").to_pylist()[:5]
    times = [as_of - DAY_MS] * len(users) + [as_of + 1] * len(users)  # before / after the stats snapshot
    entities = pa.table({"user_id": users * 2, "timestamp": times})
    got = historical_features(tmp_path, entities, CAPS, feast_refs=["user_stats:clicks_life"]).to_pylist()
    assert [r["user_id"] for r in got] == users * 2  # nothing dropped, order kept
    early, late = got[: len(users)], got[len(users):]
    assert all(r["clicks_life"] is None for r in early)  # Feast has nothing that old: null, not a lost row
    assert [r["clicks_life"] for r in late] == [r["user_clicks_life"] for r in late]  # Feast agrees with the log
    with pytest.raises(ValueError, match="lacks \\['timestamp'\\]"):
        historical_features(tmp_path, pa.table({"user_id": [1]}), CAPS)
    for ref, named in (("user_stats:clicks", "no feature 'clicks'"), ("user_stat:clicks_life", "no view 'user_stat'")):
        with pytest.raises(ValueError, match=named):
            historical_features(tmp_path, entities, CAPS, feast_refs=[ref])


def test_an_unpacked_view_s_feature_is_cast_to_its_declared_type(tmp_path):
    """A feature of a view stored field by field (not packed: item_content) comes back in the Arrow
    type its view declares (Feast's file store turns ints with gaps into floats); this helper went
    missing once."""
    from feast import Entity, ValueType

    from feature_repo.definitions import ITEM_CONTENT, item_content_definitions
    from pipelines.store.historical import _declared_type

    from features.item_vectors import DEFAULT_VERSION, version_dir

    version_dir(tmp_path, DEFAULT_VERSION).mkdir(parents=True)  # the view exists once vectors do
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    view = item_content_definitions(str(tmp_path), item)[ITEM_CONTENT]

    class Views:  # the one FeatureStore call the helper makes
        def get_feature_view(self, name):
            assert name == ITEM_CONTENT
            return view
    assert _declared_type(Views(), "item_content:encoder_version") == pa.string()
    assert _declared_type(Views(), "item_content:vector") is None  # a list: left as Feast returns it
