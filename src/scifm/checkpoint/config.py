"""When checkpoints are written, which are kept, and how (synchronous or in the background)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scifm.config import Config


class CheckpointConfig(Config):
    every: int | None = Field(default=None, gt=0)
    """Steps between checkpoints; a final checkpoint is always written. null: only the final."""
    keep_last: int | None = Field(default=3, gt=0)
    """Keep the newest k complete checkpoints; null keeps every one."""
    keep_every: int | None = Field(default=None, gt=0)
    """Also keep every checkpoint whose step is a multiple of this (permanent milestones)."""
    async_save: bool = False
    """Write shards in a background thread over a dedicated gloo group while training goes on;
    the checkpoint is renamed into place once every rank has finished writing."""
    save_on_signals: list[Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT"]] = Field(
        default_factory=lambda: ["SIGTERM", "SIGUSR1"]
    )
    """Signals (schedulers' preemption warnings) that make every rank save after the current
    step and exit with 128 + the signal number."""
