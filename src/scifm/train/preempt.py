"""Save before exiting when the scheduler says the job will end (SIGTERM, SIGUSR1, ...).

Slurm (`--signal=USR1@120`), PBS and Kubernetes warn a job with a signal before killing
it. The handler only records the signal; the training loop finishes its current step,
every rank agrees (one of them may have been signalled alone), saves a checkpoint and
exits with 128 + the signal number, so a restart resumes exactly where it stopped.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from scifm.core.errors import ScifmError


class Preempted(ScifmError):
    """The run saved a checkpoint and stopped because a signal asked it to."""

    def __init__(self, signum: int, checkpoint: str) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after saving {checkpoint}; run the same command "
                         "again to resume from it")  # fmt: skip
        self.exit_code = 128 + signum


class SignalFlag:
    """Installs handlers for `names` (main thread only) that remember the first signal."""

    def __init__(self, names: list[str]) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._names = names

    def __enter__(self) -> SignalFlag:
        if threading.current_thread() is threading.main_thread():
            for name in self._names:
                signum = signal.Signals[name]
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
