"""Checkpoint stage: sharded, atomic, resumable checkpoints with torch.distributed.checkpoint."""

from scifm.checkpoint.config import CheckpointConfig
from scifm.checkpoint.dcp import (
    Checkpointer,
    load_checkpoint,
    load_rank_state,
    save_checkpoint,
)
from scifm.checkpoint.layout import (
    BrokenCheckpoint,
    CheckpointInfo,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    scan_checkpoints,
)

__all__ = [
    "BrokenCheckpoint",
    "CheckpointConfig",
    "CheckpointInfo",
    "Checkpointer",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_rank_state",
    "prune_checkpoints",
    "save_checkpoint",
    "scan_checkpoints",
]
