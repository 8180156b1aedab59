"""Bad steps: non-finite or spiking loss and gradient norm, and what to do about them.

A step is bad when its loss or global gradient norm is NaN/inf, or (with `spike_zscore`)
lies more than that many standard deviations above the mean of the last `window` good
steps. Both values are already reduced over every rank, and the verdict is agreed once more
with a MAX all-reduce, so all ranks take the same branch. The policies:

- `skip`: drop the update (gradients zeroed); the batch counts as consumed; the run goes on.
- `stop`: end the run with exit code 4, leaving the last checkpoint as it was.
- `rollback`: reload the newest complete checkpoint and continue with the data *after*
  the offending batch, stepping over every batch since the checkpoint (as PaLM did for
  loss spikes). After `max_rollbacks` rollbacks the run stops instead.

Counts of each go to the metrics (`bad_steps`, `skipped_steps`, `rollbacks`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from pydantic import Field

from scifm.config import Config
from scifm.core.errors import ScifmError


class AnomalyConfig(Config):
    policy: Literal["skip", "stop", "rollback"] = "skip"
    """What a bad step does: skip its update, stop the run, or roll back to a checkpoint."""
    spike_zscore: float | None = Field(default=None, gt=0)
    """Also treat loss or grad norm this many standard deviations above the window's mean as
    bad (6 is a common choice); null checks for NaN/inf only."""
    window: int = Field(default=100, ge=2)
    """Good steps in the moving window the spike test compares against."""
    min_history: int = Field(default=20, ge=2)
    """Good steps needed before spikes are tested (early training moves fast)."""
    max_rollbacks: int = Field(default=3, ge=0)
    """rollback: rollbacks allowed in one process before the run stops instead."""


class TrainingStopped(ScifmError):
    """The anomaly policy ended the run (not bad input: a distinct exit code)."""

    exit_code = 4


class _Window:
    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def zscore(self, value: float) -> float:
        mean = sum(self.values) / len(self.values)
        var = sum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1)
        std = math.sqrt(var)
        return (value - mean) / std if std > 0 else 0.0


class AnomalyDetector:
    """Judges each step against the moving windows of good steps."""

    def __init__(self, cfg: AnomalyConfig) -> None:
        self.cfg = cfg
        self.windows = {"loss": _Window(cfg.window), "grad_norm": _Window(cfg.window)}

    def verdict(self, loss: float, grad_norm: float) -> str | None:
        """Why this step is bad, or None when it is fine (then it joins the windows)."""
        values = {"loss": loss, "grad_norm": grad_norm}
        for name, value in values.items():
            if not math.isfinite(value):
                return f"{name} is {value}"
        if self.cfg.spike_zscore is not None:
            for name, value in values.items():
                window = self.windows[name]
                if len(window.values) >= self.cfg.min_history:
                    z = window.zscore(value)
                    if z > self.cfg.spike_zscore:
                        return f"{name} {value:.4g} is a spike ({z:.1f} standard deviations)"
        for name, value in values.items():
            self.windows[name].values.append(value)
        return None
