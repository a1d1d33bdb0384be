"""One window, one model line: evaluate the champion first, train a candidate, gate it.

    line = ModelLine.open("ranker", cfg, registry, workdir)   # the champion's weights, or a fresh model
    result = line.window(examples, behaviors, log, seed)      # online metrics, candidate, gate verdict
    line.keep() or line.revert(checkpoint)                    # promoted: keep training from it; else back

Evaluate-then-train: the model as it stands scores the whole window before it learns from it
(the honest online metric). The window is then cut by row quantile of time: the candidate trains
on the earlier part and the gate compares it with the champion on the later (held-out) part.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from features.labels import EXAMPLE_SCHEMA
from pipelines.config import from_dict, to_dict
from pipelines.gates.model import ModelGatePolicy, ranker_gate, retriever_gate
from pipelines.gates.result import GateResult
from pipelines.retrain.evaluate import Log, ranker_metrics, ranker_scores, retriever_metrics
from trainers.item_vectors import META_KEY, load_item_vectors
from trainers.ranking.train import TrainConfig
from trainers.retrieval.train import RetrievalConfig


@dataclass
class WindowResult:
    """What one model line did with one window."""

    kind: str
    online: dict  # the model as it stood, on the whole window (evaluate-then-train)
    trained_rows: int = 0
    holdout_rows: int = 0
    losses: list = field(default_factory=list)
    gate: GateResult | None = None
    figures: dict = field(default_factory=dict)
    candidate: dict | None = None  # the candidate's unsharded weights


class ModelLine:
    """A learner (trainers.learner) and the registry version its weights descend from."""

    def __init__(self, kind: str, cfg, learner, champion: str | None, vectors=None):
        self.kind, self.cfg, self.learner, self.champion, self.vectors = kind, cfg, learner, champion, vectors

    @classmethod
    def open(cls, kind: str, default_cfg, registry, workdir: Path, saved: dict | None = None) -> "ModelLine":
        """The line for ``kind``: from a loop checkpoint's ``saved`` {config, champion, vectors} (the
        caller restores its weights), else from the registry's champion (its sharded checkpoint with
        the optimizer state where the version has one, else its weights), else a fresh model."""
        champion, state, vectors_version, folder = None, None, None, None
        if saved is not None:
            cfg = from_dict(type(default_cfg), saved["config"])
            champion, vectors_version = saved.get("champion"), saved.get("vectors")
        elif registry.champion(kind) is not None:
            folder = registry.artifacts(kind, registry.champion(kind))
            state, meta = registry.load(kind)
            cfg = from_dict(type(default_cfg), {**meta["config"], "steps": 1})
            champion, vectors_version = meta["version"], meta.get(META_KEY)
        else:
            cfg = default_cfg
        vectors = load_item_vectors(workdir, vectors_version) if getattr(cfg, "item_vectors", False) else None
        learner = _learner(kind, cfg, vectors)
        if folder is not None and (folder / "checkpoint").is_dir():
            learner.restore(folder / "checkpoint")  # weights and optimizer state: fine-tuning goes on smoothly
        elif state is not None:
            learner.load_state(state)  # weights only: the optimizer starts fresh
        return cls(kind, cfg, learner, champion, vectors)

    def saved(self) -> dict:
        """What a loop checkpoint keeps to reopen this line."""
        return {"config": to_dict(self.cfg), "champion": self.champion,
                "vectors": None if self.vectors is None else self.vectors.version}

    def meta(self) -> dict:
        return {} if self.vectors is None else {META_KEY: self.vectors.version}

    def window(self, examples: pa.Table, behaviors: pa.Table, log: Log, holdout: float, policy: ModelGatePolicy,
               seed: int, epochs: int) -> WindowResult:
        """Evaluate the line's model on the window, train a candidate on its earlier part, gate it."""
        champion_state = self.learner.state_dict() if self.champion is not None else None  # None: popularity
        if self.kind == "ranker":
            return self._ranker(examples, log, holdout, policy, seed, epochs, champion_state)
        return self._retriever(behaviors, log, holdout, policy, seed, epochs, champion_state)

    def _ranker(self, examples, log, holdout, policy, seed, epochs, served) -> WindowResult:
        online = ranker_metrics(examples, ranker_scores(served, self.cfg, examples, log, self.vectors, self.meta()))
        train, held = split_by_time(examples, holdout)
        out = WindowResult("ranker", online, train.num_rows, held.num_rows)
        out.losses = self.learner.fit(_examples(train), log.table, seed, epochs)
        out.candidate = self.learner.state_dict()
        champion = ranker_scores(served, self.cfg, held, log, self.vectors, self.meta())
        candidate = ranker_scores(out.candidate, self.cfg, held, log, self.vectors, self.meta())
        users, times = held.column("user_id").to_numpy(), held.column("timestamp").to_numpy()
        out.gate, out.figures = ranker_gate(users, held.column("label").to_numpy(), log.history_lengths(users, times),
                                            log.item_counts(held.column("item_id").to_numpy(), times),
                                            champion, candidate, out.candidate, policy)
        return out

    def _retriever(self, behaviors, log, holdout, policy, seed, epochs, champion_state) -> WindowResult:
        k = policy.k
        online = retriever_metrics(champion_state, self.cfg, behaviors, log, k)
        train, held = split_by_time(behaviors, holdout)
        out = WindowResult("retriever", online, train.num_rows, held.num_rows)
        out.losses = self.learner.fit(train, log.table, seed, epochs)
        out.candidate = self.learner.state_dict()
        champion = retriever_metrics(champion_state, self.cfg, held, log, k)
        candidate = retriever_metrics(out.candidate, self.cfg, held, log, k)
        if held.num_rows == 0:
            out.gate = GateResult("model gate [retriever]", False, ["the held-out slice is empty"], 1, ["holdout_empty"])
        else:
            out.gate, out.figures = retriever_gate(champion, candidate, out.candidate, policy)
        return out

    def close(self) -> None:
        self.learner.close()


def _learner(kind: str, cfg, vectors):
    if kind == "ranker":
        from trainers.ranking.learner import RankerLearner

        return RankerLearner(dataclasses.replace(cfg, steps=1), vectors)
    from trainers.retrieval.learner import RetrieverLearner

    return RetrieverLearner(cfg)


def split_by_time(table: pa.Table, holdout: float) -> tuple[pa.Table, pa.Table]:
    """(earlier rows, the latest ``holdout`` share of rows by time); ties at the cut go to the later part."""
    if table.num_rows == 0:
        return table, table
    table = table.sort_by([("timestamp", "ascending")])
    ts = table.column("timestamp").to_numpy()
    cut = ts[min(int(len(ts) * (1 - holdout)), len(ts) - 1)]
    return table.filter(pc.less(table.column("timestamp"), cut)), \
        table.filter(pc.greater_equal(table.column("timestamp"), cut))


def _examples(table: pa.Table) -> pa.Table:
    return table.select(EXAMPLE_SCHEMA.names).cast(EXAMPLE_SCHEMA)


DEFAULT_CONFIGS = {"ranker": TrainConfig, "retriever": RetrievalConfig}
__all__ = ["DEFAULT_CONFIGS", "ModelLine", "WindowResult", "split_by_time"]
