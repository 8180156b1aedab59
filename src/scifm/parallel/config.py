"""The parallel layout: how many ways the world is split, as one validated config block.

Four degrees multiply to the world size, outermost first, as the mesh dimensions
("pp", "dp_replicate", "dp_shard", "tp"):

- `pp`: pipeline stages (`torch.distributed.pipelining`); each stage holds whole layers.
- `dp_replicate` x `dp_shard`: data parallelism. `dp_shard` ranks form one FSDP2 shard group
  (parameters, gradients and optimizer state sharded); `dp_replicate` groups hold replicas
  (HSDP; with dp_shard = 1 it is plain replication, DDP).
- `tp`: tensor parallelism (DTensor plans for the Llama modules), innermost so its frequent
  collectives stay between neighbouring ranks (inside one node on a cluster).

The remaining fields choose how each strategy is applied (`scifm.parallel.parallelize`
applies them in the fixed order TP -> activation checkpointing -> compile -> FSDP2, and
pipeline splitting before all of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from scifm.config import Config
from scifm.core.errors import ScifmError

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")
DP_DIMS = ("dp_replicate", "dp_shard")

PipelineSchedule = Literal["GPipe", "1F1B", "Interleaved1F1B"]


@dataclass(frozen=True)
class Layout:
    """Resolved degrees of one world size; their product is the world size."""

    pp: int
    dp_replicate: int
    dp_shard: int
    tp: int

    @property
    def world_size(self) -> int:
        return self.pp * self.dp_replicate * self.dp_shard * self.tp

    @property
    def dp(self) -> int:
        """Data-parallel ranks: each reads its own slice of every global batch."""
        return self.dp_replicate * self.dp_shard

    def shape(self) -> tuple[int, int, int, int]:
        return (self.pp, self.dp_replicate, self.dp_shard, self.tp)

    def describe(self) -> str:
        return " x ".join(
            f"{name}={size}" for name, size in zip(MESH_DIMS, self.shape(), strict=True)
        )


class ParallelConfig(Config):
    dp_replicate: int = Field(default=1, gt=0)
    """Replica groups (DDP across groups; HSDP with dp_shard > 1)."""
    dp_shard: int = Field(default=-1, ge=-1)
    """Ranks sharing one FSDP2 shard group; -1: every rank the other degrees leave."""
    tp: int = Field(default=1, gt=0)
    """Tensor-parallel degree: query and key/value heads, FFN hidden units and vocabulary rows
    split over this many ranks (each must be divisible by it); logits come out whole."""
    sequence_parallel: bool = True
    """With tp > 1, also split the norms and the residual stream along the sequence (less
    activation memory; the sequence length must be divisible by tp). False: replicated."""
    pp: int = Field(default=1, gt=0)
    """Pipeline-parallel degree: stages of consecutive layers, one group of ranks each."""
    pp_schedule: PipelineSchedule = "1F1B"
    """Pipeline schedule; Interleaved1F1B places `pp_stages_per_rank` stages on each rank."""
    pp_stages_per_rank: int = Field(default=1, gt=0)
    """Virtual stages per pipeline rank (Interleaved1F1B needs >= 2; the others need 1)."""
    activation_checkpoint: Literal["none", "full", "selective"] = "none"
    """Recompute activations in backward, every block: "full" keeps only each block's input;
    "selective" keeps the outputs of the matmuls, attention and TP reduce-scatters and
    recomputes the element-wise ops (norms, RoPE, SiLU) and all-gathers."""
    compile: bool = False
    """torch.compile each transformer block in place (inductor; after TP and checkpointing,
    before FSDP2). The first step pays the compile time."""
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

    def layout(self, world_size: int) -> Layout:
        """The degrees for `world_size` ranks; ScifmError when they do not multiply to it."""
        fixed = self.pp * self.dp_replicate * self.tp
        if world_size % fixed:
            raise ScifmError(
                f"parallel degrees pp={self.pp} x dp_replicate={self.dp_replicate} x "
                f"tp={self.tp} = {fixed} do not divide the world size {world_size}; choose "
                f"degrees whose product is {world_size}"
            )
        shard = world_size // fixed if self.dp_shard == -1 else self.dp_shard
        layout = Layout(self.pp, self.dp_replicate, shard, self.tp)
        if layout.world_size != world_size:
            raise ScifmError(
                f"parallel degrees {layout.describe()} make {layout.world_size} ranks, but the "
                f"job has {world_size}; make the product equal the world size (dp_shard: -1 "
                "fills it)"
            )
        return layout

    def degrees(self, world_size: int) -> tuple[int, int]:
        """(dp_replicate, dp_shard) for `world_size` ranks."""
        layout = self.layout(world_size)
        return layout.dp_replicate, layout.dp_shard
