"""The demo's settings: one typed config over every stage's (unknown keys are errors)."""
from __future__ import annotations

from dataclasses import dataclass, field

from features.labels import LabelPolicy
from features.sequence import SequencePolicy
from pipelines.config import typed
from pipelines.retrain.config import WindowPolicy
from pipelines.sources.synthetic import SyntheticConfig
from trainers.ranking.train import TrainConfig
from trainers.retrieval.train import RetrievalConfig


@typed
@dataclass(frozen=True)
class DemoConfig:
    workdir: str = "runs/demo"
    dataset: str = "synthetic"
    path: str | None = None
    synthetic: SyntheticConfig = field(default_factory=lambda: SyntheticConfig(bad_fraction=0.001))
    sequence: SequencePolicy = field(default_factory=lambda: SequencePolicy(max_len=200))  # lifelong
    recent_len: int = 50
    category_len: int = 50
    labels: LabelPolicy = field(default_factory=LabelPolicy)
    # The ranker reads the embedded item vectors: a side feature, and a MUSE-style search over the history
    # (docs/training.md compares the choices on the demo's data).
    train: TrainConfig = field(default_factory=lambda: TrainConfig(model="din", item_vectors=True, search="cosine",
                                                                   search_k=20))
    retriever: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(steps=300, batch_size=128))
    stream_fraction: float = 0.1  # the latest share of time, replayed through the stream job
    eval_fraction: float = 0.2  # the latest share of backfilled examples, held out for evaluation
    min_auc: float = 0.55
    min_lift: float = 0.0  # over the popularity baseline
    show_users: int = 3
    embed: bool = True  # embed the catalog (text encoder) and serve item_content vectors
    retrain: bool = True  # continuous training over the stream's topics after the stream stage
    retrain_window: WindowPolicy = field(default_factory=lambda: WindowPolicy(size=2_000, min_records=200))
    poison_window: bool = True  # then a window of all-positive labels, which the data gate must block

    def __post_init__(self) -> None:
        if self.train.item_vectors and not self.embed:
            raise ValueError("train.item_vectors needs the embed stage: set embed = true or train.item_vectors = false")
        for name in ("stream_fraction", "eval_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def caps(cfg: DemoConfig) -> dict[str, int]:
    """Each sequence table's length cap, for its gate."""
    return {"user_sequence": cfg.sequence.max_len, "user_recent": cfg.recent_len,
            "user_category_sequence": cfg.category_len}
