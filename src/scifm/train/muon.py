"""Muon for the transformer blocks' weight matrices, AdamW for the rest, in one optimizer.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon) keeps SGD momentum per weight matrix and replaces the
update by its nearest semi-orthogonal matrix U V^T (from the SVD U S V^T of the momentum),
approximated by a few Newton-Schulz iterations. Each step then moves every direction of the
matrix by the same amount, whatever the gradient's spectrum. It is meant for the hidden
2-D matrices only; embeddings, the output projection and norm gains keep AdamW (Loshchilov
and Hutter 2019, "Decoupled Weight Decay Regularization"). `Muon` holds both kinds of
parameter groups (`use_muon` True or False) so the trainer and
`torch.distributed.checkpoint.state_dict.get_state_dict` see a single optimizer.

Newton-Schulz: the quintic iteration X <- a X + (b A + c A^2) X with A = X X^T and
(a, b, c) = (3.4445, -4.7750, 2.0315), from Jordan et al. These coefficients push the
singular values of the Frobenius-normalised input into roughly [0.7, 1.2] within 5 steps
(fast, not exactly 1, which Muon does not need); only directions below about 1/500 of the
Frobenius norm stay short, as in a rank-deficient gradient. It runs in float32 on CPU; on
accelerators in bfloat16 when `ns_bfloat16` is set.

Learning-rate scale of a (fan_out, fan_in) matrix, `scale_rule`:

- "match_adamw_rms" (default; Liu et al. 2025, "Muon is Scalable for LLM Training"): the
  orthogonal update has RMS 1/sqrt(max(fan_out, fan_in)); multiplying it by
  `update_rms * sqrt(max(fan_out, fan_in))` (update_rms 0.2) gives it the RMS of a typical
  AdamW update, so Muon matrices use AdamW's learning rate and weight decay unchanged.
- "spectral" (Jordan et al.): sqrt(max(1, fan_out / fan_in)); needs its own, larger
  learning rate (about 0.02, `OptimizerConfig.muon_lr`).

Weight decay is decoupled, `p *= 1 - lr * weight_decay`, for both kinds of groups.

Sharded parameters (FSDP2 on a "dp_shard" mesh, possibly with "tp"): each rank holds a
shard of the parameter, gradient and momentum (DTensors with the parameter's placements,
so checkpoints save and reshard them). Newton-Schulz needs the whole matrix, so
`orthogonalised_update` all-gathers the update (`DTensor.full_tensor()`), orthogonalises
it on every rank, and keeps this rank's shard (`distribute_tensor(..., src_data_rank=None)`
slices locally, no communication). Cost per step: one all-gather of every block matrix
(the bytes of an FSDP forward all-gather, in float32) and the Newton-Schulz flops of the
whole matrix on every rank (about 5 * (4 m^2 n + 2 m^3) for an m x n matrix, m <= n),
repeated world-size times. A smarter variant would give each matrix to one owner rank
(round-robin), gather it there only, orthogonalise, and scatter the shards back (as in
Moonlight's distributed Muon), dividing the compute by the number of ranks; it would
replace `orthogonalised_update` alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from scifm.train.optim_base import PerParameterOptimizer

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

ScaleRule = Literal["match_adamw_rms", "spectral"]


def newton_schulz(
    matrix: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32, eps: float = 1e-7
) -> torch.Tensor:
    """Approximately U V^T for `matrix` = U S V^T (singular values near 1), same dtype back."""
    if matrix.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(dtype)
    wide = x.shape[0] <= x.shape[1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(matrix.dtype)


def lr_scale(shape: torch.Size, rule: ScaleRule, update_rms: float) -> float:
    """Factor on the learning rate of a (fan_out, fan_in) matrix; see the module docstring."""
    fan_out, fan_in = shape[0], math.prod(shape[1:])
    if rule == "match_adamw_rms":
        return update_rms * math.sqrt(max(fan_out, fan_in))
    if rule == "spectral":
        return math.sqrt(max(1.0, fan_out / fan_in))
    raise ValueError(f"unknown Muon scale rule {rule!r}; use 'match_adamw_rms' or 'spectral'")


def orthogonalised_update(update: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Newton-Schulz of the whole matrix; a DTensor comes back with its own placements."""
    if not isinstance(update, DTensor):
        return newton_schulz(update, steps, dtype)
    full = newton_schulz(update.full_tensor(), steps, dtype)
    # every rank computed the same full matrix: keep the local shard, no communication
    return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)


class Muon(PerParameterOptimizer):
    """Muon on groups with `use_muon=True` (2-D matrices), AdamW on the other groups.

    Every group carries `lr` (set by the trainer each step) and `weight_decay`. Muon groups
    use `momentum`, `nesterov`, `ns_steps`, `scale_rule`, `update_rms`; AdamW groups use
    `betas` and `eps`. State: `momentum_buffer` (Muon) or `step`, `exp_avg`, `exp_avg_sq`
    (AdamW), each shaped and placed like its parameter.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        scale_rule: ScaleRule = "match_adamw_rms",
        update_rms: float = 0.2,
        ns_bfloat16: bool = True,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, use_muon=False, momentum=momentum,
                        nesterov=nesterov, ns_steps=ns_steps, scale_rule=scale_rule,
                        update_rms=update_rms, ns_bfloat16=ns_bfloat16, betas=betas,
                        eps=eps)  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon groups take 2-D weight matrices only")

    def update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        rule = _muon_update if group["use_muon"] else _adamw_update
        rule(param, grad, self.state[param], group)


def _ns_dtype(param: torch.Tensor, group: dict[str, Any]) -> torch.dtype:
    on_accelerator = param.device.type not in ("cpu", "meta")
    return torch.bfloat16 if group["ns_bfloat16"] and on_accelerator else torch.float32


def _muon_update(param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(param)
    buffer, momentum = state["momentum_buffer"], group["momentum"]
    buffer.mul_(momentum).add_(grad)
    direction = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
    orthogonal = orthogonalised_update(direction, group["ns_steps"], _ns_dtype(param, group))
    lr = group["lr"]
    scale = lr_scale(param.shape, group["scale_rule"], group["update_rms"])
    param.mul_(1 - lr * group["weight_decay"])
    param.add_(orthogonal, alpha=-lr * scale)


def _adamw_update(param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
    """Decoupled-weight-decay Adam, the same arithmetic as torch.optim.AdamW."""
    if "step" not in state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(param)
        state["exp_avg_sq"] = torch.zeros_like(param)
    state["step"] += 1
    step = float(state["step"])
    beta1, beta2 = group["betas"]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    lr = group["lr"]
    param.mul_(1 - lr * group["weight_decay"])
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
    param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
