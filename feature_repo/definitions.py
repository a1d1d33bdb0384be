"""Feast objects, defined once: ``definitions(offline_dir)`` builds them for any
run folder. repo.py binds them at module level for `feast apply`."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Int32, Int64

USER_SEQUENCE = "user_sequence"
USER_SEQUENCE_PUSH = "user_sequence_push"
USER_SEQUENCE_FIELDS = ("seq_item_ids", "seq_category_ids", "seq_event_types", "seq_timestamps",
                        "seq_length", "last_event_ms")


def definitions(offline_dir: str) -> dict:
    """Every Feast object of the project, by name, reading offline tables under offline_dir."""
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
                  description="A user; user_id is features.ids.stable_id of the raw ID")
    batch = FileSource(name="user_sequence_offline", path=str(Path(offline_dir) / USER_SEQUENCE),
                       timestamp_field="feature_ts")
    push = PushSource(name=USER_SEQUENCE_PUSH, batch_source=batch)
    view = FeatureView(
        name=USER_SEQUENCE,
        entities=[user],
        ttl=timedelta(0),  # sequences never expire; the newest row wins
        schema=[
            Field(name="seq_item_ids", dtype=Array(Int64)),
            Field(name="seq_category_ids", dtype=Array(Int64)),
            Field(name="seq_event_types", dtype=Array(Int32)),
            Field(name="seq_timestamps", dtype=Array(Int64)),
            Field(name="seq_length", dtype=Int64),
            Field(name="last_event_ms", dtype=Int64),
        ],
        source=push,
        online=True,
        description="Each user's most recent behaviors (features.sequence), oldest first",
    )
    ranker = FeatureService(name="ranker", features=[view], description="Features the ranker reads online")
    return {"user": user, "user_sequence_offline": batch, USER_SEQUENCE_PUSH: push,
            USER_SEQUENCE: view, "ranker": ranker}
