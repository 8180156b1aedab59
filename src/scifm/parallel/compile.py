"""torch.compile of each transformer block (inductor; C++ kernels on CPU, Triton on GPUs).

Blocks are compiled one by one rather than the whole model: they are identical, so dynamo
traces one graph shape and reuses it, and the embedding, output and loss (where the data
loader and the tensor-parallel gathers live) stay in eager mode. Each block is compiled in
place (`nn.Module.compile`), so module names and state-dict keys do not change. Compile
sees the block as tensor parallelism and activation checkpointing left it, and FSDP2 wraps
it afterwards (`scifm.parallel.parallelize` applies them in that order).
"""

from __future__ import annotations

from torch import nn


def apply_compile(model: nn.Module, fullgraph: bool = True) -> None:
    """Compile every block of `model.layers` in place (the first call of each compiles it).

    `fullgraph=True` makes a graph break an error instead of a silent slowdown.
    """
    for block in model.layers.values():
        block.compile(fullgraph=fullgraph)
