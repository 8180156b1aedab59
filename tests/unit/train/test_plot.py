"""`scifm plot RUN_DIR`: one PNG of loss, throughput, lr and grad norm against tokens seen."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from scifm.core.errors import ScifmError
from scifm.train.plot import plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def _write_run(run: Path, records: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def _records(steps: int, keys: tuple[str, ...]) -> list[dict]:
    records = []
    for s in range(1, steps + 1):
        full = {"step": s, "tokens_seen": 4096 * s, "loss": 8.0 / s**0.3}
        full.update(tokens_per_s=4000.0 + s, lr=3e-3 * min(1.0, s / 5), grad_norm=2.0 / s)
        records.append({k: v for k, v in full.items() if k in keys})
    return records


ALL = ("step", "tokens_seen", "loss", "tokens_per_s", "lr", "grad_norm")


def test_four_panels_to_run_loss_png(tmp_path) -> None:
    run = _write_run(tmp_path / "run", _records(30, ALL))
    path = plot_run(run)
    assert path == run / "loss.png"
    assert _png_size(path) == (1000, 800)
    assert not list(run.glob("*.tmp*")), "the PNG is written atomically"


def test_older_runs_without_lr_and_grad_norm_skip_those_panels(tmp_path) -> None:
    old = ("step", "tokens_seen", "loss", "tokens_per_s")
    run = _write_run(tmp_path / "old", _records(5, old))
    assert _png_size(plot_run(run, tmp_path / "out.png")) == (1000, 400)
    only_loss = _write_run(tmp_path / "loss-only", _records(5, ("step", "loss")))
    assert _png_size(plot_run(only_loss)) == (500, 400)  # against steps: no tokens_seen
    three = _write_run(tmp_path / "three", _records(5, (*old, "lr")))
    assert _png_size(plot_run(three)) == (1000, 800)


def test_a_torn_last_line_is_ignored(tmp_path) -> None:
    run = _write_run(tmp_path / "run", _records(3, ALL))
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "lo')
    assert _png_size(plot_run(run)) == (1000, 800)


def test_bad_run_directories_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ScifmError, match="not a directory"):
        plot_run(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScifmError, match="not a directory"):
        plot_run(tmp_path / "file")
    with pytest.raises(ScifmError, match="no metrics.jsonl records"):
        plot_run(tmp_path)
    _write_run(tmp_path / "odd", [{"step": 1, "note": "no numbers to draw"}])
    with pytest.raises(ScifmError, match="no records with any of loss"):
        plot_run(tmp_path / "odd")
