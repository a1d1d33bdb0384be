"""Feast on Redis, against a real redis-server the tests start themselves (127.0.0.1, a free
port, no persistence, stopped by PID): materialize, read back, never back in time, the same
definitions on SQLite and Redis, and an outage that raises and then recovers."""
from __future__ import annotations

import subprocess
import time

import pyarrow.parquet as pq
import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStoreConfig

from feature_repo.definitions import USER_SEQUENCE, SEQUENCE_FIELDS
from pipelines.store.feature_store import (OnlineStore, apply, materialize_user_sequences, open_store,
                                     read_user_sequences, write_user_sequences)
from tests.helpers import backfilled_run
from pipelines.embedded.redis import RedisServer
from pipelines.processes import pid_alive
from tests.helpers import redis_server_or_skip, sequence_row

pytestmark = pytest.mark.engine
NEW_USER = 2**62 + 7  # not in the synthetic run (stable_id hashes only by chance land here)


def plain(row: dict | None) -> dict | None:
    """An online row as plain Python values (lists as lists), for comparing with Parquet rows."""
    if row is None:
        return None
    return {k: list(row[k]) if isinstance(row[k], (list, tuple)) else row[k] for k in SEQUENCE_FIELDS}


def offline_rows(work) -> list[dict]:
    return pq.read_table(work / "offline" / USER_SEQUENCE).to_pylist()


@pytest.fixture(scope="module")
def redis_server():
    redis_server_or_skip()
    server = RedisServer().start()
    yield server
    server.close()
    assert not pid_alive(server.pid), f"redis-server pid {server.pid} still running after stop"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("redis_store")
    backfilled_run(work)
    return work


@pytest.fixture(scope="module")
def stores(run, redis_server):
    """One run folder, one registry, two online stores: SQLite (the default) and Redis."""
    out = {"sqlite": open_store(run), "redis": open_store(run, OnlineStore(kind="redis", redis_url=redis_server.address))}
    for store in out.values():
        apply(store, run)
    out["materialized"] = {kind: materialize_user_sequences(out[kind], run) for kind in ("sqlite", "redis")}
    return out


def test_materialize_loads_every_user_into_redis_and_reads_equal_the_offline_rows(run, stores, redis_server):
    offline = offline_rows(run)
    # Feast's Redis store, writing only what is not older (feature_repo/online_stores.py)
    assert isinstance(stores["redis"].config.online_store, RedisOnlineStoreConfig)
    assert stores["redis"].config.online_store.type == "feature_repo.online_stores.MonotonicRedisOnlineStore"
    assert stores["materialized"]["redis"] == len(offline) > 0
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    assert raw.dbsize() == len(offline)  # one hash per user: the reads below come from this server
    online = read_user_sequences(stores["redis"], [r["user_id"] for r in offline])
    assert len(online) == len(offline)
    for row in offline:
        assert plain(online[row["user_id"]]) == {k: row[k] for k in SEQUENCE_FIELDS}, row["user_id"]


def test_unknown_user_reads_as_none_on_redis(stores):
    assert read_user_sequences(stores["redis"], [123456789]) == {123456789: None}


