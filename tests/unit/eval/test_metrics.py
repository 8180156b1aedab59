"""Metric arithmetic on cases worked by hand."""

from __future__ import annotations

import math

import pytest

from scifm.eval.metrics import argmax, chance, choice_outcome, mean_stderr


def test_acc_and_acc_norm_differ_when_length_decides() -> None:
    # raw: -4.0 ("mitochondria", 12 chars) beats -4.5 ("cell", 4 chars);
    # per character: -4.0 / 12 = -0.333 beats -4.5 / 4 = -1.125, and -6.0 / 23 = -0.261
    # ("the endoplasmic reticul", 23 chars) beats both
    choices = ["cell", "mitochondria", "the endoplasmic reticul"]
    outcome = choice_outcome([-4.5, -4.0, -6.0], choices, gold=2)
    assert outcome == {"pred": 1, "pred_norm": 2, "acc": 0, "acc_norm": 1}


def test_ties_go_to_the_first_choice_as_in_numpy_argmax() -> None:
    assert argmax([-1.0, -0.5, -0.5]) == 1
    assert choice_outcome([-2.0, -2.0], ["ab", "cd"], gold=1)["acc"] == 0


def test_mean_and_standard_error_by_hand() -> None:
    # values 1, 0, 1, 1: mean 0.75; sample variance (0.0625 * 3 + 0.5625) / 3 = 0.25;
    # stderr sqrt(0.25 / 4) = 0.25
    mean, stderr = mean_stderr([1, 0, 1, 1])
    assert mean == 0.75 and math.isclose(stderr, 0.25)
    assert mean_stderr([1]) == (1.0, 0.0)
    with pytest.raises(ValueError):
        mean_stderr([])


def test_chance_averages_one_over_the_number_of_choices() -> None:
    assert math.isclose(chance([4, 4, 2]), (0.25 + 0.25 + 0.5) / 3)
