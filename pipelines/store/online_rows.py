"""One view's online rows through Feast's online store interface (the provider's online_read
and online_write_batch): the layer under get_online_features / write_to_online_store, without
their per-call DataFrame, protobuf-response and request-context work, which cost ~0.3 ms a
key. The stream job's hot path uses it; rows written here are the rows get_online_features
reads (the same entity keys, value protos and timestamps in the same SQLite or Redis store).
The views in features.tables.PACKED_KIND hold one packed value per key (features.packed):
rows are packed on the way in and unpacked on the way out, so callers see the fields.
"""
from __future__ import annotations

from datetime import datetime, timezone

from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.provider import get_provider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

from feature_repo.definitions import ITEM_CONTENT, PACKED, USER_INTERESTS, VIEW_ENTITIES, view_fields
from features.packed import pack, unpack
from features.tables import PACKED_KIND

# The field that orders a view's rows in time: a row older than the stored one by it is never written.
VERSION_FIELD = {"user_sequence": "last_event_ms", "user_recent": "last_event_ms",
                 "user_category_sequence": "last_event_ms", "user_stats": "newest_ms", "item_stats": "newest_ms",
                 USER_INTERESTS: "as_of_ms"}
KEYS_ENCODED = 1_000_000  # serialized entity keys an OnlineTable keeps (then it starts again)
ENTITIES = {**VIEW_ENTITIES, USER_INTERESTS: ("user",), ITEM_CONTENT: ("item",)}


def join_keys(view: str) -> list[str]:
    return [f"{entity}_id" for entity in ENTITIES[view]]


class OnlineTable:
    """Read and write one view's rows. Keys are ints, or (user_id, category_id) tuples."""

    def __init__(self, store: FeatureStore, view: str, provider=None):
        self.store, self.view = store, view
        self.feature_view = store.get_feature_view(view)
        self.provider = provider or get_provider(store.config)
        self.names = join_keys(view)
        self.fields = view_fields(view)
        self.types = {f.name: f.dtype.to_value_type() for f in self.feature_view.features}
        self.version = VERSION_FIELD.get(view)
        self.packed = PACKED_KIND.get(view)  # the layout of its one packed value (features.packed), or None
        self.encoded: dict = {}  # key -> its serialized entity key (key_bytes)

    def entity_key(self, key) -> EntityKey:
        values = key if isinstance(key, tuple) else (key,)
        return EntityKey(join_keys=self.names, entity_values=[Value(int64_val=int(v)) for v in values])

    def key_bytes(self, key) -> bytes:
        """key's entity key as the store keeps it (serialized once per key: a cache)."""
        out = self.encoded.get(key)
        if out is None:
            if len(self.encoded) >= KEYS_ENCODED:
                self.encoded.clear()
            version = self.store.config.entity_key_serialization_version
            out = self.encoded[key] = serialize_entity_key(self.entity_key(key), entity_key_serialization_version=version)
        return out

    def key_of(self, row: dict):
        return tuple(row[n] for n in self.names) if len(self.names) > 1 else row[self.names[0]]

    def read(self, keys: list, fields: list[str] | None = None, arrays: bool = False) -> list[dict | None]:
        """The rows of keys (None where the store holds none), as plain Python values; with
        ``arrays``, a packed row's lists come as numpy arrays (no copy into Python lists)."""
        if not keys:
            return []
        wanted = list(fields or self.fields)
        got = self.provider.online_read(self.store.config, self.feature_view, [self.entity_key(k) for k in keys],
                                        [PACKED] if self.packed else wanted)
        out = []
        for _, values in got:
            if not values:
                out.append(None)
            elif self.packed:
                out.append(self._unpacked(values[PACKED].bytes_val if PACKED in values else None, wanted, arrays))
            else:
                row = {f: feast_value_type_to_python_type(values[f]) if f in values else None for f in wanted}
                out.append(None if all(v is None for v in row.values()) else row)
        return out

    def _unpacked(self, packed: bytes | None, fields: list[str], arrays: bool) -> dict | None:
        row = unpack(self.packed, packed, arrays)
        return None if row is None else {f: row[f] for f in fields}

    def write(self, rows: list[dict]) -> int:
        """Write rows (join keys + the view's fields; feature_ts optional). The store keeps a key's
        row only if its event time (the view's version field) is at least the stored one, in one
        atomic step (feature_repo/online_stores.py): an equal one is written (a late event that
        does not move the newest time still changes the row). A row without feature_ts gets one:
        the sequence's newest behavior, or the statistics' as-of time (just after their newest
        event). Packed views in the project's stores go encoded (write_encoded), their event times
        to the millisecond. Returns the number of rows written."""
        if not rows:
            return 0
        store = self.provider.online_store
        if self.packed and hasattr(store, "write_encoded"):  # the project's stores: each key encoded once
            data = [(self.key_bytes(self.key_of(row)), {PACKED: Value(bytes_val=pack(self.packed, row)).SerializeToString()},
                     _feature_ms(row, self.version)) for row in rows]
            store.write_encoded(self.store.config, self.feature_view, data)
            return getattr(store, "written", len(rows))
        if self.packed:
            data = [(self.entity_key(self.key_of(row)), {PACKED: Value(bytes_val=pack(self.packed, row))},
                     _feature_ts(row, self.version), None) for row in rows]
        else:
            columns = {f: python_values_to_proto_values([r[f] for r in rows], self.types[f]) for f in self.fields}
            data = [(self.entity_key(self.key_of(row)), {f: columns[f][i] for f in self.fields},
                     _feature_ts(row, self.version), None) for i, row in enumerate(rows)]
        store.online_write_batch(self.store.config, self.feature_view, data, None)
        return getattr(store, "written", len(rows))


def read_together(reads: list[tuple[OnlineTable, list]]) -> list[list[dict | None]]:
    """Several views' rows (OnlineTable, keys), as each table's read returns them, in one call
    to the store where it can (the project's stores' read_encoded, for packed views: one round
    trip on Redis, and no decoding of what is not read); otherwise view by view."""
    if not reads:
        return []
    store = reads[0][0].provider.online_store
    if not hasattr(store, "read_encoded") or not all(table.packed for table, _ in reads):
        return [table.read(keys) for table, keys in reads]
    got = store.read_encoded(reads[0][0].store.config, [(table.feature_view, [table.key_bytes(k) for k in keys], PACKED)
                                                        for table, keys in reads])
    out = []
    for (table, _), values in zip(reads, got):
        out.append([None if raw is None else table._unpacked(Value.FromString(raw).bytes_val, table.fields, False)
                    for raw in values])
    return out


def _feature_ts(row: dict, version: str) -> datetime:
    ts = row.get("feature_ts")
    if isinstance(ts, datetime):
        return ts
    return datetime.fromtimestamp(_feature_ms(row, version) / 1000, timezone.utc)


def _feature_ms(row: dict, version: str) -> int:
    """A row's event time in ms: its feature_ts, else the sequence's newest behavior or the
    statistics' as-of time (just after their newest event)."""
    ts = row.get("feature_ts")
    if isinstance(ts, datetime):  # a naive one is UTC, as Feast takes it
        return round((ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp() * 1000)
    if ts is not None:
        return int(ts)
    return row[version] + 1 if version == "newest_ms" else row[version]
