"""Tensor + sequence parallelism on gloo reproduces the single-process run: losses and weights.

The single-process run takes global batches of 8. Tensor-parallel ranks share one data rank,
so TP=2 (two processes) reads the whole batch of 8 on both, each holding half of every
attention/FFN projection and of the vocabulary. Every step's loss, gradient norm (clipping
sees DTensor gradients) and the final weights agree with the single-process run to fp32
rounding (partial sums reduced across ranks in another order). The run also checkpoints
every block ("full"), which recomputes exactly. Adam's eps is 1e-6 for the reason given in
test_train_parallel.py. The helpers here serve test_tp_fsdp_train.py too (FSDP2 x TP).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from scifm.checkpoint import latest_checkpoint, load_checkpoint
from scifm.data import CorpusSource, DataConfig
from scifm.model import ModelConfig, build_model
from scifm.train import train
from scifm.train.config import TrainConfig
from tests.distributed.conftest import run_torchrun
from tests.unit.data.conftest import make_corpora

pytestmark = pytest.mark.distributed

MODEL = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 3000,
         "multiple_of": 32, "max_seq_len": 16}  # fmt: skip
TRAIN = {"max_steps": 4, "warmup_steps": 2, "log_every": 1, "deterministic": True,
         "optimizer": {"lr": 2e-3, "eps": 1e-6}, "num_threads": 1}  # fmt: skip


def _metric(run: Path, name: str) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)[name] for line in lines]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    model = build_model(ModelConfig.from_dict(MODEL), device="cpu", seed=None)
    state = {"model": model.state_dict()}
    load_checkpoint(latest_checkpoint(run).path, state)
    return state["model"]


def _recipe(root: Path, data: DataConfig, micro_batch: int) -> Path:
    path = root / f"recipe-{micro_batch}.yaml"
    train_section = {**TRAIN, "micro_batch_size": micro_batch}
    path.write_text(
        yaml.safe_dump({"data": data.to_dict(), "model": MODEL, "train": train_section})
    )
    return path


def train_single_process(root: Path) -> tuple[DataConfig, Path]:
    """The reference run: one process, global (and micro) batch 8."""
    corpora = make_corpora(root, docs_per_file=60)
    sources = [CorpusSource(name=n, prefixes=p, weight=w)
               for (n, p), w in zip(corpora.items(), (5, 3, 2), strict=True)]  # fmt: skip
    data = DataConfig(corpora=sources, seq_len=16, shuffle_window_docs=8)
    single = root / "single"
    reference = TrainConfig.from_dict({**TRAIN, "micro_batch_size": 8, "out_dir": str(single)})
    train(ModelConfig.from_dict(MODEL), data, reference)
    return data, single


def run_parallel(root: Path, data: DataConfig, name: str, nproc: int, micro_batch: int,
                 parallel: dict) -> Path:  # fmt: skip
    out = root / name
    run_torchrun("train_layout.py", nproc, str(_recipe(root, data, micro_batch)), str(out),
                 json.dumps(parallel), timeout=300)  # fmt: skip
    return out


def assert_same_run(single: Path, out: Path) -> None:
    for name in ("loss", "grad_norm"):
        expected, got = _metric(single, name), _metric(out, name)
        assert len(got) == len(expected) == TRAIN["max_steps"], name
        worst = max(abs(a - b) for a, b in zip(expected, got, strict=True))
        assert worst < 1e-5, (name, expected, got)
    reference, trained = _weights(single), _weights(out)
    assert trained.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.allclose(trained[key], tensor, atol=1e-5, rtol=0), key


def test_tensor_and_sequence_parallel_reproduce_the_single_process_run(tmp_path) -> None:
    data, single = train_single_process(tmp_path)
    parallel = {"tp": 2, "sequence_parallel": True, "activation_checkpoint": "full"}
    assert_same_run(single, run_parallel(tmp_path, data, "tp2-sp", 2, 8, parallel))
