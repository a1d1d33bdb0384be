"""Arrow schemas of the offline tables the backfill writes and the trainer reads."""
from __future__ import annotations

import pyarrow as pa

from features.labels import EXAMPLE_SCHEMA

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

USER_SEQUENCE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("seq_item_ids", pa.list_(pa.int64())),
        pa.field("seq_category_ids", pa.list_(pa.int64())),
        pa.field("seq_event_types", pa.list_(pa.int32())),
        pa.field("seq_timestamps", pa.list_(pa.int64())),
        pa.field("seq_length", pa.int64()),
        pa.field("last_event_ms", pa.int64()),
        pa.field("feature_ts", pa.timestamp("us", tz="UTC")),
    ]
)

__all__ = ["BEHAVIOR_LOG_SCHEMA", "EXAMPLE_SCHEMA", "USER_SEQUENCE_SCHEMA"]
