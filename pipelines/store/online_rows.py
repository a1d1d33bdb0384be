"""One view's online rows through Feast's online store interface (the provider's online_read
and online_write_batch): the layer under get_online_features / write_to_online_store, without
their per-call DataFrame, protobuf-response and request-context work, which cost ~0.3 ms a
key. The stream job's hot path uses it; rows written here are the rows get_online_features
reads (the same entity keys, value protos and timestamps in the same SQLite or Redis store).
"""
from __future__ import annotations

from datetime import datetime, timezone

from feast import FeatureStore
from feast.infra.provider import get_provider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

from feature_repo.definitions import ITEM_CONTENT, USER_INTERESTS, VIEW_ENTITIES, view_fields

# The field that orders a view's rows in time: a row older than the stored one by it is never written.
VERSION_FIELD = {"user_sequence": "last_event_ms", "user_recent": "last_event_ms",
                 "user_category_sequence": "last_event_ms", "user_stats": "newest_ms", "item_stats": "newest_ms",
                 USER_INTERESTS: "as_of_ms"}
ENTITIES = {**VIEW_ENTITIES, USER_INTERESTS: ("user",), ITEM_CONTENT: ("item",)}


def join_keys(view: str) -> list[str]:
    return [f"{entity}_id" for entity in ENTITIES[view]]


class OnlineTable:
    """Read and write one view's rows. Keys are ints, or (user_id, category_id) tuples."""

    def __init__(self, store: FeatureStore, view: str):
        self.store, self.view = store, view
        self.feature_view = store.get_feature_view(view)
        self.provider = get_provider(store.config)
        self.names = join_keys(view)
        self.fields = view_fields(view)
        self.types = {f.name: f.dtype.to_value_type() for f in self.feature_view.features}
        self.version = VERSION_FIELD.get(view)

    def entity_key(self, key) -> EntityKey:
        values = key if isinstance(key, tuple) else (key,)
        return EntityKey(join_keys=self.names, entity_values=[Value(int64_val=int(v)) for v in values])

    def key_of(self, row: dict):
        return tuple(row[n] for n in self.names) if len(self.names) > 1 else row[self.names[0]]

    def read(self, keys: list, fields: list[str] | None = None) -> list[dict | None]:
        """The rows of keys (None where the store holds none), as plain Python values."""
        if not keys:
            return []
        wanted = list(fields or self.fields)
        got = self.provider.online_read(self.store.config, self.feature_view, [self.entity_key(k) for k in keys],
                                        wanted)
        out = []
        for _, values in got:
            if not values:
                out.append(None)
                continue
            row = {f: feast_value_type_to_python_type(values[f]) if f in values else None for f in wanted}
            out.append(None if all(v is None for v in row.values()) else row)
        return out

    def write(self, rows: list[dict]) -> int:
        """Write rows (join keys + the view's fields; feature_ts optional), skipping each row older
        than the stored one by the view's version field (an equal one is written: a late event
        that does not move the newest time still changes the row). A row without feature_ts gets
        one: the sequence's newest behavior, or the statistics' as-of time (just after their
        newest event). Returns the number of rows written."""
        if not rows:
            return 0
        current = self.read([self.key_of(r) for r in rows], [self.version])
        fresh = [r for r, now in zip(rows, current)
                 if now is None or now[self.version] is None or r[self.version] >= now[self.version]]
        if not fresh:
            return 0
        columns = {f: python_values_to_proto_values([r[f] for r in fresh], self.types[f]) for f in self.fields}
        data = []
        for i, row in enumerate(fresh):
            data.append((self.entity_key(self.key_of(row)), {f: columns[f][i] for f in self.fields},
                         _feature_ts(row, self.version), None))
        self.provider.online_write_batch(self.store.config, self.feature_view, data, None)
        return len(fresh)


def _feature_ts(row: dict, version: str) -> datetime:
    ts = row.get("feature_ts")
    if ts is not None:
        return ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts / 1e3, timezone.utc)
    ms = row[version] + 1 if version == "newest_ms" else row[version]
    return datetime.fromtimestamp(ms / 1000, timezone.utc)
