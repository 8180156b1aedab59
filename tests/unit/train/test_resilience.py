"""Surviving bad steps, preemption signals and broken checkpoints, through the real trainer.

Faults are injected with `SCIFM_FAULT` (the same switch the chaos tests use across ranks).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal

import pytest
import torch
from tests.unit.train.test_train import MODEL, _cfg, _weights

from scifm.checkpoint import CheckpointConfig, latest_checkpoint, list_checkpoints
from scifm.core.errors import ScifmError
from scifm.train import train
from scifm.train.anomaly import AnomalyConfig, AnomalyDetector, TrainingStopped
from scifm.train.faults import FaultInjector, parse_faults
from scifm.train.preempt import Preempted


@pytest.fixture(autouse=True)
def _first_attempt(monkeypatch) -> None:
    for name in ("SCIFM_LAUNCH_ATTEMPT", "TORCHELASTIC_RESTART_COUNT", "SCIFM_FAULT"):
        monkeypatch.delenv(name, raising=False)


def _records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_fault_spec_is_parsed_and_bad_specs_are_named() -> None:
    kill, sleep = parse_faults("kill@5:rank=1; sleep@4:seconds=2.5,attempt=1")
    assert (kill.kind, kill.step, kill.rank, kill.attempt) == ("kill", 5, 1, 0)
    assert (sleep.seconds, sleep.attempt, sleep.rank) == (2.5, 1, None)
    with pytest.raises(ScifmError, match="KIND@STEP"):
        parse_faults("explode@3")
    with pytest.raises(ScifmError, match="unknown option 'color'"):
        parse_faults("nan@3:color=red")


def test_faults_fire_once_and_only_in_the_first_attempt(monkeypatch) -> None:
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.ones(3)
    injector = FaultInjector(rank=0, spec="nan@2")
    assert not injector.poison(1, [param]) and injector.poison(2, [param])
    assert torch.isnan(param.grad).all() and not injector.poison(2, [param])
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert not FaultInjector(rank=0, spec="nan@2").poison(2, [param])
    assert not FaultInjector(rank=1, spec="nan@2:rank=0").poison(2, [param])


def test_spikes_are_judged_against_the_window_of_good_steps() -> None:
    detector = AnomalyDetector(AnomalyConfig(spike_zscore=4, window=10, min_history=5))
    for value in (3.0, 3.1, 2.9, 3.0, 3.05):
        assert detector.verdict(value, 1.0 + value / 100) is None
    assert "loss 9 is a spike" in detector.verdict(9.0, 1.03)
    assert "grad_norm" in detector.verdict(3.0, 50.0)
    assert detector.verdict(float("nan"), 1.0) == "loss is nan"
    assert detector.verdict(3.0, float("inf")) == "grad_norm is inf"
    assert len(detector.windows["loss"].values) == 5  # bad steps stay out of the window
    assert AnomalyDetector(AnomalyConfig()).verdict(1e9, 1e9) is None  # spikes off by default


def test_skip_policy_drops_the_update_and_finishes(tmp_path, data, monkeypatch) -> None:
    monkeypatch.setenv("SCIFM_FAULT", "nan@3")
    result = train(MODEL, data, _cfg(tmp_path, 6))
    records = _records(tmp_path)
    assert math.isnan(records[2]["loss"]) and records[2]["bad_steps"] == 1
    assert records[-1]["skipped_steps"] == 1 and records[-1]["rollbacks"] == 0
    assert result.steps == 6 and math.isfinite(result.last_loss)
    weights = _weights(tmp_path)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_stop_policy_ends_the_run_with_exit_code_4(tmp_path, data, monkeypatch) -> None:
    monkeypatch.setenv("SCIFM_FAULT", "nan@3")
    cfg = _cfg(tmp_path, 6, anomaly=AnomalyConfig(policy="stop"),
               checkpoint=CheckpointConfig(every=2))  # fmt: skip
    with pytest.raises(TrainingStopped, match="step 3: loss is nan; stopping") as err:
        train(MODEL, data, cfg)
    assert err.value.exit_code == 4
    assert [c.step for c in list_checkpoints(tmp_path)] == [2]


def test_rollback_reloads_the_checkpoint_and_steps_over_the_bad_batches(
    tmp_path, data, monkeypatch, caplog
) -> None:
    monkeypatch.setenv("SCIFM_FAULT", "nan@5")
    cfg = _cfg(tmp_path / "rb", 8, anomaly=AnomalyConfig(policy="rollback"),
               checkpoint=CheckpointConfig(every=4))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = train(MODEL, data, cfg)
    assert "rolled back to step 4, stepping over 4 samples" in caplog.text
    meta = latest_checkpoint(tmp_path / "rb").metadata
    assert result.steps == 8 and meta["rollbacks"] == 1 and meta["skipped_samples"] == 4
    assert meta["consumed_samples"] == 9 * 4  # one batch more than the 8 steps used
    steps = [r["step"] for r in _records(tmp_path / "rb")]
    assert steps == [1, 2, 3, 4, 4, 5, 6, 7, 8]  # step 5 failed and was rolled back to 4
    # From the rollback on, the run equals one whose weights at step 4 met batch 6 next.
    monkeypatch.delenv("SCIFM_FAULT")
    clean = train(MODEL, data, _cfg(tmp_path / "clean", 8))
    assert result.first_loss == clean.first_loss and result.last_loss != clean.last_loss


def test_rollback_without_any_checkpoint_writes_one_at_the_start(tmp_path, data, monkeypatch):
    monkeypatch.setenv("SCIFM_FAULT", "nan@2")
    result = train(MODEL, data, _cfg(tmp_path, 4, anomaly=AnomalyConfig(policy="rollback")))
    assert result.steps == 4
    assert latest_checkpoint(tmp_path).metadata["rollbacks"] == 1


def test_sigterm_saves_then_exits_and_a_restart_matches_an_uninterrupted_run(
    tmp_path, data, monkeypatch
) -> None:
    whole = train(MODEL, data, _cfg(tmp_path / "whole", 8))
    monkeypatch.setenv("SCIFM_FAULT", "signal@3:name=SIGTERM")
    with pytest.raises(Preempted, match="stopped by SIGTERM after saving") as err:
        train(MODEL, data, _cfg(tmp_path / "split", 8))
    assert err.value.exit_code == 128 + signal.SIGTERM
    assert [c.step for c in list_checkpoints(tmp_path / "split")] == [3]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are restored
    monkeypatch.delenv("SCIFM_FAULT")
    resumed = train(MODEL, data, _cfg(tmp_path / "split", 8))
    assert resumed.last_loss == whole.last_loss
    weights = [_weights(tmp_path / d) for d in ("whole", "split")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_truncated_newest_checkpoint_resumes_from_the_previous(tmp_path, data, caplog):
    cfg = _cfg(tmp_path, 6, checkpoint=CheckpointConfig(every=2, keep_last=None))
    train(MODEL, data, cfg)
    shard = next((tmp_path / "checkpoints" / "step-00000006").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-10])
    longer = _cfg(tmp_path, 7, checkpoint=CheckpointConfig(every=2, keep_last=None))
    with caplog.at_level(logging.INFO):
        result = train(MODEL, data, longer)
    assert "step-00000006 is incomplete" in caplog.text
    assert "resuming from step-00000004" in caplog.text
    assert "resumed from" in caplog.text and "step 4)" in caplog.text
    assert result.steps == 7


def test_async_checkpoints_resume_like_synchronous_ones(tmp_path, data) -> None:
    sync = train(MODEL, data, _cfg(tmp_path / "sync", 6, checkpoint=CheckpointConfig(every=2)))
    cfg = _cfg(tmp_path / "async", 6, checkpoint=CheckpointConfig(every=2, async_save=True))
    train(MODEL, data, cfg)
    assert [c.step for c in list_checkpoints(tmp_path / "async")] == [2, 4, 6]
    shutil.rmtree(tmp_path / "async" / "checkpoints" / "step-00000006")  # lost in a crash
    resumed = train(MODEL, data, cfg)
    assert resumed.last_loss == sync.last_loss
    weights = [_weights(tmp_path / d) for d in ("sync", "async")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    meta = latest_checkpoint(tmp_path / "async").metadata
    assert meta["code_version"].startswith("0.") and meta["world_size"] == 1
    assert meta["rope_convention"] and "tokenizer_sha256" in meta
