"""The pretraining loss: next-token cross entropy, with an optional z-loss.

z-loss (PaLM, Chowdhery et al. 2022, section 5) adds `weight * mean(logsumexp(logits)^2)`,
which keeps the softmax normaliser near 1 and large-batch bf16 runs stable. The logged loss
is always the cross entropy alone, so runs with and without z-loss stay comparable: each
call records its cross entropy, and `pop_mean()` returns the mean of what was recorded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scifm.train.sophia import gnb_loss


class LanguageModelLoss:
    """Callable (logits [B, T, V], labels [B, T]) -> scalar loss to backpropagate."""

    def __init__(self, z_loss_weight: float = 0.0) -> None:
        self.z_loss_weight = z_loss_weight
        self._recorded: list[torch.Tensor] = []

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat = logits.flatten(0, 1).float()
        cross_entropy = F.cross_entropy(flat, labels.flatten())
        self._recorded.append(cross_entropy.detach())
        if not self.z_loss_weight:
            return cross_entropy
        log_z = torch.logsumexp(flat, dim=-1)
        return cross_entropy + self.z_loss_weight * log_z.pow(2).mean()

    def pop_mean(self) -> float | None:
        """Mean cross entropy of the calls since the last pop (None if there were none)."""
        if not self._recorded:
            return None
        mean = float(torch.stack(self._recorded).mean())
        self._recorded.clear()
        return mean


class HessianProbeLoss:
    """SophiaG's probe (`scifm.train.sophia.gnb_loss`) in the step runner's loss interface:
    the labels it is given are ignored, its value is not logged."""

    def __init__(self) -> None:
        self._calls = 0

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        return gnb_loss(logits)

    def pop_mean(self) -> float | None:
        calls, self._calls = self._calls, 0
        return 0.0 if calls else None
