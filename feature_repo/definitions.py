"""Feast objects, defined once: ``definitions(offline_dir)`` builds them for any
run folder. repo.py binds them at module level for `feast apply`."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    OnDemandFeatureView,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.types import Array, Bytes, Float32, Float64, Int32, Int64, String

from features import stats
from features.item_vectors import DEFAULT_VERSION, serving_version, version_dir
from features.tables import PACKED_KIND, TABLES, USER_SEQUENCE_SCHEMA

USER_SEQUENCE = "user_sequence"
USER_SEQUENCE_PUSH = "user_sequence_push"
KEYS = ("user_id", "item_id", "category_id", "feature_ts", "packed")
PACKED = "packed"  # the one online field of every view in PACKED_KIND: its fields as one value (features.packed)
# The feature columns of the sequence views, as the offline tables declare them.
SEQUENCE_FIELDS = tuple(n for n in USER_SEQUENCE_SCHEMA.names if n not in KEYS)
ITEM_CONTENT = "item_content"
ITEM_CONTENT_FIELDS = ("vector", "encoder_version", "modalities")
USER_INTERESTS = "user_interests"
# K interest vectors of d floats, flattened row-major (interests[k * dim:(k + 1) * dim] is vector k),
# from the champion retriever, as of as_of_ms (the publication time: it orders a user's rows).
USER_INTERESTS_FIELDS = ("interests", "num_interests", "dim", "model_version", "as_of_ms")
# Offline table (features.tables.TABLES) -> the entities its view is keyed by.
VIEW_ENTITIES = {
    "user_sequence": ("user",),
    "user_recent": ("user",),
    "user_category_sequence": ("user", "category"),
    "user_stats": ("user",),
    "item_stats": ("item",),
}


_FEAST_TYPES = {pa.int32(): Int32, pa.int64(): Int64, pa.float64(): Float64,
                pa.list_(pa.int32()): Array(Int32), pa.list_(pa.int64()): Array(Int64)}


STATS_VIEWS = ("user_stats", "item_stats")
REQUEST_TIME = "request_ms"  # the read time an entity row gives the *_stats_now views (ms)


def view_fields(view: str) -> tuple[str, ...]:
    """A view's feature names as readers get them: its offline table's columns, keys, feature_ts
    and packed aside. The statistics views hold only their state online (features.stats.STATE_FIELDS):
    values stored as of the last event would be stale at read time, so the *_stats_now views
    compute them. Online, the views in PACKED_KIND hold these fields as one packed value."""
    if view == ITEM_CONTENT:
        return ITEM_CONTENT_FIELDS
    if view == USER_INTERESTS:
        return USER_INTERESTS_FIELDS
    if view in STATS_VIEWS:
        return stats.STATE_FIELDS
    return tuple(f.name for f in TABLES[view] if f.name not in KEYS)


def feast_schema(table: str) -> list[Field]:
    """A view's Feast schema: one ``packed`` value for the views in PACKED_KIND (features.packed),
    else its fields, typed from its offline table's Arrow schema (features.tables)."""
    if table in PACKED_KIND:
        return [Field(name=PACKED, dtype=Bytes)]
    types = {f.name: f.type for f in TABLES[table]}
    return [Field(name=name, dtype=_FEAST_TYPES[types[name]]) for name in view_fields(table)]


def user_stats_values(inputs: dict) -> dict:
    """user_stats_now's transformation (module level: Feast stores it with dill)."""
    return _stats_values(inputs, "user_stats")


def item_stats_values(inputs: dict) -> dict:
    """item_stats_now's transformation."""
    return _stats_values(inputs, "item_stats")


def _stats_values(inputs: dict, view: str) -> dict:
    from features import packed
    from features import stats as algebra

    # Feast names an input view__field where two requested views share a field name.
    values = inputs.get(f"{view}__packed", inputs.get("packed")) or []
    # Feast calls this at apply time with sample inputs (b"hello world"): those read as no state.
    rows = [packed.unpack("stats", v) if packed.is_packed("stats", v) else None for v in values]
    state = {f: [None if r is None else r[f] for r in rows] for f in algebra.STATE_FIELDS}
    prefix = view.split("_")[0] + "_"
    return {prefix + k: v for k, v in algebra.values_at(state, inputs["request_ms"]).items()}


def stats_now(view: FeatureView, request: RequestSource) -> OnDemandFeatureView:
    """``<view>_now``: the statistics as of the entity row's request_ms, computed on read from the
    view's state (features.stats.values_at), so get_online_features returns exact windows at
    any time, as the point-in-time training sets have them. The features are named as in the
    training sets (user_clicks_1h, item_ctr_7d, ...), so a service can read both views."""
    prefix = view.name.split("_")[0] + "_"
    udf = user_stats_values if prefix == "user_" else item_stats_values
    return OnDemandFeatureView(
        name=f"{view.name}_now", sources=[view, request], mode="python", udf=udf,
        udf_string=f"features.stats.values_at over {view.name}'s state at {REQUEST_TIME}",
        schema=[Field(name=prefix + n, dtype=Float64 if n.startswith("ctr") else Int64) for n in stats.feature_names()],
        description=f"{view.name}'s windows as of the request time ({REQUEST_TIME}), exact")


