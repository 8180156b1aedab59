"""Straggler detection: ranks whose own compute is slower than the median's, by host.

A synchronous job runs at the pace of its slowest rank, and at scale a slow node (a
throttled GPU, a noisy neighbour, a failing link) is common. Step time cannot show which
rank it is: every rank waits in the same collectives, so every rank's step takes equally
long. What differs is each rank's *own* work, measured without the waiting:

- on CPU, the process's CPU time over the step's forward and backward (`time.process_time`):
  a rank blocked in a gloo collective sleeps and accrues almost none, while a slow or
  throttled rank accrues more for the same work;
- on GPUs, the wall time of forward and backward. Under FSDP or TP that includes waits
  inside their collectives, which blurs the signal; the slowest rank still stands out
  because the others wait *for* it only at the end of the step.

The trainer records each step's local time; every `every` steps the ranks' means are
gathered (one all-gather of one float per rank; hosts are gathered once), and rank 0
reports every rank slower than `factor` x the median, by rank and host.
"""

from __future__ import annotations

import socket
import statistics
from dataclasses import dataclass

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

    def check(self, step: int) -> list[Straggler]:
        """A collective every `every` steps (every rank calls it after every step)."""
        if step % self.every or not dist.is_initialized() or dist.get_world_size() == 1:
            return []
        mean = torch.tensor([self._total / max(1, self._count)], dtype=torch.float64)
        self._total, self._count = 0.0, 0
        gathered = [torch.zeros_like(mean) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mean)
        if self._hosts is None:
            self._hosts = [""] * dist.get_world_size()
            dist.all_gather_object(self._hosts, socket.gethostname())
        found = find_stragglers([float(t) for t in gathered], self._hosts, self.factor)
        if found and dist.get_rank() == 0:
            log.warning("stragglers at step %d: %s", step,
                        "; ".join(s.describe() for s in found))  # fmt: skip
        self.last_report = found
        return found
