"""Event and item contracts shared by every engine."""
from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

# Event types, in code order. Code 0 is padding in sequences.
EVENT_TYPES: tuple[str, ...] = ("impression", "click", "view", "cart", "fav", "buy", "rate")
EVENT_TYPE_CODE: dict[str, int] = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}
# Behaviors are what a user did; impressions are what a user was shown.
BEHAVIOR_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - {"impression"}

UNKNOWN_CATEGORY = 0


class Event(NamedTuple):
    """One validated behavior event. IDs are already mapped to int64 (see ids.py)."""

    event_id: str
    user_id: int
    item_id: int
    event_type: str
    timestamp: int  # UTC milliseconds since the epoch
    category_id: int | None = None
    value: float | None = None
    request_id: str | None = None
    position: int | None = None


class Rejection(NamedTuple):
    """A record that did not become an event, with a named reason and the raw input."""

    reason: str  # a code from validate.REASONS
    field: str | None
    detail: str
    raw: str


EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("category_id", pa.int64()),
        pa.field("value", pa.float64()),
        pa.field("request_id", pa.string()),
        pa.field("position", pa.int32()),
    ]
)

REJECTION_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
    ]
)

def events_to_table(events: list[Event]) -> pa.Table:
    """Column-wise conversion of events to an Arrow table with EVENT_SCHEMA."""
    columns = list(zip(*events)) if events else [[] for _ in EVENT_SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, EVENT_SCHEMA)],
        schema=EVENT_SCHEMA,
    )


def table_to_events(table: pa.Table) -> list[Event]:
    """Inverse of events_to_table."""
    cols = [table.column(f.name).to_pylist() for f in EVENT_SCHEMA]
    return [Event(*row) for row in zip(*cols)]
