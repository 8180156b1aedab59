"""`scifm eval` agrees with lm-evaluation-harness question by question.

The demo's export is scored on the same offline SciQ and ARC-Easy files by both harnesses:
lm-eval through its own command line and its own task definitions (`scifm eval
--lm-eval-tasks` writes them), scifm through `scifm eval`. Every question's chosen answer,
raw and length-normalised, is the same, and so are the accuracies.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scifm.cli import main
from scifm.eval.lm_eval_tasks import lm_eval_command, write_lm_eval_tasks
from scifm.eval.metrics import argmax

pytestmark = pytest.mark.integration
LIMIT = 60


def _lm_eval_samples(output: Path, task: str) -> list[dict]:
    (path,) = output.glob(f"*/samples_scifm_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(rows, key=lambda r: r["doc_id"])


def test_choices_and_accuracies_equal_lm_eval(demo_run: Path, tmp_path: Path, capsys) -> None:
    tasks = ["sciq", "arc_easy"]
    names = write_lm_eval_tasks(tmp_path / "lm-tasks", tasks)
    command = lm_eval_command(demo_run / "hf", tmp_path / "lm-tasks", names,
                              tmp_path / "lm-out", limit=LIMIT)  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "ours"
    assert main(["eval", str(demo_run / "hf"), "--tasks", ",".join(tasks), "--limit",
                 str(LIMIT), "--out", str(out)]) == 0  # fmt: skip
    assert "near chance" in capsys.readouterr().out  # a tiny model; the table says so
    results = {t["name"]: t for t in json.loads((out / "results.json").read_text())["tasks"]}
    for task in tasks:
        theirs = _lm_eval_samples(tmp_path / "lm-out", task)
        ours = [json.loads(line) for line in (out / "samples" / f"{task}-0shot.jsonl").read_text()
                .splitlines()]  # fmt: skip
        assert len(ours) == len(theirs) == LIMIT
        for mine, other in zip(ours, theirs, strict=True):
            logliks = [float(resp[0]) for resp in other["filtered_resps"]]
            assert mine["gold"] == int(other["target"])
            assert mine["pred"] == argmax(logliks), (task, other["doc_id"])
            assert (mine["acc"], mine["acc_norm"]) == (other["acc"], other["acc_norm"])
            assert max(abs(a - b) for a, b in zip(mine["logliks"], logliks, strict=True)) < 1e-4
        assert results[task]["acc"] == sum(r["acc"] for r in theirs) / LIMIT
        assert results[task]["acc_norm"] == sum(r["acc_norm"] for r in theirs) / LIMIT


def test_eval_of_a_run_directory_uses_its_newest_checkpoint(demo_run: Path, tmp_path,
                                                            capsys) -> None:  # fmt: skip
    out = tmp_path / "run-eval"
    assert main(["eval", str(demo_run), "--tasks", "openbookqa", "--limit", "20", "--out",
                 str(out)]) == 0  # fmt: skip
    assert f"wrote {out}" in " ".join(capsys.readouterr().out.split())
    table = (out / "results.md").read_text()
    assert table.startswith("| task |") and "| openbookqa | 0 | 20 |" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_is_followed_through_its_checkpoints(demo_run: Path, capsys) -> None:
    assert main(["eval", "--run", str(demo_run), "--tasks", "heldout,arc_easy", "--limit",
                 "10", "demo.max_new_tokens=4"]) == 0  # fmt: skip
    series = demo_run / "eval" / "series"
    points = json.loads((series / "series.json").read_text())["points"]
    assert [p["step"] for p in points] == [30, 40]  # the two checkpoints retention kept
    assert points[0]["tokens_seen"] < points[1]["tokens_seen"]
    for point in points:
        assert {"arc_easy/acc", "arc_easy/acc_norm", "heldout/math/bits_per_byte"} <= set(
            point["metrics"])  # fmt: skip
        assert len(point["generations"]) == 3
        assert (demo_run / "eval" / f"step-{point['step']:08d}" / "results.json").is_file()
    assert (series / "series.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 30 |" in (series / "series.md").read_text()
    assert "2 checkpoints" in capsys.readouterr().out
