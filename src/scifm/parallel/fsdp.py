"""FSDP2 (`fully_shard`) over the data-parallel mesh, with a mixed-precision policy.

Each transformer block is one FSDP unit (its parameters are gathered just before it runs and
freed after), then the root takes the rest (embeddings, final norm, output). Master weights
stay fp32 whatever `param_dtype` is: pure bf16 masters froze RMSNorm weights in AuroraGPT's
runs. On a ("dp_replicate", "dp_shard") mesh this is HSDP; with dp_shard = 1 it is plain
replication (DDP: parameters whole, gradients all-reduced).
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from scifm.parallel.config import DP_DIMS, ParallelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def apply_fsdp(model: torch.nn.Module, cfg: ParallelConfig, mesh: DeviceMesh) -> None:
    policy = MixedPrecisionPolicy(
        param_dtype=DTYPES[cfg.param_dtype], reduce_dtype=DTYPES[cfg.reduce_dtype]
    )
    dp_mesh = mesh[DP_DIMS]
    blocks = list(getattr(model, "layers", {}).values())
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1  # the root gathers right after the last block anyway
        fully_shard(block, mesh=dp_mesh, mp_policy=policy,
                    reshard_after_forward=cfg.reshard_after_forward and not last)  # fmt: skip
    fully_shard(model, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=False)
