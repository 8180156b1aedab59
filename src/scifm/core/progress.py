"""Progress bars for long work, shown on rank 0 only.

`track(total, description)` is a context manager yielding an object with `advance(n)`.
On other ranks, or with SCIFM_PROGRESS=0, it yields a no-op so callers never branch.

`train_progress(total_steps, start_step)` is the training run's status line: step/total,
loss, tokens/s, MFU (or achieved FLOP/s where the peak is unknown), learning rate and ETA.
On a terminal it is a live rich line under the logs; when stderr is not a terminal (CI and
batch-job logs) it prints one plain line per metrics record instead, never a bar.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from scifm.core.dist import detect_launch
from scifm.core.logging import console as shared_console


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, **fields: object) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)

    def update(self, **fields: object) -> None:
        self._progress.update(self._task, **fields)


def progress_enabled() -> bool:
    return detect_launch().rank == 0 and os.environ.get("SCIFM_PROGRESS", "1") != "0"


@contextlib.contextmanager
def track(total: float | None, description: str) -> Iterator[_Bar | _Silent]:
    """Show one progress bar for `description` until the block exits."""
    if not progress_enabled():
        yield _Silent()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=shared_console, transient=False) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))


def _si(value: float, unit: str) -> str:
    """3 significant digits with an SI prefix: 45200 tok/s -> '45.2k tok/s'."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix} {unit}"
    return f"{value:.3g} {unit}"


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_train_status(
    step: int, total: int, fields: Mapping[str, Any], eta_s: float | None
) -> str:
    """`step 120/1000 | loss 3.214 | 45.2k tok/s | MFU 41.3% | lr 3.00e-04 | ETA 0:12:31`.

    `fields` is a metrics record; missing or None entries are left out. MFU (a fraction)
    wins over `achieved_flops` (FLOP/s), shown only when MFU is unknown.
    """
    parts = [f"step {step}/{total}"]
    loss = fields.get("loss")
    if isinstance(loss, int | float):
        parts.append(f"loss {loss:.3f}" if math.isfinite(loss) else f"loss {loss}")
    if fields.get("tokens_per_s") is not None:
        parts.append(_si(float(fields["tokens_per_s"]), "tok/s"))
    if fields.get("mfu") is not None:
        parts.append(f"MFU {100 * float(fields['mfu']):.1f}%")
    elif fields.get("achieved_flops") is not None:
        parts.append(_si(float(fields["achieved_flops"]), "FLOP/s"))
    if fields.get("lr") is not None:
        parts.append(f"lr {float(fields['lr']):.2e}")
    if eta_s is not None:
        parts.append(f"ETA {_clock(eta_s)}")
    return " | ".join(parts)


class TrainProgress:
    """The status line of one training run; see `train_progress`."""

    def __init__(
        self,
        total_steps: int,
        start_step: int,
        console: Console,
        description: str = "train",
    ) -> None:
        self.total_steps, self.start_step = total_steps, start_step
        self.step_now = start_step
        self.fields: dict[str, Any] = {}
        self.console = console
        self.live = console.is_terminal and not console.is_dumb_terminal
        """True: a redrawn rich line (a terminal); False: a plain line per metrics record."""
        self.description = description
        self._started = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def eta_s(self) -> float | None:
        """Seconds to the last step at this session's average pace (None before a step)."""
        done = self.step_now - self.start_step
        if done <= 0:
            return None
        elapsed = time.perf_counter() - self._started
        return elapsed / done * max(0, self.total_steps - self.step_now)

    def status(self) -> str:
        return format_train_status(self.step_now, self.total_steps, self.fields, self.eta_s())

    def step(self, step: int, **fields: Any) -> None:
        """After each optimizer step: move the line (e.g. `loss=`, `lr=` of this step)."""
        self.step_now = step
        self.fields.update({k: v for k, v in fields.items() if v is not None})
        self._refresh()

    def log(self, record: Mapping[str, Any]) -> None:
        """After each metrics record: take its throughput/MFU; off a terminal, print a line."""
        self.step_now = int(record.get("step", self.step_now))
        self.fields.update({k: v for k, v in record.items() if v is not None})
        if self.live:
            self._refresh()
        else:
            line = f"{self.description} {self.status()}"
            self.console.print(line, soft_wrap=True, markup=False, highlight=False)

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.step_now, status=self.status())

    @contextlib.contextmanager
    def _shown(self) -> Iterator[TrainProgress]:
        if not self.live:
            yield self
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[status]}", markup=False),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            self._progress = progress
            self._task = progress.add_task(
                self.description,
                total=self.total_steps,
                completed=self.start_step,
                status=self.status(),
            )
            try:
                yield self
            finally:
                self._refresh()
                self._progress = self._task = None


class _SilentTrain:
    def step(self, step: int, **fields: Any) -> None:
        pass

    def log(self, record: Mapping[str, Any]) -> None:
        pass


@contextlib.contextmanager
def train_progress(
    total_steps: int,
    start_step: int = 0,
    *,
    enabled: bool = True,
    description: str = "train",
    console: Console | None = None,
) -> Iterator[TrainProgress | _SilentTrain]:
    """The training status line, on rank 0 while the block runs.

    Call `.step(step, loss=..., lr=...)` after every optimizer step and `.log(record)` with
    every metrics record (keys `step`, `loss`, `lr`, `tokens_per_s`, `mfu` or
    `achieved_flops`). With `enabled=False`, on other ranks or with SCIFM_PROGRESS=0 it
    yields a no-op. `console` defaults to the shared stderr console of the logs.
    """
    if not (enabled and progress_enabled()):
        yield _SilentTrain()
        return
    line = TrainProgress(total_steps, start_step, console or shared_console, description)
    with line._shown():
        yield line
