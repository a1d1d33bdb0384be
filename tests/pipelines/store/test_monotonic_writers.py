"""Two processes write the same keys at once, one newer rows and one older: the store's
compare-and-write is atomic (feature_repo/online_stores.py), so every key ends on the newer
row, on SQLite and on Redis. A guard that read the stored version and then wrote in a second
step let the older writer win some keys here (60 of them on SQLite, 9 on Redis, when probed)."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from features import stats
from pipelines.store.feature_store import OnlineStore, apply, open_store, read_rows
from pipelines.store.online_rows import OnlineTable
from pipelines.embedded.redis import RedisServer
from tests.helpers import redis_server_or_skip

pytestmark = pytest.mark.engine
KEYS, ROUNDS, BATCH = 400, 15, 50
OLD_MS, NEW_MS = 1_700_000_000_000, 1_700_000_500_000


def item_row(item: int, newest_ms: int, clicks: int) -> dict:
    state = stats.empty()
    for i in range(clicks):
        stats.add(state, newest_ms - i, (1,))
    return {"item_id": item, **stats.to_row(state, newest_ms + 1)}


def _writer(work: str, online: OnlineStore, newest_ms: int, clicks: int, go) -> None:
    table = OnlineTable(open_store(Path(work), online), "item_stats")
    rows = [item_row(item, newest_ms, clicks) for item in range(KEYS)]
    go.wait()
    for _ in range(ROUNDS):
        for i in range(0, KEYS, BATCH):
            table.write(rows[i:i + BATCH])


@pytest.fixture(params=["sqlite", "redis"])
def online(request, tmp_path):
    """The run folder's SQLite store, or a redis-server started for the test; applied."""
    server = None
    if request.param == "redis":
        redis_server_or_skip()
        server = RedisServer().start()
    try:
        store = OnlineStore() if server is None else OnlineStore(kind="redis", redis_url=server.address)
        apply(open_store(tmp_path, store), tmp_path)
        yield store
    finally:
        if server is not None:
            server.close()


def test_an_older_writer_never_wins_a_key(tmp_path, online):
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), online, ms, clicks, go))
               for ms, clicks in ((NEW_MS, 3), (OLD_MS, 1))]
    for w in writers:
        w.start()
    go.set()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0, f"a writer exited with {w.exitcode}"
    rows = read_rows(open_store(tmp_path, online), "item_stats", list(range(KEYS)), ["newest_ms", "clicks_life"])
    older = [k for k, row in enumerate(rows) if row["newest_ms"] != NEW_MS]
    assert not older, f"{len(older)} keys went back in time, e.g. item {older[:5]}"
    assert {row["clicks_life"] for row in rows} == {3}


def test_a_sqlite_reader_mid_transaction_does_not_block_a_writer(tmp_path):
    """The SQLite store is in WAL mode: a serving read that holds its transaction open does not
    make the stream's writes wait (in SQLite's default rollback journal the commit waited 5 s
    for the reader's lock, then failed with 'database is locked')."""
    import sqlite3

    apply(open_store(tmp_path), tmp_path)
    table = OnlineTable(open_store(tmp_path), "item_stats")
    table.write([item_row(1, OLD_MS, 1)])
    reader = sqlite3.connect(str(tmp_path / "feast" / "online.db"), timeout=0.5)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0  # holds a read lock
        table.provider.online_store._conn.execute("PRAGMA busy_timeout = 500")
        table.write([item_row(1, NEW_MS, 2)])
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # the writer's connection syncs at WAL checkpoints, not every commit (1 = NORMAL; FULL is 2)
        assert table.provider.online_store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    finally:
        reader.close()
    assert read_rows(open_store(tmp_path), "item_stats", [1], ["newest_ms", "clicks_life"]) == [
        {"newest_ms": NEW_MS, "clicks_life": 2}]


def test_teardown_removes_the_sqlite_wal_files_too(tmp_path):
    """A database deleted while another connection holds it open leaves its WAL files behind
    unless teardown removes them; a new database in the same place must never meet them."""
    import sqlite3

    apply(open_store(tmp_path), tmp_path)
    table = OnlineTable(open_store(tmp_path), "item_stats")
    table.write([item_row(1, OLD_MS, 1)])
    db = tmp_path / "feast" / "online.db"
    other = sqlite3.connect(str(db))  # another process's connection: the WAL files stay while it is open
    try:
        other.execute("SELECT count(*) FROM sqlite_master").fetchone()
        assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
        table.provider.online_store.teardown(table.store.config, [table.feature_view], [])
        assert not [p.name for p in db.parent.glob("online.db*")]
    finally:
        other.close()


def test_an_encoded_write_stores_what_feasts_own_write_stores(tmp_path, online):
    """OnlineTable writes packed rows already encoded (write_encoded, each entity key serialized
    once); the store then holds, byte for byte, what Feast's online_write_batch of the same row
    holds: the same value, event time and version. Then a Feast write of an older row leaves it."""
    from datetime import datetime, timezone

    from feast.protos.feast.types.Value_pb2 import Value

    from feature_repo.definitions import PACKED
    from features.packed import pack

    kind = online.kind
    table = OnlineTable(open_store(tmp_path, online), "item_stats")
    store = table.provider.online_store
    rows = [item_row(1, NEW_MS, 3), item_row(2, NEW_MS, 3)]
    assert table.write(rows[:1]) == 1
    assert table.key_bytes(1) in table.encoded.values()
    ts = datetime.fromtimestamp((NEW_MS + 1) / 1000, timezone.utc)  # newest_ms + 1: the row's as-of time
    feast_rows = [(table.entity_key(2), {PACKED: Value(bytes_val=pack("stats", rows[1]))}, ts, None)]
    store.online_write_batch(table.store.config, table.feature_view, feast_rows, None)
    stored = [_stored(table, kind, key) for key in (1, 2)]
    assert stored[0] and stored[0] == stored[1]
    older = [(table.entity_key(1), {PACKED: Value(bytes_val=pack("stats", item_row(1, OLD_MS, 1)))},
              datetime.fromtimestamp(OLD_MS / 1000, timezone.utc), None)]
    store.online_write_batch(table.store.config, table.feature_view, older, None)
    assert _stored(table, kind, 1) == stored[0]


def _stored(table: OnlineTable, kind: str, key: int):
    """What the store holds for key, without the key itself."""
    store = table.provider.online_store
    if kind == "sqlite":
        rows = store._conn.execute("SELECT feature_name, value, event_ts, version_ms FROM "
                                   "tab WHERE entity_key = ?".replace("tab", _table(table)), (table.key_bytes(key),))
        return sorted(rows.fetchall())
    client = store._get_client(table.store.config.online_store)
    return client.hgetall(table.key_bytes(key) + table.store.config.project.encode())


def _table(table: OnlineTable) -> str:
    from feast.infra.online_stores.sqlite import _quote_id, _table_id

    config = table.store.config
    return _quote_id(_table_id(config.project, table.feature_view, config.registry.enable_online_feature_view_versioning))
