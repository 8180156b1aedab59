"""Straggler detection: ranks whose own compute is slower than the median's, by host.

A synchronous job runs at the pace of its slowest rank, and at scale a slow node (a
throttled GPU, a noisy neighbour, a failing link) is common. Step time cannot show which
rank it is: every rank waits in the same collectives, so every rank's step takes equally
long. What differs is each rank's *own* work, measured without the waiting (`LocalTimer`,
`local_clock`):

- on CPU, the process's CPU time (`time.process_time`, all threads of the process): a rank
  blocked in a gloo collective sleeps and accrues almost none, while a slow or throttled
  rank accrues more for the same work. Other busy threads of the process (data workers
  that are threads, not processes) count too;
- on GPUs and XPUs, wall time, with the device synchronized when a timed block ends.
  Caveat: under FSDP or TP the collectives inside forward and backward are then included,
  waits for the slow rank among them, which blurs the signal; the slowest rank still stands
  out, because the others wait *for* it and it waits for nobody.

The trainer records each step's local time; every `every` steps the ranks' means over the
window are gathered (one all-gather of one float64 per rank; hosts are gathered once), and
rank 0 reports every rank slower than `factor` x the median, by rank and host:

    stragglers at step 40: rank 3 (host x1000c0s3b0n0) 0.84s vs median 0.21s (4.0x)
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass
from types import TracebackType

import torch
import torch.distributed as dist

from scifm.core.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Straggler:
    rank: int
    host: str
    seconds: float
    median_s: float
    ratio: float

    def describe(self) -> str:
        return (f"rank {self.rank} (host {self.host}) {self.seconds:.3g}s vs median "
                f"{self.median_s:.3g}s ({self.ratio:.1f}x)")  # fmt: skip


def find_stragglers(times: list[float], hosts: list[str], factor: float) -> list[Straggler]:
    """Ranks whose time exceeds `factor` x the median of all ranks' times."""
    median = statistics.median(times)
    if median <= 0:
        return []
    return [Straggler(rank, hosts[rank], t, median, t / median)
            for rank, t in enumerate(times) if t > factor * median]  # fmt: skip


def local_clock(device: str | torch.device = "cpu") -> float:
    """Now, on this rank's own compute clock: process CPU seconds on CPU, else wall seconds."""
    kind = torch.device(device).type
    return time.process_time() if kind == "cpu" else time.perf_counter()


class LocalTimer:
    """This rank's own compute time over one or more `with` blocks (they add up).

    `with timer:` around forward and backward of each micro-batch leaves the collectives in
    between out. On an accelerator the device is synchronized when a block ends, so the
    time covers the work queued inside it.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self._start: float | None = None

    def __enter__(self) -> LocalTimer:
        self._start = local_clock(self.device)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        if self.device.type != "cpu":
            getattr(torch, self.device.type).synchronize(self.device)
        if self._start is not None:
            self.seconds += local_clock(self.device) - self._start
        self._start = None


class StragglerDetector:
    """Collects this rank's local step times; compares all ranks every `every` steps."""

    def __init__(self, every: int, factor: float) -> None:
        self.every, self.factor = every, factor
        self._total, self._count = 0.0, 0
        self._hosts: list[str] | None = None
        self.last_report: list[Straggler] = []

    def record(self, local_s: float) -> None:
        self._total += local_s
        self._count += 1

    def window_mean(self) -> float:
        """Mean local time of the steps recorded since the last comparison (0: none)."""
        return self._total / self._count if self._count else 0.0

    def check(self, step: int) -> list[Straggler]:
        """A collective every `every` steps (every rank calls it after every step): the
        stragglers of the window just ended, logged on rank 0; [] on other steps and in one
        process."""
        if step % self.every:
            return []
        mean = self.window_mean()
        self._total, self._count = 0.0, 0
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return []
        times = torch.tensor([mean], dtype=torch.float64)
        gathered = [torch.zeros_like(times) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, times)
        if self._hosts is None:
            self._hosts = [""] * dist.get_world_size()
            dist.all_gather_object(self._hosts, socket.gethostname())
        found = find_stragglers([float(t) for t in gathered], self._hosts, self.factor)
        if found and dist.get_rank() == 0:
            log.warning("stragglers at step %d: %s", step,
                        "; ".join(s.describe() for s in found))  # fmt: skip
        self.last_report = found
        return found