def test_the_same_definitions_serve_sqlite_and_redis(run, stores):
    users = [r["user_id"] for r in offline_rows(run)] + [123456789]
    from_sqlite = {u: plain(r) for u, r in read_user_sequences(stores["sqlite"], users).items()}
    from_redis = {u: plain(r) for u, r in read_user_sequences(stores["redis"], users).items()}
    assert from_sqlite == from_redis
    assert sum(r is not None for r in from_redis.values()) == len(users) - 1
    view = {kind: stores[kind].get_feature_view(USER_SEQUENCE) for kind in ("sqlite", "redis")}
    assert view["sqlite"] == view["redis"]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_online_features_never_move_back_in_time(run, stores, kind):
    store = stores[kind]
    t = 1_735_689_600_000
    base = {"user_id": NEW_USER, "seq_item_ids": [11], "seq_category_ids": [1], "seq_event_types": [2],
            "seq_timestamps": [t], "seq_length": 1, "last_event_ms": t}
    assert write_user_sequences(store, [base]) == 1
    assert plain(read_user_sequences(store, [NEW_USER])[NEW_USER]) == {k: base[k] for k in SEQUENCE_FIELDS}

    older = {**base, "seq_item_ids": [99], "last_event_ms": t - 1, "seq_timestamps": [t - 1]}
    assert write_user_sequences(store, [older]) == 0
    assert read_user_sequences(store, [NEW_USER])[NEW_USER]["seq_item_ids"] == [11]

    # An out-of-order event (older than the user's newest, newer than the stream's floor)
    # lands in a later micro-batch: same last_event_ms, one more behavior. It must be written.
    same_time = {**base, "seq_item_ids": [12, 11], "seq_category_ids": [1, 1], "seq_event_types": [2, 2],
                 "seq_timestamps": [t - 5, t], "seq_length": 2}
    assert write_user_sequences(store, [same_time]) == 1
    assert read_user_sequences(store, [NEW_USER])[NEW_USER]["seq_item_ids"] == [12, 11]

    newer = {**same_time, "seq_item_ids": [12, 11, 13], "seq_category_ids": [1, 1, 1],
             "seq_event_types": [2, 2, 2], "seq_timestamps": [t - 5, t, t + 1], "seq_length": 3,
             "last_event_ms": t + 1}
    assert write_user_sequences(store, [newer]) == 1
    assert plain(read_user_sequences(store, [NEW_USER])[NEW_USER]) == {k: newer[k] for k in SEQUENCE_FIELDS}

    # A materialized user: a replayed older row is skipped and the user keeps the offline row.
    row = offline_rows(run)[0]
    stale = sequence_row(row["user_id"], [7], row["last_event_ms"] - 1)
    assert write_user_sequences(store, [stale, {**newer, "last_event_ms": t - 10}]) == 0
    assert plain(read_user_sequences(store, [row["user_id"]])[row["user_id"]]) == \
        {k: row[k] for k in SEQUENCE_FIELDS}


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_clearing_a_view_removes_its_rows_and_their_versions(run, stores, kind):
    """What replacing a serving version of item vectors relies on: after clear, an older row is written."""
    store = stores[kind]
    user, t = NEW_USER + 7, 1_735_689_600_000
    row = {"user_id": user, "seq_item_ids": [5], "seq_category_ids": [1], "seq_event_types": [2],
           "seq_timestamps": [t], "seq_length": 1, "last_event_ms": t}
    assert write_user_sequences(store, [row]) == 1
    store._get_provider().online_store.clear(store.config, store.get_feature_view(USER_SEQUENCE))
    assert read_user_sequences(store, [user])[user] is None
    older = {**row, "seq_item_ids": [6], "seq_timestamps": [t - 1000], "last_event_ms": t - 1000}
    assert write_user_sequences(store, [older]) == 1  # no version left to refuse it
    assert read_user_sequences(store, [user])[user]["seq_item_ids"] == [6]
    materialize_user_sequences(store, run)  # the module's other tests read the materialized users


def test_a_batch_over_several_script_calls_writes_each_key_only_over_an_older_row(stores, redis_server,
                                                                                  monkeypatch):
    """The Redis store writes a batch in one script call per chunk of keys: each key is judged on
    its own (newer and equal written, older skipped), across chunks, and every key gets the TTL."""
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from feature_repo import online_stores

    monkeypatch.setattr(online_stores, "_CHUNK", 3)  # 8 keys: three calls in one pipeline
    store, t = stores["redis"], 1_735_689_600_000
    users = [NEW_USER + 100 + i for i in range(8)]
    first = [sequence_row(u, [1, 2], t) for u in users]
    assert write_user_sequences(store, first) == 8
    # newer, older, equal (a late event that does not move the newest time), older, ...
    second = [sequence_row(u, [3, 4, 5][: 1 + i % 3], t + (1, -1, 0)[i % 3]) for i, u in enumerate(users)]
    assert write_user_sequences(store, second) == sum(i % 3 != 1 for i in range(8))
    got = read_user_sequences(store, users)
    for i, u in enumerate(users):
        want = first[i] if i % 3 == 1 else second[i]
        assert plain(got[u]) == {k: want[k] for k in SEQUENCE_FIELDS}, (i, u)

    monkeypatch.setattr(store.config.online_store, "key_ttl_seconds", 600)
    assert write_user_sequences(store, [sequence_row(u, [9], t - 5) for u in users[:4]]) == 0  # all older
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    for i, u in enumerate(users):
        key = _redis_key(store.config.project, EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=u)]),
                         entity_key_serialization_version=store.config.entity_key_serialization_version)
        assert (0 < raw.ttl(key) <= 600) == (i < 4), (i, raw.ttl(key))


