"""Progress bars for long work, shown on rank 0 only.

`track(total, description)` is a context manager yielding an object with `advance(n)`.
On other ranks, or with SCIFM_PROGRESS=0, it yields a no-op so callers never branch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from scifm.core.dist import detect_launch
from scifm.core.logging import console


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
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
