"""Trainer features beyond the basic loop: schedules, z-loss, global batch in tokens, ramp-up."""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tests.unit.train.test_train import MODEL, _cfg

from scifm.core.errors import ScifmError
from scifm.train import TrainConfig, train
from scifm.train import run as run_module
from scifm.train.callbacks import Callback
from scifm.train.loss import LanguageModelLoss
from scifm.train.schedule import lr_multiplier, warmup_stable_decay


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_warmup_stable_decay_holds_the_peak_then_decays_to_the_floor(shape) -> None:
    values = [warmup_stable_decay(s, 100, 10, 0.1, 0.2, shape) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10:80] == [1.0] * 70  # stable until the last 20% of steps
    assert values[80] < 1.0 and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_lr_schedule_is_chosen_by_the_config() -> None:
    config = SimpleNamespace(lr_schedule="constant", warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_multiplier(s, 10, config) for s in (0, 3, 9)] == [0.25, 1.0, 1.0]


def test_z_loss_adds_the_squared_log_normaliser_but_logs_cross_entropy() -> None:
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    loss_fn = LanguageModelLoss(z_loss_weight=1e-2)
    total = loss_fn(logits, labels)
    cross_entropy = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    log_z = torch.logsumexp(logits, dim=-1)
    assert float(total) == pytest.approx(float(cross_entropy + 1e-2 * log_z.pow(2).mean()))
    assert loss_fn.pop_mean() == pytest.approx(float(cross_entropy))
    assert loss_fn.pop_mean() is None


def test_global_batch_in_tokens_sets_the_accumulation() -> None:
    cfg = TrainConfig(max_steps=1, micro_batch_size=4, global_batch_tokens=4 * 3 * 2 * 128)
    assert cfg.accumulation(seq_len=128, data_parallel=2) == 3
    assert cfg.tokens_per_step(128, 2) == 4 * 3 * 2 * 128
    with pytest.raises(ScifmError, match="not a whole number of micro-batches.*multiple of 1024"):
        TrainConfig(max_steps=1, micro_batch_size=4, global_batch_tokens=1000).accumulation(128, 2)


class _Batches(Callback):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_step_end(self, trainer, stats) -> None:
        self.sizes.append(stats.samples)


def test_accumulated_step_equals_one_big_micro_batch(tmp_path, data) -> None:
    big = train(MODEL, data, _cfg(tmp_path / "big", 3, grad_accum_steps=1, deterministic=True))
    small = _cfg(tmp_path / "small", 3, deterministic=True).model_copy(
        update={"micro_batch_size": 2, "global_batch_tokens": 4 * 32}
    )
    accumulated = train(MODEL, data, small)
    assert accumulated.last_loss == pytest.approx(big.last_loss, abs=1e-5)


def test_batch_ramp_up_grows_the_batch_and_resumes_exactly(tmp_path, data, monkeypatch) -> None:
    ramp = {"start_batch_size": 4, "increment": 4, "ramp_samples": 16}
    whole_cfg = _cfg(tmp_path / "whole", 7, grad_accum_steps=2).to_dict()
    cfg = TrainConfig.from_dict({**whole_cfg, "batch_rampup": ramp})
    seen = _Batches()
    whole = train(MODEL, data, cfg, callbacks=[seen, *run_module.default_callbacks()])
    assert seen.sizes == [4, 4, 4, 4, 8, 8, 8]
    records = [
        json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["batch_size"] for r in records] == seen.sizes
    assert records[-1]["tokens_seen"] == sum(seen.sizes) * 32

    split = TrainConfig.from_dict({**cfg.to_dict(), "out_dir": str(tmp_path / "split"),
                                   "checkpoint": {"every": 3}})  # fmt: skip
    original = run_module.Trainer.step

    def crash_after_three(self):
        if self.state.step == 3:
            raise RuntimeError("preempted")
        return original(self)

    monkeypatch.setattr(run_module.Trainer, "step", crash_after_three)
    with pytest.raises(RuntimeError, match="preempted"):
        train(MODEL, data, split)
    monkeypatch.undo()
    resumed = train(MODEL, data, split)
    assert resumed.last_loss == whole.last_loss and resumed.tokens_seen == whole.tokens_seen
    assert not math.isnan(resumed.last_loss)


def test_trainer_feeds_every_enabled_sink_the_same_records(tmp_path, data) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig.from_dict({**_cfg(tmp_path, 4).to_dict(),
                                 "metrics": {"tensorboard": True}})  # fmt: skip
    train(MODEL, data, cfg)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(r["mfu"] is None and r["comm_wait_s"] >= 0 for r in records)  # CPU: no peak
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"])) for r in records]


@pytest.mark.parametrize("name", ["muon", "sophiag"])
def test_trainer_runs_each_optimizer(tmp_path, data, name) -> None:
    """Muon and SophiaG through the real loop (SophiaG's Hessian refresh included)."""
    cfg = TrainConfig.from_dict({**_cfg(tmp_path, 20).to_dict(),
                                 "optimizer": {"name": name, "lr": 1e-2,
                                               "sophia_hessian_every": 5}})  # fmt: skip
    result = train(MODEL, data, cfg)
    assert result.last_loss < result.first_loss - 0.5, (result.first_loss, result.last_loss)
