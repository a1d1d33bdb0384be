"""TorchRec plumbing shared by every trainer: process group, sharding plan, DMP, unsharded weights.

Any model whose tables live in EmbeddingCollection / EmbeddingBagCollection
modules (built on device "meta") can be wrapped: ``shard`` plans every table
with one declared sharding type and returns a DistributedModelParallel on CPU
(gloo) or GPU (nccl). ``unsharded_state_dict`` gathers the tables back into
plain tensors, which load into the same model built unsharded for serving;
``load_unsharded`` copies such plain tensors back into a sharded model.

Data parallelism over N ranks (a torchrun job, or ``trainers.launch.spawn_local``):
every rank reads the same tables and draws the same global batch order from the
seed; ``rank_batches`` gives rank r the r-th of N equal slices of each global batch,
``eval_share`` / ``gather_scores`` split evaluation and give every rank all scores.
Gradients: DDP averages the dense ones over ranks, and TorchRec's all-to-all divides
the tables' by the world size (torchrec.distributed.comm_ops.GRADIENT_DIVISION, on by
default), so both are the gradient of the global batch's mean loss, as at world size 1.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor, distribute_tensor
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter


# What runs on CPU with gloo (ENVIRONMENT.md); data_parallel fails for EmbeddingCollection.
SHARDING_TYPES = (ShardingType.TABLE_WISE.value, ShardingType.ROW_WISE.value, ShardingType.COLUMN_WISE.value)


def tables(model: nn.Module) -> list:
    """Every EmbeddingConfig / EmbeddingBagConfig in the model's TorchRec collections."""
    out = []
    for module in model.modules():
        if isinstance(module, (EmbeddingCollection, EmbeddingBagCollection)):
            out.extend(module.embedding_configs() if isinstance(module, EmbeddingCollection)
                       else module.embedding_bag_configs())
    return out


def shard(model: nn.Module, pg: dist.ProcessGroup, sharding: str = "table_wise",
          device: torch.device | None = None) -> DistributedModelParallel:
    """Plan every table with ``sharding`` and wrap the model in DMP over ``pg``.

    Apply fused (in-backward) optimizers to the tables before calling this."""
    if sharding not in SHARDING_TYPES:
        raise ValueError(f"sharding must be one of {SHARDING_TYPES}, got {sharding!r}")
    device = device or torch.device("cpu")
    env = ShardingEnv.from_process_group(pg)
    sharders = [EmbeddingCollectionSharder(), EmbeddingBagCollectionSharder()]
    # column_wise: TorchRec's default column block (128 wide) leaves narrower tables whole; ask for
    # blocks of about embedding_dim / world_size (a multiple of 4) so each table is split over ranks.
    constraints = {t.name: ParameterConstraints(
        sharding_types=[sharding],
        min_partition=max(4, t.embedding_dim // env.world_size) if sharding == ShardingType.COLUMN_WISE.value else None)
        for t in tables(model)}
    local = torch.cuda.device_count() if device.type == "cuda" else env.world_size
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=env.world_size, local_world_size=min(local, env.world_size) or 1,
                          compute_device=device.type),
        constraints=constraints)
    plan = planner.collective_plan(model, sharders, pg)
    return DistributedModelParallel(model, env=env, device=device, plan=plan, sharders=sharders)


def combined_optimizer(model: DistributedModelParallel, dense_lr: float) -> CombinedOptimizer:
    """The tables' fused optimizer plus Adam on every parameter not updated in backward."""
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(model.named_parameters())),
                                  lambda params: torch.optim.Adam(params, lr=dense_lr))
    return CombinedOptimizer([model.fused_optimizer, dense])


