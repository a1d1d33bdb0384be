"""Feast objects, defined once: ``definitions(offline_dir)`` builds them for any
run folder. repo.py binds them at module level for `feast apply`."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int32, Int64, String

from features.item_vectors import DEFAULT_VERSION, serving_version, version_dir

USER_SEQUENCE = "user_sequence"
USER_SEQUENCE_PUSH = "user_sequence_push"
USER_SEQUENCE_FIELDS = ("seq_item_ids", "seq_category_ids", "seq_event_types", "seq_timestamps",
                        "seq_length", "last_event_ms")
ITEM_CONTENT = "item_content"
ITEM_CONTENT_FIELDS = ("vector", "encoder_version", "modalities")


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
            USER_SEQUENCE: view, "ranker": ranker, **item_content_definitions(offline_dir)}


def item_content_definitions(offline_dir: str) -> dict:
    """The item entity and the item_content view over the SERVING encoder version's vectors
    (item_embeddings/_serving.json; the default version before any embedding run). Empty
    while that version's folder does not exist (no `recstream embed` yet), so that
    materializing every view of a run without item vectors still works."""
    version = serving_version(offline_dir) or DEFAULT_VERSION
    if not version_dir(offline_dir, version).is_dir():
        return {}
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
                  description="An item; item_id is features.ids.stable_id of the raw ID")
    source = FileSource(name="item_embedding_offline", path=str(version_dir(offline_dir, version)),
                        timestamp_field="embedded_ts")
    view = FeatureView(
        name=ITEM_CONTENT,
        entities=[item],
        ttl=timedelta(0),  # vectors never expire; the newest row of the serving version wins
        schema=[
            Field(name="vector", dtype=Array(Float32)),
            Field(name="encoder_version", dtype=String),
            Field(name="modalities", dtype=String),
        ],
        source=source,
        online=True,
        tags={"encoder_version": version},
        description="Frozen multimodal item vectors (pipelines/embed.py) and the encoder version that made them",
    )
    service = FeatureService(name="ranker_item_content", features=[view],
                             description="Item content vectors for the ranker's lifelong search unit")
    return {"item": item, "item_embedding_offline": source, ITEM_CONTENT: view, "ranker_item_content": service}
