"""Cross-cutting concerns of the training loop, as callbacks: metrics, checkpoints, progress.

`MetricsCallback` owns what a run reports: the metric sinks (JSONL always; TensorBoard and
W&B when `train.metrics` asks) and the live status line on rank 0, both fed the same
record every `log_every` steps, with MFU from the device's peak (`train.hardware`).

The loop itself only runs steps; everything that watches or persists a run hooks in here.
A callback sees the trainer at the start, after every optimizer step (with that step's
`StepStats`), and at the end (also when the run fails, so files are closed).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from scifm.core.progress import train_progress
from scifm.train.hardware import mfu, peak_flops
from scifm.train.sinks import MetricSink, close_sinks, open_sinks, write_sinks

if TYPE_CHECKING:
    from scifm.train.run import Trainer


@dataclass
class StepStats:
    """What one optimizer step did and where its time went (seconds)."""

    loss: float
    lr: float
    grad_norm: float
    samples: int
    tokens: int
    data_s: float
    compute_s: float
    comm_s: float
    step_s: float = 0.0
    local_s: float = 0.0
    """This rank's own compute (CPU seconds on CPU), the straggler detector's input."""
    bad: bool = False
    """The anomaly policy handled this step (its update was not applied)."""


class Callback:
    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class _Window:
    """Sums over the steps since the last record."""

    def __init__(self) -> None:
        self.steps = 0
        self.good_steps = 0
        self.totals = dict.fromkeys(("loss", "tokens", "data_s", "compute_s", "comm_s",
                                     "step_s"), 0.0)  # fmt: skip

    def add(self, stats: StepStats) -> None:
        self.steps += 1
        self.good_steps += not stats.bad
        for key in self.totals:
            if key != "loss" or not stats.bad:  # a NaN must not hide the good steps' loss
                self.totals[key] += getattr(stats, key)

    def mean(self, key: str) -> float:
        if key == "loss":
            return self.totals[key] / self.good_steps if self.good_steps else float("nan")
        return self.totals[key] / max(1, self.steps)


class MetricsCallback(Callback):
    """Records every `log_every` steps (and the last) to the sinks and the status line."""

    def __init__(self) -> None:
        self.sinks: list[MetricSink] = []
        self.window = _Window()
        self._stack = contextlib.ExitStack()
        self._line: Any = None
        self._peak: float | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        cfg = trainer.cfg.metrics
        self._line = self._stack.enter_context(
            train_progress(trainer.total_steps, trainer.state.step, enabled=cfg.progress)
        )
        self._peak = peak_flops(trainer.device, trainer.compute_dtype)
        if trainer.is_main:
            self.sinks = open_sinks(cfg, trainer.run_dir, trainer.state.step,
                                    trainer.run_config())  # fmt: skip

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        self.window.add(stats)
        step = trainer.state.step
        self._line.step(step, loss=stats.loss, lr=stats.lr)
        if step % trainer.cfg.log_every and step != trainer.total_steps:
            return
        record = _record(trainer, stats, self.window)
        record["mfu"] = mfu(record["achieved_flops"], self._peak, trainer.world_size)
        write_sinks(self.sinks, record)
        self._line.log(record)
        self.window = _Window()

    def on_train_end(self, trainer: Trainer) -> None:
        try:
            close_sinks(self.sinks)
        finally:
            self.sinks = []
            self._stack.close()


def _record(trainer: Trainer, stats: StepStats, window: _Window) -> dict[str, Any]:
    elapsed = window.totals["step_s"]
    tokens_per_s = window.totals["tokens"] / elapsed if elapsed > 0 else 0.0
    return {
        "step": trainer.state.step,
        "tokens_seen": trainer.state.tokens_seen,
        "loss": round(window.mean("loss"), 6),
        "lr": stats.lr,
        "grad_norm": round(stats.grad_norm, 6),
        "batch_size": stats.samples,
        "tokens_per_s": round(tokens_per_s, 1),
        "achieved_flops": round(tokens_per_s * trainer.flops_per_token, 1),
        "step_time_s": round(window.mean("step_s"), 4),
        "data_wait_s": round(window.mean("data_s"), 5),
        "compute_s": round(window.mean("compute_s"), 4),
        "comm_wait_s": round(window.mean("comm_s"), 5),
        "memory_mb": _memory_mb(trainer.device),
        "bad_steps": trainer.state.bad_steps,
        "skipped_steps": trainer.state.skipped_steps,
        "rollbacks": trainer.state.rollbacks,
    }


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class CheckpointCallback(Callback):
    """A checkpoint every `checkpoint.every` steps (the final one is the trainer's)."""

    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None:
        every, step = trainer.cfg.checkpoint.every, trainer.state.step
        if every and step % every == 0 and trainer.saved_step != step:
            trainer.save()


def default_callbacks() -> list[Callback]:
    return [MetricsCallback(), CheckpointCallback()]
