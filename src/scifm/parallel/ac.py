"""Activation checkpointing of the transformer blocks: trade recomputation for memory.

Each block in `model.layers` is replaced by a `checkpoint_wrapper` around it (non-reentrant
`torch.utils.checkpoint`), so its forward runs without keeping activations for backward and
is recomputed when backward reaches it. The wrapper strips its own name from state-dict keys
(and `torch.distributed.checkpoint`'s `get_state_dict` does too), so checkpoints keep the
plain model's keys whatever the mode.

Modes:

- "full": nothing inside a block is kept; backward reruns the whole block forward. Memory per
  block is its input only; compute is about one extra forward.
- "selective" (op-level): the outputs of the matmuls (the seven projections), of attention
  (`scaled_dot_product_attention`) and of the tensor-parallel reduce-scatters are kept; the
  cheap element-wise work between them (RMSNorm, RoPE, SiLU, the gate product, residual adds)
  and the sequence-parallel all-gathers are recomputed. Most of the recomputation cost of "full"
  (the matmuls and attention) is avoided, while the element-wise intermediates, which outnumber the
  matmul outputs, are not stored.

Recomputation repeats exactly the same operations on the same inputs, so losses and gradients
equal those without checkpointing.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from scifm.core.errors import ScifmError

MODES = ("none", "full", "selective")


def _saved_ops() -> set[object]:
    """Ops whose outputs selective checkpointing keeps (those that exist in this torch build)."""
    aten = torch.ops.aten
    names = [
        (aten, "mm"), (aten, "addmm"), (aten, "bmm"),
        (aten, "_scaled_dot_product_flash_attention_for_cpu"),
        (aten, "_scaled_dot_product_flash_attention"),
        (aten, "_scaled_dot_product_efficient_attention"),
        (aten, "_scaled_dot_product_cudnn_attention"),
        (torch.ops._c10d_functional, "reduce_scatter_tensor"),
    ]  # fmt: skip
    return {getattr(ns, name).default for ns, name in names if hasattr(ns, name)}


SAVED_OPS = _saved_ops()


def _keep_matmuls_and_attention(_ctx, op, *_args, **_kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts():
    return create_selective_checkpoint_contexts(_keep_matmuls_and_attention)


def checkpoint_block(block: nn.Module, mode: str) -> nn.Module:
    """`block` wrapped for `mode` ("full" or "selective")."""
    if mode == "full":
        return checkpoint_wrapper(block, preserve_rng_state=False)
    return checkpoint_wrapper(block, preserve_rng_state=False, context_fn=_selective_contexts)


def apply_ac(model: nn.Module, mode: str) -> None:
    """Checkpoint every block of `model.layers` in place; "none" leaves the model as it is.

    The blocks hold no random operations (no dropout), so the RNG state is not saved for
    the recomputation.
    """
    if mode not in MODES:
        raise ScifmError(
            f"parallel.activation_checkpoint={mode!r} is not a mode; use one of {', '.join(MODES)}"
        )
    if mode == "none":
        return
    wrap = partial(checkpoint_block, mode=mode)
    for name, block in list(model.layers.named_children()):
        model.layers.register_module(name, wrap(block))
