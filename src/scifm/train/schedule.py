"""Learning-rate schedules: linear warmup, then cosine, warmup-stable-decay, or constant.

Each returns the multiplier of the peak learning rate for 0-based optimizer step `step`.
Warmup-stable-decay (WSD; Hu et al. 2024, MiniCPM) holds the peak after warmup and decays
only over the last `decay_fraction` of the run, so a run can be extended (or branched into
a decay at any checkpoint) without restarting the schedule; "1-sqrt" is the decay shape
Hägele et al. (2024) found to match cosine.
"""

from __future__ import annotations

import math
from typing import Literal

DecayShape = Literal["linear", "cosine", "1-sqrt"]


def _decayed(progress: float, min_ratio: float, shape: DecayShape) -> float:
    """From 1 at progress 0 to min_ratio at progress 1."""
    progress = min(1.0, max(0.0, progress))
    if shape == "linear":
        fall = progress
    elif shape == "cosine":
        fall = 0.5 * (1 - math.cos(math.pi * progress))
    else:
        fall = math.sqrt(progress)
    return min_ratio + (1 - min_ratio) * (1 - fall)


def _warmup(step: int, warmup_steps: int) -> float | None:
    return (step + 1) / warmup_steps if warmup_steps > 0 and step < warmup_steps else None


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    decay_steps = max(1, total_steps - warmup_steps)
    return _decayed((step - warmup_steps) / decay_steps, min_ratio, "cosine")


def warmup_stable_decay(step: int, total_steps: int, warmup_steps: int, min_ratio: float,
                        decay_fraction: float, shape: DecayShape = "1-sqrt") -> float:  # fmt: skip
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    decay_steps = max(1, round(total_steps * decay_fraction))
    decay_start = max(warmup_steps, total_steps - decay_steps)
    if step < decay_start:
        return 1.0
    return _decayed((step - decay_start + 1) / max(1, total_steps - decay_start), min_ratio, shape)


def lr_multiplier(step: int, total_steps: int, cfg) -> float:  # cfg: TrainConfig
    """The multiplier of `cfg.lr_schedule` at `step` of `total_steps`."""
    if cfg.lr_schedule == "wsd":
        return warmup_stable_decay(step, total_steps, cfg.warmup_steps, cfg.min_lr_ratio,
                                   cfg.decay_fraction, cfg.decay_shape)  # fmt: skip
    if cfg.lr_schedule == "constant":
        warm = _warmup(step, cfg.warmup_steps)
        return 1.0 if warm is None else warm
    return warmup_cosine(step, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
