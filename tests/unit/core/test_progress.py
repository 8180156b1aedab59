"""Progress output: the training status line, live on a terminal and plain in CI logs."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from scifm.core import progress
from scifm.core.progress import format_train_status, track, train_progress


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=200, color_system=None)
    return console, buffer


def _record(step: int, **extra) -> dict:
    speed = {"tokens_per_s": 45210.0, "achieved_flops": 1.234e13}
    return {"step": step, "loss": 3.21449, "lr": 3e-4, **speed, **extra}


def test_status_text_prefers_mfu_and_skips_missing_fields() -> None:
    text = format_train_status(120, 1000, _record(120, mfu=0.4131), eta_s=751)
    expected = "step 120/1000 | loss 3.214 | 45.2k tok/s | MFU 41.3% | lr 3.00e-04 | ETA 0:12:31"
    assert text == expected
    assert "12.3T FLOP/s" in format_train_status(120, 1000, _record(120, mfu=None), None)
    assert format_train_status(0, 10, {}, None) == "step 0/10"
    assert "loss nan" in format_train_status(1, 10, {"loss": float("nan")}, None)


def test_disabled_by_env_config_or_rank(monkeypatch) -> None:
    console, buffer = _console(terminal=False)
    monkeypatch.setenv("SCIFM_PROGRESS", "0")
    with train_progress(10, console=console) as line:
        line.step(1, loss=1.0)
        line.log(_record(1))
    monkeypatch.setenv("SCIFM_PROGRESS", "1")
    with train_progress(10, enabled=False, console=console) as line:
        line.log(_record(1))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with train_progress(10, console=console) as line:
        line.log(_record(1))
    assert buffer.getvalue() == ""


def test_plain_line_per_record_when_not_a_terminal(monkeypatch) -> None:
    monkeypatch.setenv("SCIFM_PROGRESS", "1")
    console, buffer = _console(terminal=False)
    with train_progress(40, start_step=10, console=console) as line:
        for step in range(11, 31):
            line.step(step, loss=2.0, lr=1e-3)  # no output between records
            if step % 10 == 0:
                line.log(_record(step, mfu=0.25))
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2 and all("━" not in x for x in lines)
    assert lines[0].startswith("train step 20/40 | loss 3.214 | 45.2k tok/s | MFU 25.0%")
    assert lines[1].startswith("train step 30/40") and "ETA 0:00:0" in lines[1]


def test_live_line_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setenv("SCIFM_PROGRESS", "1")
    console, buffer = _console(terminal=True)
    with train_progress(4, console=console) as line:
        assert line.live
        for step in range(1, 5):
            line.step(step, loss=5.0 - step, lr=1e-3)
        line.log(_record(4))
    shown = buffer.getvalue()
    assert "step 4/4" in shown and "12.3T FLOP/s" in shown and "ETA 0:00:00" in shown


@pytest.mark.parametrize("enabled", ["0", "1"])
def test_track_still_works(monkeypatch, enabled) -> None:
    monkeypatch.setenv("SCIFM_PROGRESS", enabled)
    monkeypatch.setattr(progress, "shared_console", _console(terminal=False)[0])
    with track(3, "work") as bar:
        bar.advance(3)
        bar.update(description="done")