def entities() -> dict[str, Entity]:
    def entity(name: str) -> Entity:
        return Entity(name=name, join_keys=[f"{name}_id"], value_type=ValueType.INT64,
                      description=f"A {name}; {name}_id is features.ids.stable_id of the raw ID")
    return {name: entity(name) for name in ("user", "category", "item")}


def definitions(offline_dir: str) -> dict:
    """Every Feast object of the project, by name, reading offline tables under offline_dir."""
    ents = entities()
    out: dict = dict(ents)
    descriptions = {
        "user_sequence": "Each user's lifelong sequence: the most recent behaviors under the lifelong cap",
        "user_recent": "Each user's last few behaviors, for the short-term branch",
        "user_category_sequence": "Each (user, category)'s recent behaviors: SIM hard search by category",
        "user_stats": "The state of a user's impression, click and behavior counts (read user_stats_now)",
        "item_stats": "The state of an item's impression, click and behavior counts (read item_stats_now)",
    }
    for name, keys in VIEW_ENTITIES.items():
        batch = FileSource(name=f"{name}_offline", path=str(Path(offline_dir) / name), timestamp_field="feature_ts")
        source = batch
        if name == USER_SEQUENCE:  # the stream job pushes fresh sequences here
            source = out[USER_SEQUENCE_PUSH] = PushSource(name=USER_SEQUENCE_PUSH, batch_source=batch)
        out[batch.name] = batch
        out[name] = FeatureView(
            name=name, entities=[ents[k] for k in keys],
            ttl=timedelta(0),  # never expires: the newest row wins
            schema=feast_schema(name),
            source=source, online=True, description=descriptions[name])
    request = out["request_time"] = RequestSource(name="request_time", schema=[Field(name=REQUEST_TIME, dtype=Int64)])
    for name in STATS_VIEWS:
        out[f"{name}_now"] = stats_now(out[name], request)
    out.update(item_content_definitions(offline_dir, ents["item"]))
    out.update(user_interest_definitions(offline_dir, ents["user"]))
    # Services name the statistics' state views: Feast 0.67 drops on-demand outputs under
    # full_feature_names (which these services need: the sequence views share field names) and
    # mixes up two on-demand views read in one call. Finalize the state with
    # features.stats.values_at, or read one *_stats_now view per call.
    ranker_views = [out["user_recent"], out["user_category_sequence"], out["user_stats"], out["item_stats"]]
    if ITEM_CONTENT in out:
        ranker_views.append(out[ITEM_CONTENT])
    out["ranker"] = FeatureService(name="ranker", features=ranker_views,
                                   description="What the ranker reads online for a (user, item) request")
    out["retriever"] = FeatureService(name="retriever", features=[out["user_sequence"], out["user_stats"]],
                                      description="What the multi-interest retriever reads for a user")
    return out


def item_content_definitions(offline_dir: str, item: Entity) -> dict:
    """The item entity and the item_content view over the SERVING encoder version's vectors
    (item_embeddings/_serving.json; the default version before any embedding run). Empty
    while that version's folder does not exist (no `recstream embed` yet), so that
    materializing every view of a run without item vectors still works."""
    version = serving_version(offline_dir) or DEFAULT_VERSION
    if not version_dir(offline_dir, version).is_dir():
        return {}
    # Event time: from when a vector describes the item; a tie (a catalog valid_from that did not
    # move with the content) goes to the newer embedding run.
    source = FileSource(name="item_embedding_offline", path=str(version_dir(offline_dir, version)),
                        timestamp_field="valid_from_ts", created_timestamp_column="embedded_ts")
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
        description="Frozen multimodal item vectors (pipelines/embed/job.py) and the encoder version that made them",
    )
    return {"item_embedding_offline": source, ITEM_CONTENT: view}


def user_interest_definitions(offline_dir: str, user: Entity) -> dict:
    """The user_interests view: the champion retriever's K interest vectors per user, which the
    continuous-training loop (pipelines/retrain) writes on every promotion. Empty until the
    first publication wrote its offline table."""
    folder = Path(offline_dir) / USER_INTERESTS
    if not folder.is_dir():
        return {}
    source = FileSource(name="user_interests_offline", path=str(folder), timestamp_field="feature_ts")
    view = FeatureView(
        name=USER_INTERESTS,
        entities=[user],
        ttl=timedelta(0),
        schema=[Field(name="interests", dtype=Array(Float32)), Field(name="num_interests", dtype=Int64),
                Field(name="dim", dtype=Int64), Field(name="model_version", dtype=String),
                Field(name="as_of_ms", dtype=Int64)],
        source=source,
        online=True,
        description="The champion retriever's interest vectors per user (K x dim, flattened), for retrieval",
    )
    return {source.name: source, USER_INTERESTS: view}
