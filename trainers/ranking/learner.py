"""The ranker as a learner that lives across windows (trainers.learner): fit a window, score one.

    ranker = RankerLearner(TrainConfig(model="tin", batch_size=128), vectors=None)
    ranker.load_state(champion_weights)          # or ranker.restore(checkpoint)
    scores = ranker.score(window, log)           # evaluate first: the honest online metric
    losses = ranker.fit(window, log, seed=7)     # then train on it
    ranker.save(path); ranker.close()
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import torch

from features.pit import sort_log
from trainers.distributed import eval_share, gather_scores, rank_and_world
from trainers.item_vectors import ItemVectors
from trainers.learner import Learner
from trainers.ranking.batches import eval_batches, rank_batches
from trainers.ranking.model import SequenceRanker
from trainers.ranking.train import TrainConfig, check_vectors, fit_steps, score_batches, vectors_for


class RankerLearner(Learner):
    """A SequenceRanker under DMP whose tables and optimizer state carry over from window to window."""

    kind = "ranker"

    def __init__(self, cfg: TrainConfig, vectors: ItemVectors | None = None):
        self.vectors = vectors_for(cfg, vectors)
        check_vectors(self.vectors)
        dim = self.vectors.dim if self.vectors else 0

        def build() -> SequenceRanker:
            return SequenceRanker(cfg.model_config(dim), sparse_device=torch.device("meta"),
                                  item_vectors=None if self.vectors is None else self.vectors.table)

        description = {"model_config": dataclasses.asdict(cfg.model_config(dim)),
                       "train_config": dataclasses.asdict(cfg), "feature_spec": dataclasses.asdict(cfg.features),
                       "item_embedding_version": None if self.vectors is None else self.vectors.version}
        super().__init__(build, lambda m: m.sparse_arch.parameters(), cfg, description)

    def fit(self, examples: pa.Table, log: pa.Table, seed: int, epochs: int = 1) -> list[float]:
        """``epochs`` shuffled passes over the examples (the last partial batch of each dropped; a
        window smaller than one batch is one batch); returns the loss per step."""
        _, world = rank_and_world()
        batch = max(world, min(self.cfg.batch_size, examples.num_rows) // world * world)
        if examples.num_rows < batch:
            return []
        steps = examples.num_rows // batch * epochs
        cfg = dataclasses.replace(self.cfg, batch_size=batch, steps=steps, progress_every=max(steps, 1))
        batches = rank_batches(examples, sort_log(log), cfg.features, batch, seed, 0, self.vectors)
        losses, _ = fit_steps(self.session, batches, cfg, None)
        self.steps += steps
        return losses

    def score(self, examples: pa.Table, log: pa.Table) -> np.ndarray:
        """Click probabilities of the examples, in table order, from the model as it is now."""
        if examples.num_rows == 0:
            return np.zeros(0)
        share = examples.take(pa.array(eval_share(examples.num_rows)))
        batches = eval_batches(share, sort_log(log), self.cfg.features, self.cfg.eval_batch_size, self.vectors)
        return gather_scores(score_batches(self.model, batches, self.session.device), examples.num_rows)
