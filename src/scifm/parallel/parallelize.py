"""Apply parallelism to a plain model from outside, one function per strategy, in order.

The model (`scifm.model.llama.Llama`) knows nothing of ranks. `parallelize` applies, to the
model (or to each pipeline stage's part of it): tensor + sequence parallelism ->
activation checkpointing -> torch.compile -> FSDP2. The order matters: FSDP2 must wrap
modules whose parameters are already DTensors on the "tp" mesh, and compile must see the
checkpointed blocks. Without a mesh (a single process) only checkpointing and compile apply.

FSDP2 is applied even when the data-parallel degree is 1 (tensor parallelism alone): on a
size-1 mesh it reproduces the single-process numbers (checked in the gloo tests), and it is
what applies `param_dtype` / `reduce_dtype` mixed precision, which would otherwise be
silently ignored.
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh

from scifm.parallel.ac import apply_ac
from scifm.parallel.compile import apply_compile
from scifm.parallel.config import ParallelConfig
from scifm.parallel.fsdp import apply_fsdp
from scifm.parallel.mesh import build_mesh, data_parallel_rank, mesh_layout
from scifm.parallel.tp import apply_tp

__all__ = ["build_mesh", "data_parallel_rank", "parallelize"]


def parallelize(
    model: torch.nn.Module, cfg: ParallelConfig, mesh: DeviceMesh | None = None
) -> torch.nn.Module:
    """Shard `model` in place for `mesh` (None: one process); returns the same module."""
    layout = cfg.layout(1) if mesh is None else mesh_layout(mesh)
    if mesh is not None and layout.tp > 1:
        apply_tp(model, mesh["tp"], cfg.sequence_parallel)
    apply_ac(model, cfg.activation_checkpoint)
    if cfg.compile:
        apply_compile(model)
    if mesh is not None:
        apply_fsdp(model, cfg, mesh)
    return model
