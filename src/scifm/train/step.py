"""Forward and backward of one optimizer step's micro-batches: the seam pipelining replaces.

A runner takes this rank's micro-batches of one optimizer step (token ids [micro, seq+1]),
accumulates their gradients into the parameters and returns their mean loss, on every rank.
`LocalRunner` runs the whole model micro-batch by micro-batch (gradient accumulation); the
pipeline runner (`scifm.parallel.pp`) feeds the same micro-batches through a pipeline
schedule across stages. Both scale each micro-batch's loss by 1 / len(micro_batches), so
the gradient is the mean over the step's samples either way.
"""

from __future__ import annotations

from typing import Protocol

import torch

from scifm.train.loss import LanguageModelLoss


class StepRunner(Protocol):
    def run(self, micro_batches: list[torch.Tensor], loss_fn: LanguageModelLoss) -> float: ...


class LocalRunner:
    """Gradient accumulation over micro-batches on one model (any data/tensor parallelism)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def run(self, micro_batches: list[torch.Tensor], loss_fn: LanguageModelLoss) -> float:
        scale = 1.0 / len(micro_batches)
        for batch in micro_batches:
            loss = loss_fn(self.model(batch[:, :-1]), batch[:, 1:])
            (loss * scale).backward()
        mean = loss_fn.pop_mean()
        assert mean is not None  # one record per micro-batch
        return mean
