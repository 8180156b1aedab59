"""Per-rank memory of a training layout, estimated before anything is allocated.

For `scifm train --dry-run --world-size N`: parameters, gradients and AdamW state are fp32
and sharded over `dp_shard` (FSDP2; replicas hold full copies of their shard group's
shards); activations follow the usual per-layer count for a transformer block without
activation checkpointing (Korthikanti et al., 2022: ~34*s*b*h bytes at 2-byte precision,
doubled for fp32; the 5*a*s^2*b attention-score term is left out because SDPA's fused
kernels do not store the scores). An estimate, not a measurement: allocator
slack, communication buffers and the logits of the loss are not counted beyond the logits
tensor itself.
"""

from __future__ import annotations

from typing import Any

from scifm.model.config import ModelConfig
from scifm.model.flops import count_params
from scifm.parallel.config import ParallelConfig

GIB = 1 << 30


def memory_per_rank(model: ModelConfig, parallel: ParallelConfig, world_size: int,
                    micro_batch: int, seq_len: int) -> dict[str, Any]:  # fmt: skip
    layout = parallel.layout(world_size)
    replicate, shard = layout.dp_replicate, layout.dp_shard
    params = count_params(model)
    state_bytes = params * (4 + 4 + 8) / shard  # fp32 weights, grads, AdamW m and v
    width = 2 if parallel.param_dtype == "bfloat16" else 4
    per_layer = 34 * seq_len * micro_batch * model.dim * width / 2
    logits = micro_batch * seq_len * model.embedding_size * 4 * 2  # fp32 logits and grad
    activations = per_layer * model.num_layers + logits
    return {
        "layout": {"dp_replicate": replicate, "dp_shard": shard, "world_size": world_size},
        "params": params,
        "params_per_rank": params // shard,
        "state_gib": round(state_bytes / GIB, 2),
        "activations_gib": round(activations / GIB, 2),
        "total_gib": round((state_bytes + activations) / GIB, 2),
    }
