"""Feast online stores that never go back in time: SQLite and Redis with an atomic compare-and-write.

Every write into these stores, whoever makes it (the stream job, `recstream materialize`, the
plain `feast materialize` in this folder), keeps a key's row only if its event time is at least
the stored one, in one atomic step inside the store:

- SQLite, in WAL mode (reads and writes never wait for each other): one transaction per batch
  of ``INSERT ... ON CONFLICT DO UPDATE ... WHERE excluded.version_ms >= version_ms`` (rows
  with an equal time are written: a late event that does not move the newest time still
  changes the row), with no read before the write. Feast
  keeps ``event_ts`` in whole seconds, so the event time in ms goes to a column of its own,
  ``version_ms``, which this store adds to each view's table (Feast's reads ignore it);
- Redis: a Lua script (run with EVALSHA, one call per chunk of 500 keys, pipelined; one call
  per key on a Redis cluster) that compares each key's new event time (ms) with the one its hash holds
  under ``_v:<view>`` and writes the fields only if it is not older. Feast's own readers see the
  same hash fields as from Feast's Redis store.

After each batch, ``written`` holds how many of its keys were written (the others were older
than what the store holds). Besides Feast's ``online_write_batch``, each store has
``write_encoded``: the same write of rows already encoded (the entity key serialized, the values
as serialized protos, the event time in ms), which the stream job's writer uses
(pipelines/store/online_rows.py) to encode each entity key once, not once per write; and
``read_encoded``, the reverse: several views' stored values of keys already encoded, in one call
(one round trip on Redis), which the stream job's bootstrap reads use (online_read decodes every
value, timestamp and key on the way, ~60 us a call more here). Named by ``type`` in a RepoConfig or feature_store.yaml:
``feature_repo.online_stores.MonotonicSqliteOnlineStore`` /
``feature_repo.online_stores.MonotonicRedisOnlineStore``.
"""
from __future__ import annotations

import functools
import os
import sqlite3
from datetime import datetime, timedelta
from typing import Any, Callable, Literal, Optional

from feast import FeatureView, RepoConfig, utils
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, _redis_key_prefix
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, _quote_id, _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, Optional[datetime]]
# (serialized entity key, feature -> serialized Value, event time ms): write_encoded's rows
EncodedRow = tuple[bytes, dict[str, bytes], int]
# (view, serialized entity keys, feature): read_encoded returns, per Read, each key's stored value
# of that feature (a serialized Value; None where the key has none), what online_read would decode
Read = tuple[FeatureView, list[bytes], str]
SQLITE = "feature_repo.online_stores.MonotonicSqliteOnlineStore"
REDIS = "feature_repo.online_stores.MonotonicRedisOnlineStore"
_CHUNK = 500  # keys per script call: a call holds the server while it runs (~4 ms for 500 keys)
# KEYS: the entities' hashes. ARGV[1] the version field, ARGV[2] the time field, ARGV[3] the TTL in s
# (0: none), then per key: its event time (ms), its serialized Timestamp, n, and n field/value pairs.
# Returns how many keys it wrote. Every key gets the TTL, written or not (as Feast's store does).
_WRITE_IF_NOT_OLDER = """
local version, time, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local at, written = 4, 0
for k = 1, #KEYS do
  local ms, n = ARGV[at], tonumber(ARGV[at + 2])
  local held = redis.call('HGET', KEYS[k], version)
  if not held or tonumber(held) <= tonumber(ms) then
    redis.call('HSET', KEYS[k], version, ms, time, ARGV[at + 1], unpack(ARGV, at + 3, at + 2 + 2 * n))
    written = written + 1
  end
  if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
  at = at + 3 + 2 * n
end
return written
"""


class MonotonicSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["feature_repo.online_stores.MonotonicSqliteOnlineStore"] = SQLITE  # type: ignore[assignment]


class MonotonicSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite store whose writes never replace a row with an older one."""

    def _get_conn(self, config: RepoConfig):
        """Feast's connection, with the database in WAL mode: readers (serving, a second job's
        bootstrap) never block a write; and synchronous=NORMAL: a commit is synced at SQLite's
        WAL checkpoints, not on its own (a power cut can lose the last commits; docs/online.md)."""
        conn = super()._get_conn(config)
        if getattr(self, "_wal_conn", None) is not conn:  # until the switch succeeds (a lock raises: retried)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._wal_conn = conn
        return conn

    def teardown(self, config: RepoConfig, tables, entities) -> None:
        """Feast's teardown deletes the database file; its WAL files go with it, so that a new
        database in the same place never meets them."""
        super().teardown(config, tables, entities)
        db_path = self._get_db_path(config)
        for suffix in ("-wal", "-shm"):
            try:
                os.unlink(db_path + suffix)
            except FileNotFoundError:
                pass

    def online_write_batch(self, config: RepoConfig, table: FeatureView, data: list[Row],
                           progress: Optional[Callable[[int], Any]]) -> None:
        rows = []
        for entity_key, values, timestamp, created_ts in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=config.entity_key_serialization_version)
            ts, created = utils.to_naive_utc(timestamp), created_ts and utils.to_naive_utc(created_ts)
            version = _ms(timestamp)
            rows.extend((key, feature, value.SerializeToString(), ts, created, version)
                        for feature, value in values.items())
        self._upsert(config, table, rows, len(data))
        if progress:
            progress(len(data))

    def write_encoded(self, config: RepoConfig, table: FeatureView, data: list[EncodedRow]) -> None:
        """online_write_batch of rows already encoded (EncodedRow)."""
        rows = [(key, feature, value, _naive_utc(ms), None, ms) for key, values, ms in data
                for feature, value in values.items()]
        self._upsert(config, table, rows, len(data))

    def read_encoded(self, config: RepoConfig, reads: list[Read]) -> list[list[Optional[bytes]]]:
        """read_encoded (Read): one query per view and chunk of keys."""
        conn = self._get_conn(config)
        out = []
        for table, keys, feature in reads:
            name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
            found: dict = {}
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                found.update(conn.execute(f"SELECT entity_key, value FROM {name} WHERE feature_name = ? AND "
                                          f"entity_key IN ({', '.join('?' * len(chunk))})", [feature, *chunk]))
            out.append([found.get(key) for key in keys])
        return out

    def _upsert(self, config: RepoConfig, table: FeatureView, rows: list[tuple], keys: int) -> None:
        """Write rows (entity key, feature, value, event_ts, created_ts, version_ms) of keys keys
        in one transaction, each only over an older one; sets ``written``."""
        conn = self._get_conn(config)
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        self._with_version_column(conn, name)
        sql = (f"INSERT INTO {name} (entity_key, feature_name, value, value_text, event_ts, created_ts, version_ms) "
               f"VALUES (?, ?, ?, NULL, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
               f"value = excluded.value, event_ts = excluded.event_ts, created_ts = excluded.created_ts, "
               f"version_ms = excluded.version_ms WHERE excluded.version_ms >= COALESCE({name}.version_ms, -1)")
        with conn:
            changed = conn.executemany(sql, rows).rowcount
        per_key = max(1, len(rows) // max(1, keys))
        self.written = changed // per_key

    def clear(self, config: RepoConfig, table: FeatureView) -> None:
        """Remove every row of a view (its table and columns stay)."""
        conn = self._get_conn(config)
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        with conn:
            conn.execute(f"DELETE FROM {name}")

    def _with_version_column(self, conn, name: str) -> None:
        """Add version_ms to a view's table once (Feast creates the table without it)."""
        seen = self.__dict__.setdefault("_versioned", set())
        if (id(conn), name) in seen:
            return
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({name})")}
        if "version_ms" not in columns:
            try:
                with conn:
                    conn.execute(f"ALTER TABLE {name} ADD COLUMN version_ms INTEGER")
            except sqlite3.OperationalError as err:  # another writer added it first
                if "duplicate column" not in str(err):
                    raise
        seen.add((id(conn), name))


class MonotonicRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["feature_repo.online_stores.MonotonicRedisOnlineStore"] = REDIS  # type: ignore[assignment]


class MonotonicRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis store whose writes never replace a row with an older one (atomically, in Lua)."""

    def clear(self, config: RepoConfig, table: FeatureView) -> None:
        """Remove a view's values, its times and its write versions from every key."""
        client = self._get_client(config.online_store)
        view = table.name
        fields = [_mmh3(f"{view}:{f.name}") for f in table.features] + [f"_ts:{view}", f"_v:{view}"]
        pattern = b"".join([_redis_key_prefix(table.join_keys), b"*", config.project.encode("utf8")])
        with client.pipeline(transaction=False) as pipe:
            for key in client.scan_iter(pattern):
                pipe.hdel(key, *fields)
            pipe.execute()

    _script = None

    def online_write_batch(self, config: RepoConfig, table: FeatureView, data: list[Row],
                           progress: Optional[Callable[[int], Any]]) -> None:
        rows = []
        for entity_key, values, timestamp, _ in data:
            key = _redis_key(config.project, entity_key,
                             entity_key_serialization_version=config.entity_key_serialization_version)
            ts = Timestamp()
            ts.FromDatetime(utils.make_tzaware(timestamp))
            rows.append((key, _ms(timestamp), ts.SerializeToString(),
                         {feature: value.SerializeToString() for feature, value in values.items()}))
        self._run(config, table, rows)
        if progress:
            progress(len(data))

    def write_encoded(self, config: RepoConfig, table: FeatureView, data: list[EncodedRow]) -> None:
        """online_write_batch of rows already encoded (EncodedRow)."""
        project = config.project.encode("utf-8")
        self._run(config, table, [(key + project, ms, _timestamp(ms), values) for key, values, ms in data])

    def read_encoded(self, config: RepoConfig, reads: list[Read]) -> list[list[Optional[bytes]]]:
        """read_encoded (Read): every view's keys in one pipelined round trip."""
        project = config.project.encode("utf-8")
        with self._get_client(config.online_store).pipeline(transaction=False) as pipe:
            for table, keys, feature in reads:
                field = _field(table.name, feature)
                for key in keys:
                    pipe.hget(key + project, field)
            got = pipe.execute()
        out, at = [], 0
        for _, keys, _ in reads:
            out.append(got[at:at + len(keys)])
            at += len(keys)
        return out

    def _run(self, config: RepoConfig, table: FeatureView, rows: list[tuple]) -> None:
        """Write rows (Redis key, version ms, serialized Timestamp, feature -> serialized Value),
        each only over an older one, in one script call per chunk of keys, pipelined; on a
        cluster, one call per key (a script's keys must share a slot, and a cluster pipeline
        runs no script). Sets ``written``."""
        client = self._get_client(config.online_store)
        if self._script is None:
            self._script = client.register_script(_WRITE_IF_NOT_OLDER)
        view = table.name
        head = [f"_v:{view}", f"_ts:{view}", config.online_store.key_ttl_seconds or 0]
        cluster = config.online_store.redis_type == RedisType.redis_cluster
        size, calls = 1 if cluster else _CHUNK, []
        for start in range(0, len(rows), size):
            keys, args = [], list(head)
            for key, version, ts, values in rows[start:start + size]:
                keys.append(key)
                args += (version, ts, len(values))
                for feature, value in values.items():
                    args += (_field(view, feature), value)
            calls.append((keys, args))
        if cluster:
            self.written = sum(self._script(keys=keys, args=args, client=client) for keys, args in calls)
            return
        with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                self._script(keys=keys, args=args, client=pipe)
            self.written = sum(pipe.execute())


@functools.lru_cache(maxsize=4096)
def _field(view: str, feature: str) -> bytes:
    """A feature's field in a Redis hash, as Feast names it."""
    return _mmh3(f"{view}:{feature}")


def _timestamp(ms: int) -> bytes:
    """An event time in ms as the serialized Timestamp Feast keeps beside a view's fields."""
    return Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000).SerializeToString()


def _naive_utc(ms: int) -> datetime:
    """An event time in ms as the naive UTC datetime Feast's SQLite store keeps."""
    return _EPOCH + timedelta(milliseconds=ms)


_EPOCH = datetime(1970, 1, 1)


def _ms(timestamp: datetime) -> int:
    """An event time as integer ms since the epoch (a naive one is UTC, as Feast takes it)."""
    return round(utils.make_tzaware(timestamp).timestamp() * 1000)
