"""What every trainer sets up the same way: seed, threads, process group, sharded tables, optimizers.

    with sharded_session(lambda: Retriever(cfg, sparse_device=torch.device("meta")),
                         lambda model: model.ec.parameters(), cfg) as session:
        for batch in batches:
            loss = loss_of(session.model(batch.sparse))
            session.step(loss, step)             # mean over ranks, refused if not finite, backward, step

``cfg`` is any trainer config with ``seed``, ``threads``, ``sharding``, ``sparse_lr``,
``dense_lr`` and optionally ``device`` ("cpu": gloo; "cuda": NCCL, one GPU per rank). The model
is built on device "meta" inside the session (after the seed), its tables get a fused
RowWiseAdagrad inside backward (trainers.distributed), and it is wrapped in
DistributedModelParallel; everything else trains with Adam. The process group is the one
trainers.distributed.process_group finds or makes, and is destroyed on exit if made here.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from trainers.distributed import combined_optimizer, process_group, rank_and_world, shard, threads


@dataclass
class Session:
    """A sharded model and its optimizers on this rank."""

    model: DistributedModelParallel
    optimizer: CombinedOptimizer
    device: torch.device
    rank: int
    world: int
    sparse_lr: float
    dense_lr: float

    def step(self, loss: torch.Tensor, step: int) -> float:
        """One optimizer step on ``loss``; returns its mean over all ranks.

        A non-finite loss is refused before backward (the fused sparse optimizer updates the
        tables inside backward, so afterwards would be too late)."""
        mean = loss.detach().clone()
        if self.world > 1:
            dist.all_reduce(mean)
            mean /= self.world
        value = float(mean)
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss is {value} at step {step}; "
                                     f"lower sparse_lr={self.sparse_lr} or dense_lr={self.dense_lr}")
        loss.backward()
        self.optimizer.step()
        return value


@contextmanager
def sharded_session(build: Callable[[], nn.Module], tables: Callable[[nn.Module], Iterable[nn.Parameter]],
                    cfg) -> Iterator[Session]:
    """Seed, threads and process group; ``build()`` (tables on "meta"), the tables' fused optimizer on
    ``tables(model)``, DMP over the group, Adam on the rest. Yields the Session."""
    device_kind = getattr(cfg, "device", "cpu")
    torch.manual_seed(cfg.seed)
    with threads(cfg.threads), process_group("nccl" if device_kind == "cuda" else "gloo") as pg:
        rank, world = rank_and_world()
        device = torch.device("cuda", torch.cuda.current_device()) if device_kind == "cuda" else torch.device("cpu")
        model = build()
        apply_optimizer_in_backward(RowWiseAdagrad, tables(model), {"lr": cfg.sparse_lr})
        model = shard(model, pg, cfg.sharding, device)
        yield Session(model, combined_optimizer(model, cfg.dense_lr), device, rank, world, cfg.sparse_lr,
                      cfg.dense_lr)
