"""FSDP2 x tensor parallelism (dp_shard=2, tp=2: four gloo processes) reproduces one process.

Each data rank reads 4 of the 8 samples of a global batch; its two tensor-parallel ranks
read the same 4. Parameters are DTensors on the 2-D ("dp_shard", "tp") mesh; gradients are
reduce-scattered over dp_shard after TP's own reductions. Losses, gradient norms and final
weights match the single-process run within 1e-5. The blocks use selective checkpointing,
whose kept reduce-scatter outputs and recomputed all-gathers run on DTensors here.
"""

from __future__ import annotations

import pytest

from tests.distributed.test_tp_train import assert_same_run, run_parallel, train_single_process

pytestmark = pytest.mark.distributed


def test_fsdp2_by_tensor_parallel_reproduces_the_single_process_run(tmp_path) -> None:
    data, single = train_single_process(tmp_path)
    parallel = {"tp": 2, "dp_shard": 2, "activation_checkpoint": "selective"}
    assert_same_run(single, run_parallel(tmp_path, data, "fsdp2xtp2", 4, 4, parallel))
