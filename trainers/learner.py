"""A model that keeps learning: its sharded tables and optimizer stay in memory from window to window.

The continuous-training loop (pipelines/retrain) holds one learner per model kind for its
whole life: it loads the champion's weights or a checkpoint once, then for every window
scores (evaluate-then-train), fits, and saves a DCP checkpoint holding the weights and the
optimizer state (the fused RowWiseAdagrad momentum and Adam's moments), from which a
restarted loop resumes exactly. Subclasses (trainers.ranking.learner, trainers.retrieval.learner)
add fit() and their own scoring.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import torch

from trainers import checkpoint
from trainers.distributed import load_unsharded, unsharded_state_dict
from trainers.session import Session, sharded_session


class Learner:
    """One sharded model and its optimizers, open until close()."""

    kind = "model"

    def __init__(self, build, tables, cfg, description: dict):
        self.cfg, self.description = cfg, description
        self._stack = ExitStack()
        self.session: Session = self._stack.enter_context(sharded_session(build, tables, cfg))
        self.steps = 0  # optimizer steps taken in this learner's lineage (kept in checkpoints)
        for _, opt in self.session.optimizer.optimizers:  # torch creates optimizer state lazily; a checkpoint
            if not opt.state:                             # saved before the first step must hold it too
                opt.init_state()

    @property
    def model(self):
        return self.session.model

    def close(self) -> None:
        self._stack.close()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Unsharded CPU weights (rank 0; empty tensors elsewhere)."""
        return unsharded_state_dict(self.model)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Start from unsharded weights (a registered champion) with the optimizer state as it is."""
        load_unsharded(self.model, state)

    def save(self, path: str | Path) -> Path:
        """A DCP checkpoint of weights and optimizer state at ``path`` (replaced once complete)."""
        return checkpoint.save_checkpoint(path, self.model, self.session.optimizer, self.description, self.steps,
                                          max(self.steps, 1))

    def restore(self, path: str | Path) -> None:
        """Weights and optimizer state from a checkpoint this learner's config made (else CheckpointMismatch)."""
        meta = checkpoint.load_checkpoint(path, self.model, self.session.optimizer, self.description)
        self.steps = int(meta["position"]["step"])
