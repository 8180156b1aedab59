"""Metric arithmetic: multiple-choice accuracy as lm-evaluation-harness defines it, means
with standard errors, and chance levels.

- `acc`: the choice with the highest log-likelihood is the gold one (ties: the first).
- `acc_norm`: the same after dividing each log-likelihood by its choice's length in
  characters (the choice text itself, without the delimiter before it), which stops longer
  answers being penalised for their extra tokens.
- Standard error of a mean over n questions: sqrt(sample variance / n), sample variance
  with n - 1 in the denominator (0 for one question).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def argmax(values: Sequence[float]) -> int:
    """The index of the largest value; the first one on a tie."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choice_outcome(logliks: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, int]:
    """The predicted choice, raw and length-normalised, and whether each is right."""
    normalised = [ll / max(1, len(c)) for ll, c in zip(logliks, choices, strict=True)]
    pred, pred_norm = argmax(logliks), argmax(normalised)
    return {"pred": pred, "pred_norm": pred_norm, "acc": int(pred == gold),
            "acc_norm": int(pred_norm == gold)}  # fmt: skip


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def chance(choice_counts: Sequence[int]) -> float:
    """Expected accuracy of picking uniformly at random."""
    return sum(1 / k for k in choice_counts) / len(choice_counts)
