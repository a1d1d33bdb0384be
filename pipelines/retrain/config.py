"""The continuous-training loop's configuration (typed; a TOML file loads it, unknown keys are errors)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from features.errors import ConfigError
from features.labels import LabelPolicy
from pipelines.config import as_folder, typed
from pipelines.gates.drift import DriftBounds
from pipelines.gates.model import ModelGatePolicy
from pipelines.gates.window import SUITE, WindowBounds
from pipelines.stream.config import KafkaSettings
from trainers.ranking.train import TrainConfig
from trainers.retrieval.train import RetrievalConfig

MODELS = ("ranker", "retriever")


@typed
@dataclass(frozen=True)
class WindowPolicy:
    """When a window closes: ``size`` records (by = "count") or ``size`` ms of event time
    (by = "event_time"); or, with at least ``min_records``, when the source has been idle for
    ``idle_s`` (caught up) or the window has been open ``max_wait_s`` (following a slow stream)."""

    by: Literal["count", "event_time"] = "count"
    size: int = 2_000
    min_records: int = 200
    idle_s: float = 2.0
    max_wait_s: float = 30.0
    holdout_fraction: float = 0.2  # the window's latest share (by time): what the model gate judges on
    epochs: int = 1  # passes over the window's training share

    def __post_init__(self) -> None:
        for name in ("size", "min_records", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"window.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.min_records > self.size and self.by == "count":
            raise ConfigError("window.min_records", f"{self.min_records} is more than window.size {self.size}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError("window.holdout_fraction", f"must be in (0, 1), got {self.holdout_fraction}")
        if self.idle_s <= 0 or self.max_wait_s <= 0:
            raise ConfigError("window", "idle_s and max_wait_s must be > 0 seconds")


@typed
@dataclass(frozen=True)
class RetrainConfig:
    """Where the loop reads, what it trains, how it gates and where it registers.

    Sources: ``kafka`` (the stream job's examples and accepted-record topics), or the folders
    the stream job's files mode writes (``examples_dir``, ``accepted_dir``; default
    WORKDIR/stream_examples and WORKDIR/stream_accepted). ``examples``: "topic" trains the ranker
    on the stream's labeled examples; "next_item" builds next-item examples (every behavior a
    positive, negatives drawn point in time) from the accepted records themselves, for datasets
    without impressions."""

    workdir: Path
    kafka: KafkaSettings | None = None
    examples_dir: Path | None = None
    accepted_dir: Path | None = None
    examples: Literal["topic", "next_item"] = "topic"
    labels: LabelPolicy = field(default_factory=lambda: LabelPolicy(kind="next_item", negatives=1))
    models: tuple[Literal["ranker", "retriever"], ...] = MODELS
    ranker: TrainConfig = field(default_factory=lambda: TrainConfig(model="tin", batch_size=128))
    retriever: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(batch_size=128))
    window: WindowPolicy = field(default_factory=WindowPolicy)
    data_suite: Path = SUITE  # the window's GX suite (JSON)
    bounds: WindowBounds = field(default_factory=WindowBounds)
    gate: ModelGatePolicy = field(default_factory=ModelGatePolicy)
    registry: Path | None = None  # the MLflow registry folder (default WORKDIR/registry)
    tracking_uri: str | None = None  # an MLflow tracking server instead (default $MLFLOW_TRACKING_URI)
    interest_users: Literal["window", "all"] = "all"  # whose interest vectors a promoted retriever publishes
    dedup_horizon_ms: int = 86_400_000  # examples are remembered this long (event time) to drop repeats
    keep_checkpoints: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        as_folder(self.workdir, "workdir")
        if not self.models:
            raise ConfigError("models", "name at least one of ranker, retriever")
        if self.kafka is None:
            for name, folder in (("examples_dir", "stream_examples"), ("accepted_dir", "stream_accepted")):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, self.workdir / folder)
        if self.registry is None:
            object.__setattr__(self, "registry", self.workdir / "registry")
        if self.dedup_horizon_ms < 0 or self.keep_checkpoints < 1:
            raise ConfigError("dedup_horizon_ms must be >= 0 and keep_checkpoints >= 1")
        if self.examples == "next_item" and self.labels.kind != "next_item":
            raise ConfigError("labels.kind", "must be next_item when examples = 'next_item'")

    @property
    def folder(self) -> Path:
        """Where the loop keeps its checkpoints, logs, quarantine and records."""
        return self.workdir / "retrain"


__all__ = ["DriftBounds", "MODELS", "ModelGatePolicy", "RetrainConfig", "WindowBounds", "WindowPolicy"]
