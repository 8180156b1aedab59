"""Apply parallelism to a plain model from outside: build the mesh, then wrap in order.

The model (`scifm.model.llama.Llama`) knows nothing of ranks. `build_mesh` turns the
layout into a `DeviceMesh`; `parallelize` applies FSDP2 (`fully_shard`) to every
transformer block and then to the root, on the ("dp_replicate", "dp_shard") mesh, with a
mixed-precision policy that keeps fp32 master weights. With dp_shard = 1 the same call is
plain data parallelism: parameters replicated, gradients all-reduced.
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from scifm.parallel.config import ParallelConfig

DP_DIMS = ("dp_replicate", "dp_shard")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_mesh(cfg: ParallelConfig, world_size: int, device_type: str) -> DeviceMesh:
    replicate, shard = cfg.degrees(world_size)
    return init_device_mesh(device_type, (replicate, shard), mesh_dim_names=DP_DIMS)


def data_parallel_rank(mesh: DeviceMesh) -> tuple[int, int]:
    """(rank, size) of this process among the data-parallel ranks (replicate x shard)."""
    replicate, shard = mesh["dp_replicate"], mesh["dp_shard"]
    rank = replicate.get_local_rank() * shard.size() + shard.get_local_rank()
    return rank, replicate.size() * shard.size()


def parallelize(model: torch.nn.Module, cfg: ParallelConfig, mesh: DeviceMesh) -> torch.nn.Module:
    """FSDP2 on each block, then on the root; returns the same (now sharded) module."""
    policy = MixedPrecisionPolicy(
        param_dtype=_DTYPES[cfg.param_dtype], reduce_dtype=_DTYPES[cfg.reduce_dtype]
    )
    dp_mesh = mesh[DP_DIMS]
    blocks = list(getattr(model, "layers", {}).values())
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1  # the root gathers right after the last block anyway
        fully_shard(block, mesh=dp_mesh, mp_policy=policy,
                    reshard_after_forward=cfg.reshard_after_forward and not last)  # fmt: skip
    fully_shard(model, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=False)
    return model