def unsharded_state_dict(model: DistributedModelParallel) -> dict[str, torch.Tensor]:
    """The DMP state_dict with sharded tables gathered into plain CPU tensors.

    Collective: every rank must call it. Rank 0 gets the full tables; on other
    ranks the gathered entries are empty tensors."""
    out = {}
    rank = dist.get_rank() if dist.is_initialized() else 0
    # NCCL gathers between GPUs; the result is copied to CPU below.
    nccl = dist.is_initialized() and dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    with warnings.catch_warnings():  # torchrec 1.8's EmbeddingCollection state is ShardedTensor (deprecated)
        warnings.filterwarnings("ignore", message="Please use DTensor", category=FutureWarning)
        for key, value in model.state_dict().items():
            if isinstance(value, ShardedTensor):
                full = torch.empty(value.size(), dtype=value.dtype, device=device) if rank == 0 else None
                value.gather(dst=0, out=full)
                value = full if rank == 0 else torch.empty(0)
            elif isinstance(value, DTensor):
                value = value.full_tensor()
            out[key] = value.detach().to("cpu").clone()
    return out


@contextmanager
def process_group(backend: str = "gloo") -> Iterator[dist.ProcessGroup]:
    """Reuse the initialized default group (torchrun's launcher, a test's spawn); else join the group
    that torchrun-style env vars describe (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE); else create a
    group of size 1 (an in-process store, no port). A group made here is destroyed afterwards."""
    if dist.is_initialized():
        yield dist.group.WORLD
        return
    if all(k in os.environ for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")):
        if backend == "nccl":  # one GPU per rank on each node
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, init_method="env://")
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)  # one rank: no port
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def load_unsharded(model: DistributedModelParallel, state: dict[str, torch.Tensor]) -> None:
    """Copy plain full tensors (an unsharded_state_dict, or a plain model's state_dict) into the
    sharded model: each rank copies the slices its shards hold. Every rank passes the same state."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"state does not fit the model: missing {missing}, unexpected {unexpected}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Please use DTensor", category=FutureWarning)
        for key, target in own.items():
            full = state[key]
            if tuple(full.shape) != tuple(target.shape):
                raise ValueError(f"state[{key!r}] has shape {tuple(full.shape)}; the model's is {tuple(target.shape)}")
            if isinstance(target, ShardedTensor):
                for piece in target.local_shards():
                    rows = tuple(slice(o, o + n) for o, n in zip(piece.metadata.shard_offsets,
                                                                 piece.metadata.shard_sizes))
                    piece.tensor.detach().copy_(full[rows])
            elif isinstance(target, DTensor):
                target.to_local().detach().copy_(
                    distribute_tensor(full.to(target.device), target.device_mesh, target.placements).to_local())
            else:
                target.detach().copy_(full)
        model.load_state_dict(own)


def eval_share(n: int) -> np.ndarray:
    """Row indices this rank scores: a contiguous 1/N of n rows, padded (repeating a row) to the
    same length on every rank so that all ranks run the same number of sharded forwards."""
    rank, world = rank_and_world()
    m = -(-n // world)
    rows = np.arange(rank * m, min((rank + 1) * m, n))
    return np.concatenate([rows, np.full(m - len(rows), n - 1)]).astype(np.int64)


def gather_scores(scores: np.ndarray, n: int) -> np.ndarray:
    """Every rank's eval_share scores -> all n scores in row order, on every rank (collective)."""
    rank, world = rank_and_world()
    if world == 1:
        return scores[:n]
    local = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float64))
    if dist.get_backend() == "nccl":
        local = local.cuda()
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return torch.cat(parts).cpu().numpy()[:n]  # shares are contiguous; padding sits after row n - 1


def agree(error: str | None, device: torch.device | None = None) -> str | None:
    """Collective: None if no rank has an error; else this rank's error, or a note naming the
    first rank that had one. Lets every rank raise together instead of leaving the others
    waiting in a collective."""
    rank, world = rank_and_world()
    if world == 1:
        return error
    flag = torch.tensor([world if error is None else rank], device=device or torch.device("cpu"))
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    first = int(flag)
    if first == world:
        return None
    return error or f"rank {first} stopped with an error (see its log); this rank {rank} stops too"


def rank_and_world() -> tuple[int, int]:
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


@contextmanager
def threads(n: int) -> Iterator[None]:
    """torch intra-op threads set to n (0 leaves the current setting) for the block."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)

