"""Checkpoint integrity and retention: partial checkpoints are never taken for whole ones."""

from __future__ import annotations

import json
import logging

import torch

from scifm.checkpoint import (
    CheckpointConfig,
    Checkpointer,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_rank_state,
    save_checkpoint,
    scan_checkpoints,
)
from scifm.checkpoint.layout import steps_to_delete


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((64, 64), value)}}


def _save(run, step: int, **kwargs) -> None:
    save_checkpoint(run, step, _state(float(step)), {"note": "x"}, **kwargs)


def test_metadata_lists_every_file_with_its_size(tmp_path) -> None:
    _save(tmp_path, 1, rank_state={"rng": 7})
    (info,) = list_checkpoints(tmp_path)
    files = json.loads((info.path / "metadata.json").read_text())["files"]
    assert ".metadata" in files and "ranks/rank-00000.pt" in files
    assert all((info.path / name).stat().st_size == size for name, size in files.items())
    assert load_rank_state(info.path, 0) == {"rng": 7} and load_rank_state(info.path, 1) is None


def test_truncated_shard_or_missing_metadata_falls_back_with_a_warning(tmp_path, caplog) -> None:
    for step in (1, 2, 3):
        _save(tmp_path, step)
    shard = next((tmp_path / "checkpoints" / "step-00000003").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # a write cut short
    (tmp_path / "checkpoints" / "step-00000002" / "metadata.json").unlink()
    with caplog.at_level(logging.WARNING):
        latest = latest_checkpoint(tmp_path, warn=True)
    assert latest is not None and latest.step == 1
    complete, broken = scan_checkpoints(tmp_path)
    assert [c.step for c in complete] == [1]
    reasons = {b.path.name: b.reason for b in broken}
    assert "expected" in reasons["step-00000003"] and "metadata.json" in reasons["step-00000002"]
    assert (
        "step-00000003 is incomplete" in caplog.text
        and "resuming from step-00000001" in caplog.text
    )
    state = _state(0.0)
    load_checkpoint(latest.path, state)
    assert float(state["model"]["w"][0, 0]) == 1.0


def test_a_missing_shard_is_detected(tmp_path) -> None:
    _save(tmp_path, 5)
    next((tmp_path / "checkpoints" / "step-00000005").glob("*.distcp")).unlink()
    assert latest_checkpoint(tmp_path) is None


def test_retention_keeps_the_last_k_and_every_mth() -> None:
    steps = list(range(10, 110, 10))
    assert steps_to_delete(steps, 2, 50) == [10, 20, 30, 40, 60, 70, 80]
    assert steps_to_delete(steps, None, None) == []
    assert steps_to_delete(steps, 20, None) == []


def test_checkpointer_prunes_and_clears_leftovers_of_interrupted_saves(tmp_path) -> None:
    leftover = tmp_path / "checkpoints" / ".step-00000099.tmp"
    leftover.mkdir(parents=True)
    saver = Checkpointer(tmp_path, CheckpointConfig(keep_last=2, keep_every=3))
    for step in range(1, 8):
        saver.save(step, _state(float(step)), {})
    assert [c.step for c in list_checkpoints(tmp_path)] == [3, 6, 7]
    assert not leftover.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[0] == "step-00000003"


def test_asynchronous_save_snapshots_the_state_when_called(tmp_path) -> None:
    saver = Checkpointer(tmp_path, CheckpointConfig(async_save=True))
    state = _state(1.0)
    saver.save(1, state, {"k": 1})
    state["model"]["w"].fill_(2.0)  # training goes on while the writes run
    saver.wait()
    assert saver.pending_step is None
    loaded = _state(0.0)
    meta = load_checkpoint(latest_checkpoint(tmp_path).path, loaded)
    assert meta["k"] == 1 and torch.equal(loaded["model"]["w"], torch.full((64, 64), 1.0))
