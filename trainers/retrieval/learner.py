"""The multi-interest retriever as a learner that lives across windows (trainers.learner).

    retriever = RetrieverLearner(RetrievalConfig(model="comirec-sa"))
    retriever.load_state(champion_weights)         # or retriever.restore(checkpoint)
    losses = retriever.fit(window_behaviors, log, seed=7)
    interests = user_vectors(retriever.state_dict(), retriever.cfg, users, times, log)   # [U, K, d]
"""
from __future__ import annotations

import dataclasses

import pyarrow as pa

from features.pit import sort_log
from trainers.learner import Learner
from trainers.retrieval.batches import positives
from trainers.retrieval.train import RetrievalConfig, RetrievalLoss, build_retriever


class RetrieverLearner(Learner):
    """A Retriever under DMP (world size 1) whose tables and optimizer state carry over."""

    kind = "retriever"

    def __init__(self, cfg: RetrievalConfig):
        description = {"model_config": dataclasses.asdict(cfg.retriever_config()),
                       "train_config": dataclasses.asdict(cfg), "feature_spec": dataclasses.asdict(cfg.features),
                       "item_embedding_version": None}
        super().__init__(lambda: build_retriever(cfg), lambda m: m.ec.parameters(), cfg, description)

    def fit(self, examples: pa.Table, log: pa.Table, seed: int, epochs: int = 1) -> list[float]:
        """``epochs`` passes over the positive (label 1, or every) rows as next-item targets, each
        against its history strictly before it; returns the loss per step."""
        rows = positives(examples)
        if rows.num_rows < 2:  # in-batch negatives need two rows
            return []
        loss_of = RetrievalLoss(rows, self.cfg, frequency_of=log)
        batch = min(self.cfg.batch_size, rows.num_rows)
        steps = rows.num_rows // batch * epochs
        batches = loss_of.batches(rows, sort_log(log), seed)
        losses = []
        self.model.train()
        for step in range(1, steps + 1):
            self.session.optimizer.zero_grad()
            losses.append(self.session.step(loss_of(self.model, next(batches)), self.steps + step))
        self.steps += steps
        return losses
