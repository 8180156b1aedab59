"""Per-rank memory of a training layout, estimated before anything is allocated.

For `scifm train --dry-run --world-size N`. An estimate, not a measurement: allocator slack,
communication buffers and temporary all-gathered FSDP units are not counted.

- **State**: parameters, gradients and AdamW's two moments in fp32 (16 bytes per
  parameter). The pipeline stage with the most parameters sets the figure (the first holds
  the embedding, the last the output projection); tensor parallelism splits the block
  matrices, the embedding and the output over `tp` (norm weights are replicated); FSDP2
  shards what is left over `dp_shard`.
- **Activations** per layer and micro-batch follow Korthikanti et al. (2022): 34*s*b*h bytes
  at 2-byte precision (doubled in fp32) without tensor parallelism; with it, (10 + 24/t)*s*b*h,
  or 34*s*b*h/t with sequence parallelism. The 5*a*s^2*b attention-score term is left out
  because SDPA's fused kernels do not store the scores. Full activation checkpointing keeps
  only each block's input (2*s*b*h at 2 bytes, /t with sequence parallelism) plus one
  block's working set; "selective" is
  counted as no checkpointing (an upper bound). A pipeline stage holds its layers'
  activations for every micro-batch in flight: `pp` of them on the first stage under 1F1B
  and interleaved 1F1B, all of the step's micro-batches under GPipe.
- **Logits**: fp32 logits and their gradient for one micro-batch, on the last stage.
"""

from __future__ import annotations

from typing import Any

from scifm.model.config import ModelConfig
from scifm.model.flops import count_params, layer_params
from scifm.parallel.config import MESH_DIMS, Layout, ParallelConfig

GIB = 1 << 30
STATE_BYTES_PER_PARAM = 4 + 4 + 8  # fp32 weight, gradient, AdamW m and v


def _stage_params(model: ModelConfig, layout: Layout, stages: int) -> int:
    """Parameters of the largest pipeline stage, per tensor-parallel rank."""
    layers = -(-model.num_layers // stages)
    vocab = model.embedding_size * model.dim
    blocks = layers * (layer_params(model) - 2 * model.dim) // layout.tp + layers * 2 * model.dim
    output = 0 if model.tie_embeddings else vocab
    if stages == 1:
        return blocks + (vocab + output) // layout.tp + model.dim
    return blocks + max(vocab, output + model.dim) // layout.tp


def _activations_per_layer(model: ModelConfig, cfg: ParallelConfig, layout: Layout,
                           micro_batch: int, seq_len: int) -> float:  # fmt: skip
    width = 2 if cfg.param_dtype == "bfloat16" else 4
    sbh = seq_len * micro_batch * model.dim
    if cfg.activation_checkpoint == "full":  # the block input, split along the sequence by SP
        return 2 * sbh * width / 2 / (layout.tp if cfg.sequence_parallel else 1)
    if layout.tp == 1:
        return 34 * sbh * width / 2
    if cfg.sequence_parallel:
        return 34 * sbh / layout.tp * width / 2
    return (10 + 24 / layout.tp) * sbh * width / 2


def memory_per_rank(model: ModelConfig, parallel: ParallelConfig, world_size: int,
                    micro_batch: int, seq_len: int,
                    micro_batches_per_step: int = 1) -> dict[str, Any]:  # fmt: skip
    layout = parallel.layout(world_size)
    stages = layout.pp * parallel.pp_stages_per_rank
    per_rank = _stage_params(model, layout, stages) * parallel.pp_stages_per_rank
    per_rank = -(-per_rank // layout.dp_shard)
    state_bytes = per_rank * STATE_BYTES_PER_PARAM
    in_flight = 1
    if layout.pp > 1:
        in_flight = micro_batches_per_step if parallel.pp_schedule == "GPipe" else layout.pp
    layers_here = -(-model.num_layers // stages) * parallel.pp_stages_per_rank
    per_layer = _activations_per_layer(model, parallel, layout, micro_batch, seq_len)
    activations = per_layer * layers_here * in_flight
    if parallel.activation_checkpoint == "full":  # one block recomputed at a time
        activations += _activations_per_layer(
            model, parallel.model_copy(update={"activation_checkpoint": "none"}), layout,
            micro_batch, seq_len,
        )  # fmt: skip
    logits = micro_batch * seq_len * model.embedding_size * 4 * 2
    total = state_bytes + activations + logits
    return {
        "layout": {**dict(zip(MESH_DIMS, layout.shape(), strict=True)), "world_size": world_size},
        "params": count_params(model),
        "params_per_rank": per_rank,
        "state_gib": round(state_bytes / GIB, 2),
        "activations_gib": round(activations / GIB, 2),
        "logits_gib": round(logits / GIB, 2),
        "total_gib": round(total / GIB, 2),
    }
