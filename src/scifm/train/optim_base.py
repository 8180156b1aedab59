"""The step loop shared by scifm's own optimizers: each parameter with a gradient, on its own.

Muon and SophiaG update every parameter independently (Muon's matrices are gathered whole
inside their update), so their `step` is this loop and each supplies only `update`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class PerParameterOptimizer(torch.optim.Optimizer):
    def update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self.update(param, param.grad, group)
        return loss
