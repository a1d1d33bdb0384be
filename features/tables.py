"""Arrow schemas of the offline tables the backfill writes and the trainer reads."""
from __future__ import annotations

import pyarrow as pa

from features import stats
from features.labels import EXAMPLE_SCHEMA
from features.schema import REJECTION_SCHEMA

BEHAVIOR_LOG_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category_id", pa.int64(), nullable=False),
        pa.field("event_type_code", pa.int32(), nullable=False),
    ]
)

# Every deduplicated event (impressions included), for point-in-time statistics.
EVENT_LOG_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("event_type_code", pa.int32(), nullable=False),
    ]
)

FEATURE_TS = pa.field("feature_ts", pa.timestamp("us", tz="UTC"))
# The row's fields as one value (features.packed): what the online store and Feast's views hold.
PACKED = pa.field("packed", pa.binary())
_SEQUENCE_FIELDS = [
    pa.field("seq_item_ids", pa.list_(pa.int64())),
    pa.field("seq_category_ids", pa.list_(pa.int64())),
    pa.field("seq_event_types", pa.list_(pa.int32())),
    pa.field("seq_timestamps", pa.list_(pa.int64())),
    pa.field("seq_length", pa.int64()),
    pa.field("last_event_ms", pa.int64()),
]
USER_SEQUENCE_SCHEMA = pa.schema([pa.field("user_id", pa.int64(), nullable=False), *_SEQUENCE_FIELDS, FEATURE_TS,
                                  PACKED])
USER_CATEGORY_SEQUENCE_SCHEMA = pa.schema(
    [pa.field("user_id", pa.int64(), nullable=False), pa.field("category_id", pa.int64(), nullable=False),
     *_SEQUENCE_FIELDS, FEATURE_TS, PACKED])


def _stats_schema(key: str) -> pa.Schema:
    return pa.schema([pa.field(key, pa.int64(), nullable=False),
                      *[pa.field(n, pa.float64() if n.startswith("ctr") else pa.int64()) for n in stats.feature_names()],
                      # the mergeable state (features.stats.to_row): the stream continues it, serving reads it at any time
                      pa.field("newest_ms", pa.int64()), pa.field("tile_starts", pa.list_(pa.int64())),
                      pa.field("tile_counts", pa.list_(pa.int64())), FEATURE_TS, PACKED])


USER_STATS_SCHEMA = _stats_schema("user_id")
ITEM_STATS_SCHEMA = _stats_schema("item_id")

# Every table the backfill writes, by folder name.
TABLES = {
    "behavior_log": BEHAVIOR_LOG_SCHEMA,
    "event_log": EVENT_LOG_SCHEMA,
    "user_sequence": USER_SEQUENCE_SCHEMA,
    "user_recent": USER_SEQUENCE_SCHEMA,
    "user_category_sequence": USER_CATEGORY_SEQUENCE_SCHEMA,
    "user_stats": USER_STATS_SCHEMA,
    "item_stats": ITEM_STATS_SCHEMA,
    "examples": EXAMPLE_SCHEMA,
    "rejected": REJECTION_SCHEMA,
}
# The views whose online rows are packed, and their layout (features.packed).
PACKED_KIND = {"user_sequence": "sequence", "user_recent": "sequence", "user_category_sequence": "sequence",
               "user_stats": "stats", "item_stats": "stats"}
