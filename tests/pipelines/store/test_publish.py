"""Publish: every feature table is gated, the passing ones go online and read back equal to
the offline rows through Feast; a table that fails its suite stays offline."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from features import packed, stats
from feature_repo.definitions import SEQUENCE_FIELDS, VIEW_ENTITIES, view_fields
from pipelines.store.feature_store import open_store, read_online
from pipelines.store.publish import publish
from pipelines.sources.synthetic import DAY_MS, SyntheticConfig
from tests.helpers import backfilled_run

pytestmark = pytest.mark.engine
AS_OF = SyntheticConfig().start_ms + 4 * DAY_MS + 1
CAPS = {"user_sequence": 200, "user_recent": 50, "user_category_sequence": 50}


def offline_rows(work, name):
    return pq.read_table(work / "offline" / name).to_pylist()


def test_every_table_is_gated_and_reads_back_online(tmp_path):
    backfilled_run(tmp_path, users=25, days=4, stats_as_of_ms=AS_OF)
    store = open_store(tmp_path)
    gates, rows = publish(store, tmp_path, CAPS)
    assert [g.name for g in gates] == [f"data gate [{n}]" for n in VIEW_ENTITIES]
    assert all(g.passed for g in gates), [g.summary() for g in gates]
    assert set(rows) == set(VIEW_ENTITIES) and all(n > 0 for n in rows.values())

    for name, keys in VIEW_ENTITIES.items():
        fields = list(view_fields(name))  # every field; the statistics hold their state online
        assert set(fields) == (set(SEQUENCE_FIELDS) if not name.endswith("_stats") else set(stats.STATE_FIELDS))
        expected = offline_rows(tmp_path, name)
        join = [f"{k}_id" for k in keys]
        got = read_online(store, name, fields, [{k: r[k] for k in join} for r in expected])
        for want, have in zip(expected, got):
            assert have is not None
            for f in fields:  # ctr values are floats; everything else must be exact
                assert have[f] == (pytest.approx(want[f]) if f.startswith("ctr") else want[f]), (name, f)


def test_a_failing_table_is_not_materialized(tmp_path):
    backfilled_run(tmp_path, users=10, days=2, stats_as_of_ms=SyntheticConfig().start_ms + 2 * DAY_MS + 1)
    folder = tmp_path / "offline" / "user_stats"
    table = pq.read_table(folder)
    broken = table.set_column(table.schema.get_field_index("clicks_1h"), "clicks_1h",
                              pc.add(table.column("clicks_life"), 1))  # an hour holding more than a lifetime
    shutil.rmtree(folder)
    folder.mkdir()
    pq.write_table(broken, folder / "part.parquet")
    store = open_store(tmp_path)
    gates, rows = publish(store, tmp_path, CAPS)
    failed = {g.name: g for g in gates if not g.passed}
    assert list(failed) == ["data gate [user_stats]"]
    assert any("clicks_1d" in f and "clicks_1h" in f for f in failed["data gate [user_stats]"].failures)
    assert "user_stats" not in rows and rows["user_sequence"] > 0
    user = table.column("user_id")[0].as_py()
    assert read_online(store, "user_stats", ["clicks_life"], [{"user_id": user}]) == [None]
    assert pa.types.is_integer(table.schema.field("clicks_1h").type)


def test_statistics_read_online_equal_the_training_sets_at_any_request_time(tmp_path):
    """Serving and training agree: user_stats_now / item_stats_now (Feast on-demand views over the
    online state) at a request time equal the point-in-time features of that time, which come
    from the event log independently; and at the backfill's as-of time, the offline values."""
    from pipelines.store.historical import historical_features

    backfilled_run(tmp_path, users=20, days=4, stats_as_of_ms=AS_OF)
    store = open_store(tmp_path)
    publish(store, tmp_path, CAPS)
    users = [r["user_id"] for r in offline_rows(tmp_path, "user_stats")]
    items = [r["item_id"] for r in offline_rows(tmp_path, "item_stats")][:40]
    offline = {r["user_id"]: r for r in offline_rows(tmp_path, "user_stats")}
    names = stats.feature_names()
    for request_ms in (AS_OF, AS_OF + 45 * 60_000, AS_OF + 26 * 3_600_000, AS_OF + 8 * DAY_MS):
        rows = [{"user_id": u, "item_id": items[i % len(items)], "request_ms": request_ms} for i, u in enumerate(users)]
        got = {**store.get_online_features(features=[f"user_stats_now:user_{n}" for n in names],
                                           entity_rows=rows).to_dict(),
               **store.get_online_features(features=[f"item_stats_now:item_{n}" for n in names],
                                           entity_rows=rows).to_dict()}
        entities = pa.table({"user_id": [r["user_id"] for r in rows], "item_id": [r["item_id"] for r in rows],
                             "timestamp": [request_ms] * len(rows)})
        want = historical_features(tmp_path, entities, CAPS).to_pydict()
        for prefix in ("user_", "item_"):
            for n in names:
                assert got[prefix + n] == pytest.approx(want[prefix + n]), (prefix, n, request_ms)
        if request_ms == AS_OF:  # the backfill wrote its values as of this time
            for i, u in enumerate(users):
                assert {n: got[f"user_{n}"][i] for n in names} == pytest.approx({n: offline[u][n] for n in names})
    service = store.get_online_features(features=store.get_feature_service("ranker"), full_feature_names=True,
                                        entity_rows=[{**rows[0], "category_id": 0}]).to_dict()
    # the services read each view's one packed value (features.packed)
    row = packed.unpack("stats", service["user_stats__packed"][0])
    state = {f: [row[f]] for f in stats.STATE_FIELDS}
    assert stats.values_at(state, [AS_OF])["clicks_1h"] == [offline[rows[0]["user_id"]]["clicks_1h"]]
    assert {"user_recent__packed", "item_stats__packed", "user_category_sequence__packed"} <= set(service)
    recent = packed.unpack("sequence", service["user_recent__packed"][0])
    assert recent == read_online(store, "user_recent", list(SEQUENCE_FIELDS), [{"user_id": rows[0]["user_id"]}])[0]
