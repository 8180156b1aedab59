"""The training loop: schedule shape, loss falls, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from scifm.checkpoint import CheckpointConfig, list_checkpoints
from scifm.core.errors import ScifmError
from scifm.model import ModelConfig
from scifm.train import TrainConfig, train
from scifm.train import run as run_module
from scifm.train.optim import OptimizerConfig
from scifm.train.schedule import warmup_cosine


def test_warmup_cosine_shape() -> None:
    values = [warmup_cosine(s, 100, 10, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_budget_in_tokens_or_steps() -> None:
    assert TrainConfig(max_tokens=1000, micro_batch_size=2).total_steps(seq_len=100) == 5
    with pytest.raises(ScifmError, match="max_steps or train.max_tokens"):
        TrainConfig.from_dict({})
    with pytest.raises(ScifmError, match="only one"):
        TrainConfig.from_dict({"max_steps": 1, "max_tokens": 5})


MODEL = ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=64,
                    multiple_of=32, max_seq_len=32)  # fmt: skip


def _cfg(out: Path, steps: int, **extra) -> TrainConfig:
    return TrainConfig(out_dir=str(out), max_steps=steps, micro_batch_size=4,
                       optimizer=OptimizerConfig(lr=1e-2),
                       warmup_steps=2, log_every=1, **extra)  # fmt: skip


def test_loss_falls_and_metrics_are_recorded(tmp_path, data) -> None:
    result = train(MODEL, data, _cfg(tmp_path, 30))
    assert result.last_loss < result.first_loss - 1.0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 30 and records[-1]["tokens_seen"] == 30 * 4 * 32
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "data_wait_s", "compute_s"):
        assert key in records[-1]


def test_resume_after_a_crash_equals_uninterrupted_run(tmp_path, data, monkeypatch) -> None:
    whole = train(MODEL, data, _cfg(tmp_path / "whole", 8))
    original = run_module.Trainer.step

    def crash_at_step_six(self):
        if self.state.step == 5:
            raise RuntimeError("node failure")
        return original(self)

    monkeypatch.setattr(run_module.Trainer, "step", crash_at_step_six)
    with pytest.raises(RuntimeError, match="node failure"):
        train(MODEL, data, _cfg(tmp_path / "split", 8, checkpoint=CheckpointConfig(every=4)))
    monkeypatch.undo()
    assert [c.step for c in list_checkpoints(tmp_path / "split")] == [4]
    resumed = train(MODEL, data, _cfg(tmp_path / "split", 8, checkpoint=CheckpointConfig(every=4)))
    assert resumed.steps == 8 and [c.step for c in list_checkpoints(tmp_path / "split")] == [4, 8]
    lines = [(tmp_path / d / "metrics.jsonl").read_text() for d in ("whole", "split")]
    losses = [[json.loads(x)["loss"] for x in text.splitlines()] for text in lines]
    assert len(losses[1]) == 8 and losses[0] == losses[1]
    assert resumed.last_loss == whole.last_loss
    weights = [_weights(tmp_path / d) for d in ("whole", "split")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from scifm.stages import load_trained_model

    return load_trained_model(run, MODEL).state_dict()


def test_token_ids_beyond_the_model_vocabulary_are_refused(tmp_path, data) -> None:
    small = MODEL.model_copy(update={"vocab_size": 8, "pad_vocab_to_multiple_of": 8})
    with pytest.raises(ScifmError, match="model.vocab_size"):
        train(small, data, _cfg(tmp_path, 1))
