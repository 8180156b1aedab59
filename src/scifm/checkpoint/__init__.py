"""Checkpoint stage: sharded, atomic, resumable checkpoints with torch.distributed.checkpoint."""

from scifm.checkpoint.dcp import (
    CheckpointInfo,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CheckpointInfo",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]
