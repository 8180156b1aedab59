"""SophiaG: a clipped, diagonal-Hessian-preconditioned optimizer, and its Hessian estimator.

Sophia (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
Model Pre-training", arXiv:2305.14342, Algorithm 3) divides the gradient's EMA m by an EMA
h of the Hessian diagonal and clips each coordinate:

    m   <- beta1 * m + (1 - beta1) * g                          every step
    h   <- beta2 * h + (1 - beta2) * B * g_hat * g_hat          every k steps
    p   <- p * (1 - lr * weight_decay)                          (matrices only)
    p   <- p - lr * clip(m / max(rho * h, eps), -1, 1)

The Hessian diagonal comes from the Gauss-Newton-Bartlett (GNB) estimator: g_hat is the
gradient of the mean cross entropy of the model's logits against labels *sampled from the
model's own softmax* (no gradient through the sampling), over B token positions. The paper
writes the update as m / max(rho * B * h', eps) with h' the EMA of g_hat^2; here B is
folded into h when it is refreshed (`update_hessian(num_tokens=B)`), which is the same
number and keeps h meaningful on its own in a checkpoint.

What the trainer does (step counts from 0, before the optimizer step of that step):

    if optimizer.wants_hessian(step):                  # step % hessian_every == 0
        optimizer.zero_grad(set_to_none=True)
        for micro_batch in micro_batches:              # this rank's part of the global batch
            logits = model(micro_batch[:, :-1])
            (gnb_loss(logits) / len(micro_batches)).backward()
        optimizer.update_hessian(num_tokens=global_tokens)   # B: every rank's positions
        optimizer.zero_grad(set_to_none=True)
    ... the usual forward/backward of the real loss, clip, optimizer.step(), zero_grad ...

No gradient clipping on the GNB gradient, and its loss is not logged. `global_tokens` is the
number of positions the reduced gradient averages over: micro-batch size x sequence length
x micro-batches x data-parallel ranks (FSDP averages gradients over the data-parallel
ranks). Step 0 refreshes, so the first update is already preconditioned; with the paper's
k = 10, the extra forward/backward costs about 10% more compute.

State per parameter: `step`, `exp_avg` (m), `hessian` (h); m and h are shaped and placed
like the parameter (DTensors under FSDP2/TP), so checkpoints save and reshard them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from scifm.train.optim_base import PerParameterOptimizer


def gnb_loss(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean cross entropy of `logits` [..., V] against labels sampled from their softmax.

    The labels are drawn without gradient, so backward gives the GNB gradient g_hat.
    Sharded (tensor-parallel) logits are gathered first.
    """
    if isinstance(logits, DTensor):
        logits = logits.full_tensor()
    flat = logits.flatten(0, -2).float()
    with torch.no_grad():
        probs = flat.softmax(dim=-1)
        labels = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return F.cross_entropy(flat, labels)


class SophiaG(PerParameterOptimizer):
    """Sophia with the Gauss-Newton-Bartlett Hessian estimator; see the module docstring."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        eps: float = 1e-12,
        hessian_every: int = 10,
    ) -> None:
        if hessian_every < 1:
            raise ValueError(f"hessian_every must be at least 1, got {hessian_every}")
        defaults = dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, eps=eps)
        super().__init__(params, defaults)
        self.hessian_every = hessian_every

    def wants_hessian(self, step: int) -> bool:
        """Whether the trainer refreshes the Hessian before optimizer step `step` (from 0)."""
        return step % self.hessian_every == 0

    @torch.no_grad()
    def update_hessian(self, num_tokens: int) -> None:
        """Fold the current .grad (the GNB gradient over `num_tokens` positions) into h."""
        if num_tokens <= 0:
            raise ValueError(f"num_tokens must be positive, got {num_tokens}")
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for param in group["params"]:
                if param.grad is None:
                    continue
                hessian = self._state_of(param)["hessian"]
                hessian.mul_(beta2).addcmul_(param.grad, param.grad, value=(1 - beta2) * num_tokens)

    def update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        _sophia_update(param, grad, self._state_of(param), group)

    def _state_of(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param)
            state["hessian"] = torch.zeros_like(param)
        return state


def _sophia_update(param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
    state["step"] += 1
    exp_avg = state["exp_avg"]
    exp_avg.lerp_(grad, 1 - group["betas"][0])
    lr = group["lr"]
    param.mul_(1 - lr * group["weight_decay"])
    denominator = (state["hessian"] * group["rho"]).clamp_(min=group["eps"])
    param.add_((exp_avg / denominator).clamp_(-1.0, 1.0), alpha=-lr)
