"""TorchRec plumbing shared by every trainer: process group, sharding plan, DMP, unsharded weights.

Any model whose tables live in EmbeddingCollection / EmbeddingBagCollection
modules (built on device "meta") can be wrapped: ``shard`` plans every table
with one declared sharding type and returns a DistributedModelParallel on CPU
(gloo) or GPU (nccl). ``unsharded_state_dict`` gathers the tables back into
plain tensors, which load into the same model built unsharded for serving.
"""
from __future__ import annotations

import socket
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor
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
    constraints = {t.name: ParameterConstraints(sharding_types=[sharding]) for t in tables(model)}
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
    with warnings.catch_warnings():  # torchrec 1.8's EmbeddingCollection state is ShardedTensor (deprecated)
        warnings.filterwarnings("ignore", message="Please use DTensor", category=FutureWarning)
        for key, value in model.state_dict().items():
            if isinstance(value, ShardedTensor):
                full = torch.empty(value.size(), dtype=value.dtype) if rank == 0 else None
                value.gather(dst=0, out=full)
                value = full if rank == 0 else torch.empty(0)
            elif isinstance(value, DTensor):
                value = value.full_tensor()
            out[key] = value.detach().to("cpu").clone()
    return out


@contextmanager
def process_group(backend: str = "gloo") -> Iterator[dist.ProcessGroup]:
    """Reuse the initialized default group (torchrun, or a test's spawn), or create a gloo group of
    size 1 on a free 127.0.0.1 port and destroy it afterwards."""
    if dist.is_initialized():
        yield dist.group.WORLD
        return
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
