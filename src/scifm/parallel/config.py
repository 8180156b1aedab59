"""The parallel layout: how many ways the world is split, as one validated config block.

This release implements data parallelism on a 2-D device mesh ("dp_replicate", "dp_shard"):
`dp_shard` ranks hold one FSDP2 shard group each (parameters, gradients and optimizer state
sharded), `dp_replicate` such groups hold replicas (HSDP; with dp_shard = 1 it is plain data
parallelism, DDP). Tensor and pipeline parallelism extend the same mesh in a later step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from scifm.config import Config
from scifm.core.errors import ScifmError


class ParallelConfig(Config):
    dp_replicate: int = Field(default=1, gt=0)
    """Replica groups (DDP across groups; HSDP with dp_shard > 1)."""
    dp_shard: int = Field(default=-1, ge=-1)
    """Ranks sharing one FSDP2 shard group; -1: every rank the other degrees leave."""
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of parameters in forward/backward (FSDP2 mixed precision); masters stay fp32."""
    reduce_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of gradient reduction."""
    reshard_after_forward: bool = True
    """Free gathered parameters after forward (ZeRO-3); false keeps them (ZeRO-2-like)."""

    @field_validator("dp_shard")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be a positive degree, or -1 to fill the world size")
        return value

    def degrees(self, world_size: int) -> tuple[int, int]:
        """(dp_replicate, dp_shard) for `world_size` ranks; ScifmError when they do not fit."""
        if world_size % self.dp_replicate:
            raise ScifmError(
                f"parallel.dp_replicate={self.dp_replicate} does not divide the world size "
                f"{world_size}; choose degrees whose product is {world_size}"
            )
        shard = world_size // self.dp_replicate if self.dp_shard == -1 else self.dp_shard
        if self.dp_replicate * shard != world_size:
            raise ScifmError(
                f"parallel degrees dp_replicate={self.dp_replicate} x dp_shard={shard} = "
                f"{self.dp_replicate * shard} ranks, but the job has {world_size}; make the "
                "product equal the world size (dp_shard: -1 fills it)"
            )
        return self.dp_replicate, shard
