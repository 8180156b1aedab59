"""Tensor parallelism (with optional sequence parallelism) for the Llama modules, as DTensor plans.

Megatron-style splitting, applied from outside the plain model by module name
(`torch.distributed.tensor.parallel.parallelize_module`):

- attention: `wq`, `wk`, `wv` split by output columns (each rank holds `heads / tp` query and
  `kv_heads / tp` key/value heads; attention infers its local heads from the shapes), `wo` by
  input rows (partial sums, reduced once per sub-layer). The feed-forward likewise: `w1`, `w3`
  by columns (`hidden_dim / tp` units each), `w2` by rows.
- embedding: split by vocabulary rows (each rank looks up the ids it holds, zeros elsewhere,
  then a sum across ranks), so a huge vocabulary is not replicated.
- output: split by vocabulary columns, then gathered: logits leave the model as a plain,
  full tensor on every rank, so the trainer's cross entropy is unchanged. (The alternative,
  loss parallelism, keeps the logits sharded over the vocabulary and runs the loss under
  `torch.distributed.tensor.parallel.loss_parallel()`; it saves the [B, T, V] all-gather
  but needs the loss computed inside that context, so it is not used here.)

With `sequence_parallel` (Korthikanti et al., 2022) the residual stream and the norms are
also split along the sequence between the sub-layers: the all-reduce after `wo`/`w2` becomes
a reduce-scatter and an all-gather brings the whole sequence back before attention and the
feed-forward; the norms' activations are then 1/tp the size. Without it, the residual
stream is replicated and the norms run whole on every rank.

Every parameter becomes a DTensor on the "tp" mesh (norm weights replicated), so foreach
optimizers and FSDP2 (which composes a 2-D mesh with these) see one kind of tensor. Every
rank must hold the same full weights before `apply_tp` (the trainer initialises with one
seed everywhere); each rank then keeps its slice, so the sharded model computes what the
single-device one does, up to the order of floating-point sums.

Tied embeddings (`tie_embeddings`): the one matrix is split by vocabulary rows, which is the
embedding's row split and the output projection's column split at once; the final norm's
output is replicated before the projection and the logits are gathered as above.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.distributed.tensor.parallel.style import ParallelStyle
from torch.distributed.tensor.placement_types import Placement

from scifm.core.errors import ScifmError
from scifm.model.config import ModelConfig

SEQUENCE = Shard(1)  # activations are [batch, sequence, features]


class ReplicateParallel(ParallelStyle):
    """Parameters replicated as DTensors; plain (replicated) tensors in, plain tensors out.

    For the norms without sequence parallelism: they compute on the whole sequence on every
    rank, but their weights still become DTensors like every other parameter.
    """

    def __init__(self, *, use_local_output: bool = True) -> None:
        super().__init__()
        self.use_local_output = use_local_output

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def replicate_inputs(_module: nn.Module, inputs: tuple[Any, ...], mesh: DeviceMesh):
            return tuple(
                DTensor.from_local(x, mesh, (Replicate(),), run_check=False)
                if isinstance(x, torch.Tensor) and not isinstance(x, DTensor)
                else x
                for x in inputs
            )

        def local_output(_module: nn.Module, output: Any, _mesh: DeviceMesh) -> Any:
            return output.to_local() if self.use_local_output else output

        return distribute_module(module, device_mesh, None, replicate_inputs, local_output)


def check_tp_degree(cfg: ModelConfig, tp: int) -> None:
    """Every split dimension must divide by `tp`; otherwise one ScifmError naming the fix."""
    hidden = "model.ffn_hidden_dim" if cfg.ffn_hidden_dim else "the FFN hidden size"
    splits = [
        ("model.num_heads", cfg.num_heads, "query heads", ""),
        ("model.num_kv_heads", cfg.kv_heads, "key/value heads", ""),
        (hidden, cfg.hidden_dim, "feed-forward units",
         f", or set model.ffn_hidden_dim to a multiple of {tp}"),
        ("the padded vocabulary", cfg.embedding_size, "embedding rows",
         f", or set model.pad_vocab_to_multiple_of to a multiple of {tp}"),
    ]  # fmt: skip
    for name, size, what, alternative in splits:
        if size % tp:
            raise ScifmError(
                f"{name}={size} is not divisible by parallel.tp={tp} ({what} are split across "
                f"tensor-parallel ranks); use a parallel.tp that divides {size}{alternative}"
            )


def apply_tp(model: nn.Module, tp_mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """Split `model` (a `scifm.model.llama.Llama`, or a pipeline stage of one) over `tp_mesh`."""
    tp = tp_mesh.size()
    cfg: ModelConfig = model.cfg
    check_tp_degree(cfg, tp)
    parallelize_module(model, tp_mesh, _outer_plan(model, sequence_parallel))
    if cfg.tie_embeddings and sequence_parallel and model.norm is not None:
        _replicate_tied_input(model, tp_mesh)
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, _block_plan(sequence_parallel))
    if cfg.tie_embeddings:
        _gather_dtensor_logits(model)
    if sequence_parallel:
        model.register_forward_pre_hook(_sequence_divisible_by(tp))


def _outer_plan(model: nn.Module, sequence_parallel: bool) -> dict[str, ParallelStyle]:
    """Embedding, final norm and output projection (whichever this model or stage holds)."""
    between = SEQUENCE if sequence_parallel else Replicate()
    tied = model.cfg.tie_embeddings
    plan: dict[str, ParallelStyle] = {}
    if model.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=between)
    if model.norm is not None:
        # the tied projection is an F.linear in the model's forward, so it needs a DTensor in
        plan["norm"] = _norm_style(sequence_parallel, keep_dtensor=tied)
    if model.output is not None:
        plan["output"] = ColwiseParallel(input_layouts=between, output_layouts=Replicate())
    return plan


def _block_plan(sequence_parallel: bool) -> dict[str, ParallelStyle]:
    """One TransformerBlock: column-split q/k/v and gate/up, row-split wo and down."""
    between = SEQUENCE if sequence_parallel else Replicate()
    return {
        "attention_norm": _norm_style(sequence_parallel),
        "attention": _whole_sequence_in(between, extra_inputs=2),  # (x, cos, sin)
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=between),
        "ffn_norm": _norm_style(sequence_parallel),
        "feed_forward": _whole_sequence_in(between),
        "feed_forward.w1": ColwiseParallel(),
        "feed_forward.w3": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(output_layouts=between),
    }


def _whole_sequence_in(layout: Placement, extra_inputs: int = 0) -> PrepareModuleInput:
    """The first input replicated (all-gathered if sequence-split); the others left alone."""
    rest = (None,) * extra_inputs
    return PrepareModuleInput(input_layouts=(layout, *rest),
                              desired_input_layouts=(Replicate(), *rest),
                              use_local_output=True)  # fmt: skip


def _norm_style(sequence_parallel: bool, keep_dtensor: bool = False) -> ParallelStyle:
    if sequence_parallel:
        return SequenceParallel(use_local_output=not keep_dtensor)
    return ReplicateParallel(use_local_output=not keep_dtensor)


def _replicate_tied_input(model: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Tied projection with sequence parallelism: gather the final norm's output sequence."""
    gather = PrepareModuleOutput(output_layouts=SEQUENCE, desired_output_layouts=Replicate(),
                                 use_local_output=False)  # fmt: skip
    parallelize_module(model, tp_mesh, {"norm": gather})


def _gather_dtensor_logits(model: nn.Module) -> None:
    """Logits computed from DTensors (the tied projection) leave the model whole and plain."""

    def full(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        return output.full_tensor() if isinstance(output, DTensor) else output

    model.register_forward_hook(full)


def _sequence_divisible_by(tp: int):
    def check(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
        seq_len = inputs[0].shape[1]
        if seq_len % tp:
            raise ScifmError(
                f"sequence length {seq_len} is not divisible by parallel.tp={tp} (sequence "
                f"parallelism splits the sequence); make data.seq_len a multiple of {tp} or "
                "set parallel.sequence_parallel=false"
            )

    return check
