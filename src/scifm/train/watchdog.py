"""Hang detection: a step that overruns its deadline ends the job, naming the stalled ranks.

One rank that stops making progress (a dead GPU, a deadlocked data worker, a filesystem
that stopped answering) leaves every other rank waiting inside a collective; AuroraGPT saw
such a job sit silent for 5 hours at 512 nodes. A collective timeout eventually ends it,
but names nobody. Here each rank runs a watchdog thread. When the current step has run
longer than its deadline, the watchdog:

1. writes every thread's Python stack to stderr and to `RUN/stacks-rank{r}.txt`;
2. takes part in a monitored barrier over the job's rendezvous store (not a collective: the
   main thread may be stuck inside one). Each rank that fires publishes how far it got in
   the step: its phase (loading data, inside forward/backward, arrived at the step's
   reductions) and how many transformer blocks it has entered (forward pre-hooks placed
   before FSDP's own, counted in memory at no cost).
   After a short grace, ranks behind the furthest one are the stalled ones; the others are
   waiting for them in a collective. A rank that does not report at all is stuck outside
   any step, or frozen;
3. logs one line naming them (rank, host, where they were) and exits with code 3 at once
   (`os._exit`: a hung collective cannot be unwound), so the launcher restarts the job
   from its last checkpoint.

When every rank reports the same point (a hang inside a tensor-parallel collective, say)
nobody is singled out and the stack dumps tell the rest.
"""

from __future__ import annotations

import faulthandler
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from scifm.core.logging import get_logger

log = get_logger(__name__)

_KEY = "scifm/watchdog"
_PHASES = ("loading data", "in forward/backward", "at the step's reductions")
_POLL_S = 0.2


@dataclass(frozen=True)
class Progress:
    """How far one rank got in a step; ordered, so the stalled ranks are the smallest."""

    rank: int
    host: str
    step: int
    phase: int
    blocks: int

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.step, self.phase, self.blocks)

    def describe(self) -> str:
        where = f"step {self.step}, {_PHASES[self.phase]}"
        if self.phase == 1:
            where += f", {self.blocks} blocks entered"
        return f"{self.rank} (host {self.host}, {where})"


@dataclass(frozen=True)
class Verdict:
    stalled: list[Progress]
    silent: list[int]

    def describe(self) -> str:
        parts = []
        if self.stalled:
            parts.append("stalled ranks: " + ", ".join(p.describe() for p in self.stalled))
        if self.silent:
            parts.append("ranks that did not report (stuck outside the step, or frozen): "
                         + ", ".join(map(str, self.silent)))  # fmt: skip
        return "; ".join(parts) or "every rank reported the same point: see the stack dumps"


def judge(reports: dict[int, Progress], world_size: int) -> Verdict:
    """Ranks behind the furthest report are stalled; missing reports are silent ranks."""
    silent = [rank for rank in range(world_size) if rank not in reports]
    if not reports:
        return Verdict([], silent)
    furthest = max(p.position for p in reports.values())
    stalled = sorted((p for p in reports.values() if p.position < furthest),
                     key=lambda p: p.rank)  # fmt: skip
    return Verdict(stalled, silent)


class StepWatchdog:
    """Per-rank deadline on each optimizer step; see the module docstring."""

    def __init__(self, deadline_s: float, *, first_deadline_s: float | None = None,
                 exit_code: int = 3, dump_dir: Path | None = None,
                 grace_s: float = 3.0) -> None:  # fmt: skip
        self.deadline_s = deadline_s
        self.first_deadline_s = first_deadline_s or deadline_s
        self.exit_code, self.dump_dir, self.grace_s = exit_code, dump_dir, grace_s
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._step: int | None = None
        self._phase = 0
        self._blocks = 0
        self._started_at = 0.0
        self._steps_done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def watch(self, models: list[torch.nn.Module], blocks: list[torch.nn.Module]) -> None:
        """Mark entering the model and each block; prepended, so before FSDP's all-gathers."""
        for model in models:
            self._hooks.append(model.register_forward_pre_hook(self._computing, prepend=True))
        for block in blocks:
            self._hooks.append(block.register_forward_pre_hook(self._entered, prepend=True))

    def _computing(self, module: torch.nn.Module, args: object) -> None:
        self._phase = max(self._phase, 1)

    def _entered(self, module: torch.nn.Module, args: object) -> None:
        self._blocks += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="scifm-watchdog", daemon=True)
        self._thread.start()

    def step_started(self, step: int) -> None:
        with self._lock:
            self._step, self._phase, self._blocks = step, 0, 0
            self._started_at = time.monotonic()

    def arrived(self, step: int) -> None:
        self._phase = 2

    def step_finished(self, step: int) -> None:
        with self._lock:
            self._step = None
            self._steps_done += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _POLL_S + 1)
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _overrun(self) -> tuple[int, float] | None:
        with self._lock:
            if self._step is None:
                return None
            deadline = self.first_deadline_s if self._steps_done == 0 else self.deadline_s
            if time.monotonic() - self._started_at <= deadline:
                return None
            return self._step, deadline

    def _watch(self) -> None:
        while not self._stop.wait(_POLL_S):
            overrun = self._overrun()
            if overrun is not None:
                self._fire(*overrun)

    def _fire(self, step: int, deadline: float) -> None:
        self._dump_stacks()
        mine = Progress(self.rank, self.host, step, self._phase, self._blocks)
        try:
            verdict = self._monitored_barrier(mine)
            detail = verdict.describe()
        except Exception as err:  # the store itself is gone: still exit
            detail = f"the rendezvous store did not answer ({err})"
        message = (f"watchdog: step {step} exceeded its {deadline:g}s deadline on rank "
                   f"{self.rank}; {detail}; exiting with code {self.exit_code} so the "
                   "launcher restarts from the last checkpoint")  # fmt: skip
        log.error(message)
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        os._exit(self.exit_code)

    def _dump_stacks(self) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            with open(self.dump_dir / f"stacks-rank{self.rank}.txt", "w") as file:
                faulthandler.dump_traceback(file=file, all_threads=True)

    def _monitored_barrier(self, mine: Progress) -> Verdict:
        """Publish this rank's progress, collect the others' for up to `grace_s`."""
        if not dist.is_initialized() or self.world_size == 1:
            return judge({mine.rank: mine}, 1)
        store = dist.distributed_c10d._get_default_store()
        prefix = f"{_KEY}/{mine.step}"
        store.set(f"{prefix}/{self.rank}", json.dumps(mine.__dict__))
        keys = [f"{prefix}/{rank}" for rank in range(self.world_size)]
        end = time.monotonic() + self.grace_s
        while not store.check(keys) and time.monotonic() < end:
            time.sleep(_POLL_S)
        reports = {}
        for rank, key in enumerate(keys):
            if store.check([key]):
                reports[rank] = Progress(**json.loads(store.get(key)))
        return judge(reports, self.world_size)
