"""Metric sinks: JSONL resume rule, TensorBoard events read back, W&B offline history read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.train.metrics import MetricsLog, read_metrics
from scifm.train.sinks import (
    WANDB_RUN_FILE,
    MetricsConfig,
    TensorBoardSink,
    close_sinks,
    open_sinks,
    write_sinks,
)


def _record(step: int) -> dict:
    record = {"step": step, "tokens_seen": 128 * step, "loss": 10.0 / step, "lr": 1e-3}
    return {**record, "tokens_per_s": 1000.0 + step, "note": "text is skipped by scalar sinks"}


def _write_steps(cfg: MetricsConfig, run: Path, steps: range, resume_step: int = 0) -> list:
    sinks = open_sinks(cfg, run, resume_step, run_config={"train": {"lr": 1e-3}})
    try:
        for step in steps:
            write_sinks(sinks, _record(step))
    finally:
        close_sinks(sinks)
    return sinks


def test_config_defaults_round_trip_and_document_every_field() -> None:
    cfg = MetricsConfig()
    shown = (cfg.tensorboard, cfg.wandb, cfg.wandb_mode, cfg.progress)
    assert shown == (False, False, "offline", True)
    assert MetricsConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg, Config)
    assert all(field.description for field in MetricsConfig.model_fields.values())
    with pytest.raises(ScifmError, match="wandb_mode"):
        MetricsConfig.from_dict({"wandb_mode": "disabled"})


def test_jsonl_only_by_default_and_resume_drops_records_past_the_checkpoint(tmp_path) -> None:
    sinks = _write_steps(MetricsConfig(), tmp_path, range(1, 9))
    assert [type(s) for s in sinks] == [MetricsLog]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 9))
    # crashed after step 8, resumed from the checkpoint at step 5: steps 6.. are written again
    _write_steps(MetricsConfig(), tmp_path, range(6, 10), resume_step=5)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert records[-1] == _record(9)
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()


def test_jsonl_lines_are_on_disk_before_close(tmp_path) -> None:
    sinks = open_sinks(MetricsConfig(), tmp_path, 0, {})
    write_sinks(sinks, _record(1))
    assert read_metrics(tmp_path / "metrics.jsonl") == [_record(1)]
    close_sinks(sinks)


def _tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


def test_tensorboard_events_hold_each_scalar_and_resume_purges(tmp_path) -> None:
    cfg = MetricsConfig(tensorboard=True)
    _write_steps(cfg, tmp_path, range(1, 9))
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert set(scalars) == {"tokens_seen", "loss", "lr", "tokens_per_s"}
    assert scalars["loss"] == [(s, pytest.approx(10.0 / s)) for s in range(1, 9)]
    _write_steps(cfg, tmp_path, range(6, 10), resume_step=5)
    resumed = _tensorboard_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in resumed["tokens_per_s"]] == list(range(1, 10))
    assert resumed["tokens_per_s"][-1] == (9, 1009.0)


def _wandb_offline_env(monkeypatch, tmp_path: Path) -> None:
    """No network, no files outside tmp_path, no console noise, no system-metrics sampler."""
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path / "wandb-default"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_ARTIFACT_DIR": str(tmp_path / "wandb-artifacts"),
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB__DISABLE_STATS": "true",
        "WANDB_API_KEY": "",
    }.items():
        monkeypatch.setenv(name, value)


def _wandb_records(run_file: Path) -> list[dict]:
    """wandb's own offline reader of a run's transaction log: `wandb leet inspect --json`."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_wandb_offline_run_holds_history_and_resumes_the_same_run(tmp_path, monkeypatch) -> None:
    _wandb_offline_env(monkeypatch, tmp_path)
    run = tmp_path / "my-run"
    cfg = MetricsConfig(wandb=True, wandb_project="scifm-test")
    sinks = _write_steps(cfg, run, range(1, 5))
    run_id = json.loads((run / WANDB_RUN_FILE).read_text())["id"]
    assert sinks[1].run_id == run_id
    (first,) = (run / "wandb").glob(f"offline-run-*-{run_id}")

    records = _wandb_records(first / f"run-{run_id}.wandb")
    (started,) = [r["run"] for r in records if r["type"] == "run"]
    shown = (started["run_id"], started["project"], started["display_name"])
    assert shown == (run_id, "scifm-test", "my-run")
    assert started["config"]["update"]["train"] == {"lr": 1e-3}
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    assert [h["loss"] for h in history] == [pytest.approx(10.0 / s) for s in range(1, 5)]
    assert history[0]["note"] == "text is skipped by scalar sinks"

    _write_steps(cfg, run, range(3, 6), resume_step=2)  # a resumed run: the same W&B id
    assert len(list((run / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_missing_packages_name_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    for cfg in (MetricsConfig(tensorboard=True), MetricsConfig(wandb=True)):
        with pytest.raises(ScifmError, match=r"pip install 'scifm\[track\]'") as err:
            open_sinks(cfg, tmp_path, 0, {})
        assert "\n" not in str(err.value)
    with pytest.raises(ScifmError, match="tensorboard"):
        TensorBoardSink(tmp_path / "tb")
    # the JSONL sink opened first was closed again: its file can be reopened and appended to
    _write_steps(MetricsConfig(), tmp_path, range(1, 3))
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2


def test_corrupt_wandb_run_file_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    _wandb_offline_env(monkeypatch, tmp_path)
    (tmp_path / WANDB_RUN_FILE).write_text("{not json")
    with pytest.raises(ScifmError, match="delete the file"):
        open_sinks(MetricsConfig(wandb=True), tmp_path, 0, {})


def test_close_sinks_closes_all_even_when_one_fails() -> None:
    closed = []

    class Sink:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name, self.fail = name, fail

        def write(self, record) -> None:
            pass

        def close(self) -> None:
            closed.append(self.name)
            if self.fail:
                raise OSError(f"{self.name} failed")

    with pytest.raises(OSError, match="a failed"):
        close_sinks([Sink("a", fail=True), Sink("b"), Sink("c", fail=True)])
    assert closed == ["a", "b", "c"]
