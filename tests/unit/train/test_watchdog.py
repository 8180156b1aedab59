"""The watchdog's verdict and deadline, and the straggler arithmetic (one process)."""

from __future__ import annotations

import subprocess
import sys
import time

from scifm.train.stragglers import StragglerDetector, find_stragglers
from scifm.train.watchdog import Progress, judge


def _at(rank: int, step: int, phase: int, blocks: int = 0) -> Progress:
    return Progress(rank, f"h{rank}", step, phase, blocks)


def test_ranks_behind_the_furthest_are_stalled_and_missing_ones_silent() -> None:
    reports = {0: _at(0, 7, 1, 3), 1: _at(1, 7, 0), 2: _at(2, 7, 1, 3), 3: _at(3, 7, 1, 2)}
    verdict = judge(reports, world_size=5)
    assert [p.rank for p in verdict.stalled] == [1, 3] and verdict.silent == [4]
    text = verdict.describe()
    assert "stalled ranks: 1 (host h1, step 7, loading data)" in text
    assert "3 (host h3, step 7, in forward/backward, 2 blocks entered)" in text
    assert "did not report" in text and text.endswith(": 4")


def test_everyone_at_the_same_point_names_nobody() -> None:
    verdict = judge({0: _at(0, 3, 2), 1: _at(1, 3, 2)}, world_size=2)
    assert verdict.stalled == [] and "see the stack dumps" in verdict.describe()


def test_an_overrun_step_exits_with_code_3_within_the_deadline(tmp_path) -> None:
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from scifm.train.watchdog import StepWatchdog\n"
        f"dog = StepWatchdog(1.0, dump_dir=Path({str(tmp_path)!r}))\n"
        "dog.start()\n"
        "dog.step_started(1); time.sleep(0.1); dog.step_finished(1)\n"
        "dog.step_started(2)\n"
        "def stuck_in_a_step():\n"
        "    time.sleep(30)\n"
        "stuck_in_a_step()\n"
    )
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    elapsed = time.monotonic() - start
    assert done.returncode == 3, done.stderr
    assert elapsed < 1.0 + 4, elapsed  # the deadline plus interpreter start-up
    assert "watchdog: step 2 exceeded its 1s deadline on rank 0" in done.stderr
    assert "stuck_in_a_step" in (tmp_path / "stacks-rank0.txt").read_text()


def test_stragglers_are_ranks_above_factor_times_the_median() -> None:
    found = find_stragglers([0.2, 0.21, 0.9, 0.19, 0.35], ["a", "b", "c", "d", "e"], 1.5)
    assert [(s.rank, s.host) for s in found] == [(2, "c"), (4, "e")]
    assert found[0].median_s == 0.21 and round(found[0].ratio, 2) == 4.29
    assert found[0].describe() == "rank 2 (host c) 0.9s vs median 0.21s (4.3x)"
    assert find_stragglers([0.0, 0.0], ["a", "b"], 1.5) == []


def test_detector_is_silent_in_one_process() -> None:
    detector = StragglerDetector(every=2, factor=1.5)
    for step in (1, 2, 3, 4):
        detector.record(0.1)
        assert detector.check(step) == []
