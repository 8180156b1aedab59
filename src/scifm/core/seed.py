"""Deterministic seeding: one seed for Python, numpy and torch, derived per rank when asked."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed every generator; `rank` offsets the seed so ranks differ yet stay reproducible."""
    derived = (seed + 1_000_003 * rank) % (2**32)
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)
    return derived


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (slower on GPU; a no-op cost on CPU)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
