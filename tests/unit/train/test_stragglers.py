"""Straggler arithmetic, the detector's window in one process, and the local compute clock."""

from __future__ import annotations

import time

import pytest

from scifm.train.stragglers import (
    LocalTimer,
    Straggler,
    StragglerDetector,
    find_stragglers,
    local_clock,
)


def test_a_rank_above_factor_times_the_median_is_a_straggler() -> None:
    found = find_stragglers([0.21, 0.84, 0.2, 0.22], ["a", "b", "c", "d"], 2.0)
    median = (0.21 + 0.22) / 2  # even count: the mean of the middle two
    assert found == [Straggler(1, "b", 0.84, median, 0.84 / median)]
    assert found[0].describe() == "rank 1 (host b) 0.84s vs median 0.215s (3.9x)"


def test_exactly_factor_times_the_median_is_not_a_straggler() -> None:
    assert find_stragglers([1.0, 1.0, 2.0], ["a", "b", "c"], 2.0) == []
    assert [s.rank for s in find_stragglers([1.0, 1.0, 2.01], ["a", "b", "c"], 2.0)] == [2]


def test_equal_times_and_a_zero_median_name_nobody() -> None:
    assert find_stragglers([0.3] * 4, list("abcd"), 1.5) == []
    assert find_stragglers([0.0, 0.0, 5.0], list("abc"), 1.5) == []  # median 0: no scale


def test_the_median_resists_the_straggler_itself() -> None:
    # a mean would be dragged up to 1.15 by rank 0 and miss it at factor 3.5; the median not
    found = find_stragglers([4.0, 0.2, 0.2, 0.2], list("abcd"), 3.5)
    assert [(s.rank, s.host, round(s.ratio)) for s in found] == [(0, "a", 20)]


def test_the_window_mean_covers_the_steps_since_the_last_comparison() -> None:
    detector = StragglerDetector(every=3, factor=2.0)
    assert detector.window_mean() == 0.0
    for step, seconds in enumerate((0.1, 0.2, 0.6), start=1):
        detector.record(seconds)
        if step < 3:
            assert detector.check(step) == []
    assert detector.window_mean() == pytest.approx(0.3)
    assert detector.check(3) == []  # one process: nobody to compare with
    assert detector.window_mean() == 0.0  # ...but the window starts again
    detector.record(0.5)
    assert detector.check(4) == [] and detector.window_mean() == 0.5


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_local_timer_counts_own_compute_not_waiting() -> None:
    timer = LocalTimer("cpu")
    with timer:
        time.sleep(0.3)  # as a rank blocked in a gloo collective: idle
    assert timer.seconds < 0.1, timer.seconds
    with timer:
        _burn(0.2)
    with timer:
        _burn(0.1)
    assert 0.29 <= timer.seconds < 0.5, timer.seconds  # blocks add up


def test_the_local_clock_is_cpu_time_on_cpu_and_wall_time_elsewhere() -> None:
    before_cpu, before_wall = local_clock("cpu"), local_clock("meta")
    time.sleep(0.2)
    assert local_clock("cpu") - before_cpu < 0.1
    assert local_clock("meta") - before_wall >= 0.19