class ClusterNode(RedisServer):
    """A redis-server in cluster mode (a one-node cluster once it owns every slot)."""

    def _launch(self, port: int) -> subprocess.Popen:
        args = [self.binary, "--port", str(port), "--bind", self.host, "--save", "", "--appendonly", "no",
                "--dir", self._dir, "--daemonize", "no", "--logfile", str(self._log),
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def test_a_redis_cluster_takes_the_writes_and_never_goes_back_in_time(run, monkeypatch):
    """redis_type: redis_cluster (feature_store.yaml) writes through the same script, a call per
    key (a cluster pipeline runs no script), and reads back through Feast."""
    from feast.infra.online_stores.redis import RedisType

    redis_server_or_skip()
    with ClusterNode() as node:
        raw = redis.Redis(host="127.0.0.1", port=node.port)
        raw.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while raw.cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, f"the one-node cluster never came up: {raw.cluster('info')}"
            time.sleep(0.05)
        store = open_store(run, OnlineStore(kind="redis", redis_url=node.address))
        monkeypatch.setattr(store.config.online_store, "redis_type", RedisType.redis_cluster)
        apply(store, run)
        t, users = 1_735_689_600_000, [NEW_USER + 200 + i for i in range(5)]
        rows = [sequence_row(u, [1, 2], t) for u in users]
        assert write_user_sequences(store, rows) == 5
        assert write_user_sequences(store, [sequence_row(users[0], [7], t - 1), sequence_row(users[1], [8], t + 1)]) == 1
        got = read_user_sequences(store, users)
        assert got[users[0]]["seq_item_ids"] == [1, 2] and got[users[1]]["seq_item_ids"] == [8]
        assert [plain(got[u]) for u in users[2:]] == [{k: r[k] for k in SEQUENCE_FIELDS} for r in rows[2:]]
    assert not pid_alive(node.pid), f"redis-server pid {node.pid} still running after stop"


def test_redis_outage_raises_a_connection_error_then_recovers_after_restart(run, stores):
    """Its own server: stop it, a read raises (no silent empty result); restart on the same
    port (empty: no persistence), re-materialize, and the SAME FeatureStore reads again."""
    offline = offline_rows(run)
    users = [r["user_id"] for r in offline]
    server = RedisServer().start()
    try:
        store = open_store(run, OnlineStore(kind="redis", redis_url=server.address))
        apply(store, run)
        assert materialize_user_sequences(store, run) == len(offline)
        assert plain(read_user_sequences(store, users[:1])[users[0]]) is not None

        port, pid = server.port, server.pid
        server.stop()
        assert not pid_alive(pid), f"redis-server pid {pid} still running after stop"
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError, match=f"127.0.0.1:{port}.*Connection refused"):
            read_user_sequences(store, users)
        assert time.monotonic() - started < 5, "a refused connection should fail fast, not hang"
        with pytest.raises(redis.exceptions.ConnectionError):
            write_user_sequences(store, [{**offline[0], "last_event_ms": offline[0]["last_event_ms"] + 1}])

        server.start()
        assert server.port == port and server.pid != pid
        # A restarted server without persistence is empty: every user reads as unknown, not as an error.
        assert set(read_user_sequences(store, users).values()) == {None}
        assert materialize_user_sequences(store, run) == len(offline)
        online = read_user_sequences(store, users)
        for row in offline:
            assert plain(online[row["user_id"]]) == {k: row[k] for k in SEQUENCE_FIELDS}
    finally:
        last = server.pid
        server.close()
    assert not pid_alive(last), f"redis-server pid {last} still running after stop"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_read_rows_equals_feasts_get_online_features_for_every_packed_view(run, stores, kind):
    """read_rows reads packed views through Feast's online store interface (online_read); what it
    returns equals what Feast's request API (get_online_features) returns for the same keys, the
    stored value unpacked, for one-key and two-key views, with a key the store lacks; and its numpy
    form (arrays=True) holds the same values."""
    from features.packed import unpack
    from features.tables import PACKED_KIND
    from feature_repo.definitions import PACKED, view_fields
    from pipelines.store.feature_store import read_rows, write_rows
    from pipelines.store.online_rows import OnlineTable, join_keys, read_together

    store, read_rows_of = stores[kind], {}
    category_rows = [{**sequence_row(NEW_USER + u, [5 + u, 6], 1_700_000_000_000 + u), "category_id": 30 + u}
                     for u in range(3)]
    stats_rows = [{"item_id": NEW_USER + i, "newest_ms": 1_700_000_000_000 + i, "tile_starts": [1_699_999_980_000],
                   "tile_counts": [i, 1, 2], "impressions_life": i, "clicks_life": 1, "behaviors_life": 2}
                  for i in range(3)]
    assert write_rows(store, "user_category_sequence", category_rows) == 3
    assert write_rows(store, "item_stats", stats_rows) == 3
    keys = {USER_SEQUENCE: [r["user_id"] for r in offline_rows(run)[:5]] + [123456789],
            "user_category_sequence": [(r["user_id"], r["category_id"]) for r in category_rows] + [(NEW_USER, 99)],
            "item_stats": [r["item_id"] for r in stats_rows] + [123456789]}
    for view, view_keys in keys.items():
        names = join_keys(view)
        rows = [dict(zip(names, k if isinstance(k, tuple) else (k,))) for k in view_keys]
        packed = store.get_online_features(features=[f"{view}:{PACKED}"], entity_rows=rows).to_dict()[PACKED]
        fields = view_fields(view)
        expected = [None if v is None else {f: unpack(PACKED_KIND[view], v)[f] for f in fields} for v in packed]
        assert read_rows(store, view, view_keys) == expected, view
        assert expected[-1] is None and all(e is not None for e in expected[:-1])
        as_arrays = read_rows(store, view, view_keys, arrays=True)
        assert [None if r is None else {f: (v.tolist() if hasattr(v, "tolist") else v) for f, v in r.items()}
                for r in as_arrays] == expected, view
        assert any(hasattr(v, "dtype") for v in as_arrays[0].values())  # numpy arrays, not lists
        read_rows_of[view] = expected
    # the stream's bootstrap reads: every view in one call (the stores' read_encoded), the same rows
    tables = [OnlineTable(store, view) for view in keys]
    assert read_together([(t, keys[t.view]) for t in tables]) == [read_rows_of[t.view] for t in tables]
    assert read_together([(tables[0], [])]) == [[]] and read_together([]) == []
