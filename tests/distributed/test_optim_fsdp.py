"""Optimizers on sharded parameters (2 gloo ranks): FSDP2 and tensor parallelism.

Each optimizer trains the tiny model 5 steps on one fixed random batch of 8 sequences
(each FSDP rank takes 4; tensor-parallel ranks take all 8). AdamW and Muon reproduce the
single-process run of the same global batch, losses and final weights within 1e-5: Muon
gathers each sharded matrix, orthogonalises it whole and keeps its shard, so only the order
of floating-point sums differs. SophiaG samples its Hessian labels per rank, so it is only
checked to train (finite, falling loss). For every optimizer the state is DTensors placed
like the parameters, and a DCP save/load through `get_state_dict`/`set_state_dict` resumes
exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from scifm.model import build_model
from scifm.train.optim import build_optimizer
from tests.distributed.conftest import run_torchrun
from tests.distributed.workers.optim_fsdp import (
    MODEL,
    STEPS,
    global_batch,
    optimizer_config,
    train_steps,
)

pytestmark = pytest.mark.distributed

LAYOUTS = {"fsdp": ("adamw", "muon", "sophiag"), "tp": ("adamw", "muon")}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("optim")
    specs = [f"{layout}={','.join(names)}" for layout, names in LAYOUTS.items()]
    run_torchrun("optim_fsdp.py", 2, str(out), *specs, timeout=300)
    return torch.load(out / "results.pt")


def _single_process(name: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    model = build_model(MODEL, seed=0)
    optimizer = build_optimizer(model, optimizer_config(name))
    losses = train_steps(model, optimizer, global_batch(), STEPS)
    return losses, {n: p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("layout", "name"), [(layout, name) for layout, names in LAYOUTS.items() for name in names]
)
def test_optimizer_on_two_ranks(results, layout, name) -> None:
    got = results[layout][name]
    losses = got["losses"]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.5, losses
    assert got["state_placed"], "optimizer state is not DTensors placed like the parameters"
    assert got["dcp_resume_equal"], "DCP save/load of the optimizer state did not resume exactly"
    if name == "sophiag":
        return
    expected_losses, expected_weights = _single_process(name)
    assert max(abs(a - b) for a, b in zip(expected_losses, losses, strict=True)) < 1e-5, (
        expected_losses,
        losses,
    )
    for key, tensor in expected_weights.items():
        assert torch.allclose(got["weights"][key], tensor, atol=1e-5, rtol=0), key
