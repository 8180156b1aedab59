"""Data parallelism on gloo reproduces the single-process run: losses and final weights.

The single-process run takes global batches of 8 (micro-batch 8); two ranks take 4 each
(micro-batch 4), under FSDP2 (dp_shard=2) and under plain replication (dp_replicate=2, DDP).
Both read the same global stream, so every step's loss and the final weights agree to fp32
rounding (reductions in another order). Adam's eps is 1e-6 here: with 1e-8, an embedding row
whose gradient is ~1e-9 (a token seen by no sample, reached only through the tied output)
turns that rounding into a full-size step of opposite sign.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from scifm.checkpoint import latest_checkpoint, load_checkpoint
from scifm.model import ModelConfig, build_model
from scifm.train import train
from scifm.train.config import TrainConfig
from tests.distributed.conftest import run_mpiexec, run_torchrun, small_mixture

pytestmark = pytest.mark.distributed

MODEL = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 3000,
         "multiple_of": 32, "max_seq_len": 16}  # fmt: skip
TRAIN = {"max_steps": 6, "warmup_steps": 2, "log_every": 1, "deterministic": True,
         "optimizer": {"lr": 2e-3, "eps": 1e-6},
         "num_threads": 1}  # fmt: skip


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    model = build_model(ModelConfig.from_dict(MODEL), device="cpu", seed=None)
    state = {"model": model.state_dict()}
    load_checkpoint(latest_checkpoint(run).path, state)
    return state["model"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    data = small_mixture(root)
    single = root / "single"
    reference = TrainConfig.from_dict({**TRAIN, "micro_batch_size": 8, "out_dir": str(single)})
    train(ModelConfig.from_dict(MODEL), data, reference)
    config = root / "recipe.yaml"
    config.write_text(yaml.safe_dump({"data": data.to_dict(), "model": MODEL,
                                      "train": {**TRAIN, "micro_batch_size": 4}}))  # fmt: skip
    return root, config, single


@pytest.mark.parametrize(
    ("name", "replicate", "shard", "launcher"),
    [("fsdp2", 1, 2, run_torchrun), ("ddp", 2, 1, run_torchrun), ("mpiexec", 1, 2, run_mpiexec)],
)
def test_two_ranks_reproduce_the_single_process_run(setup, name, replicate, shard,
                                                    launcher) -> None:  # fmt: skip
    """torchrun and a real mpiexec (MPICH Hydra, no MASTER_ADDR) give the same run."""
    root, config, single = setup
    out = root / name
    launcher("train_dp.py", 2, str(config), str(out), str(replicate), str(shard), timeout=300)
    expected, got = _losses(single), _losses(out)
    assert len(got) == len(expected) == 6
    assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) < 1e-5, (expected, got)
    reference, trained = _weights(single), _weights(out)
    for key, tensor in reference.items():
        assert torch.allclose(trained[key], tensor, atol=1e-5, rtol=0), key
    meta = json.loads((latest_checkpoint(out).path / "metadata.json").read_text())
    assert meta["consumed_samples"] == 6 * 8 and meta["tokens_seen"] == 6 * 8 * 16
