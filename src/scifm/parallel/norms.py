"""The global gradient norm and clipping, for parameters spread over any layout.

Under FSDP2 and tensor parallelism gradients are DTensors; their norm reduces over their own
mesh. Under pipeline parallelism each stage holds different parameters, so the squared norms
of the stages are summed over the "pp" group as well. Every rank gets the same norm and
clips with it, so all ranks take the same optimizer step a single process would.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def _local_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of this pipeline stage's gradients (reduced over their DTensor meshes)."""
    if not grads:
        return torch.zeros((), dtype=torch.float32)
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float | None,
                   pp_group: dist.ProcessGroup | None = None) -> float:  # fmt: skip
    """Clip gradients in place to `max_norm` (None: only measure); returns the total norm."""
    params = [p for p in parameters if p.grad is not None]
    norm = _local_norm([p.grad for p in params]).float()
    if pp_group is not None and dist.get_world_size(pp_group) > 1:
        squared = norm.pow(2)
        dist.all_reduce(squared, group=pp_group)
        norm = squared.sqrt()
    if max_norm is not None and params:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm.to(params[0].device),
                                             foreach=True)  # fmt: skip
    return float(norm)
