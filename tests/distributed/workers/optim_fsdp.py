"""Worker: train the tiny model with each optimizer on 2 ranks; save losses, weights, checks.

argv: OUT_DIR LAYOUT=NAME,NAME... (LAYOUT "fsdp": dp_shard=2; "tp": tp=2), all in one launch
(each launch costs seconds of imports). Rank 0 writes OUT_DIR/results.pt:
{layout: {name: {"losses", "weights" (full tensors), "state_placed", "dcp_resume_equal"}}}.
`train_steps` is shared with the test, which runs it in one process as the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from scifm.model import ModelConfig, build_model
from scifm.parallel import ParallelConfig
from scifm.parallel.parallelize import build_mesh, parallelize
from scifm.train.optim import OptimizerConfig, build_optimizer, gnb_loss, wants_hessian

MODEL = ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=512,
                    multiple_of=32, max_seq_len=16)  # fmt: skip
GLOBAL_BATCH, SEQ_LEN, STEPS = 8, 16, 5
SCHEDULE = (0.5, 1.0, 1.0, 0.8, 0.6)  # lr multipliers, as the trainer's schedule would set


def optimizer_config(name: str) -> OptimizerConfig:
    # eps 1e-6: see tests/distributed/test_train_parallel.py (rounding vs tiny gradients)
    return OptimizerConfig(name=name, lr=1e-2, eps=1e-6, sophia_hessian_every=2)


def global_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, MODEL.vocab_size, (GLOBAL_BATCH, SEQ_LEN + 1), generator=generator)


def _mean_over(value: torch.Tensor, group: Any) -> float:
    if group is None:
        return float(value)
    total = value.detach().clone()
    dist.all_reduce(total, group=group)  # gloo has no AVG
    return float(total) / dist.get_world_size(group)


def _hessian_refresh(model, optimizer, batch: torch.Tensor, dp_size: int) -> None:
    optimizer.zero_grad(set_to_none=True)
    gnb_loss(model(batch[:, :-1])).backward()
    optimizer.update_hessian(num_tokens=batch[:, 1:].numel() * dp_size)
    optimizer.zero_grad(set_to_none=True)


def train_steps(model, optimizer, batch: torch.Tensor, steps: int, first_step: int = 0,
                dp_group: Any = None) -> list[float]:  # fmt: skip
    """`steps` optimizer steps on the same batch (this rank's rows); mean loss over dp ranks."""
    dp_size = 1 if dp_group is None else dist.get_world_size(dp_group)
    losses = []
    for step in range(first_step, first_step + steps):
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * SCHEDULE[step % len(SCHEDULE)]
        if wants_hessian(optimizer, step):
            _hessian_refresh(model, optimizer, batch, dp_size)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(_mean_over(loss.detach(), dp_group))
    return losses


def _setup(layout: str, name: str, seed: int):
    parallel = ParallelConfig(tp=2) if layout == "tp" else ParallelConfig()
    mesh = build_mesh(parallel, dist.get_world_size(), "cpu")
    model = parallelize(build_model(MODEL, seed=seed), parallel, mesh)
    return model, build_optimizer(model, optimizer_config(name))


def _local_rows(layout: str) -> torch.Tensor:
    batch = global_batch()
    if layout == "tp":  # tensor-parallel ranks read the same samples
        return batch
    per_rank = GLOBAL_BATCH // dist.get_world_size()
    return batch[dist.get_rank() * per_rank : (dist.get_rank() + 1) * per_rank]


def _state_placed_like_params(optimizer) -> bool:
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if key == "step":
                continue
            same = isinstance(value, DTensor) and value.placements == param.placements
            if not same or value.to_local().shape != param.to_local().shape:
                return False
    return bool(optimizer.state)


def _dcp_resume_equal(layout: str, name: str, model, optimizer, out: Path) -> bool:
    """Save through get_state_dict + DCP, load into a fresh model and optimizer, step both."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    checkpoint = out / f"checkpoint-{layout}-{name}"
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=checkpoint)
    fresh_model, fresh = _setup(layout, name, seed=1)
    model_sd, optim_sd = get_state_dict(fresh_model, fresh)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=checkpoint)
    set_state_dict(fresh_model, fresh, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])  # fmt: skip
    dp_group = None if layout == "tp" else dist.group.WORLD
    batch = _local_rows(layout)
    expected = train_steps(model, optimizer, batch, 1, STEPS, dp_group)
    got = train_steps(fresh_model, fresh, batch, 1, STEPS, dp_group)
    same_params = all(
        torch.equal(a.to_local(), b.to_local())
        for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True)
    )
    return same_params and expected == got


def run(layout: str, name: str, out: Path) -> dict[str, Any]:
    model, optimizer = _setup(layout, name, seed=0)
    dp_group = None if layout == "tp" else dist.group.WORLD
    losses = train_steps(model, optimizer, _local_rows(layout), STEPS, 0, dp_group)
    weights = {n: p.full_tensor().clone() for n, p in model.named_parameters()}
    return {
        "losses": losses,
        "weights": weights,
        "state_placed": _state_placed_like_params(optimizer),
        "dcp_resume_equal": _dcp_resume_equal(layout, name, model, optimizer, out),
    }


def main(out_dir: str, *specs: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    out = Path(out_dir)
    results: dict[str, dict[str, Any]] = {}
    for spec in specs:
        layout, _, names = spec.partition("=")
        results[layout] = {name: run(layout, name, out) for name in names.split(",")}
    if dist.get_rank() == 0:
        torch.save(results, out / "results.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
