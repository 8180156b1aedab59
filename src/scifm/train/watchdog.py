"""Hang detection: a step that overruns its deadline ends the job, naming the stalled ranks.

One rank that stops making progress (a dead GPU, a deadlocked data worker, a filesystem
that stopped answering) leaves every other rank waiting inside a collective; AuroraGPT saw
such a job sit silent for 5 hours at 512 nodes. A collective timeout eventually ends it,
but names nobody. Here each rank runs a watchdog thread, and every rank keeps its progress
in the job's rendezvous store (the TCPStore torchrun or `init_process_group` created; any
thread can read it without taking part in a collective):

- at `start()`, its hostname;
- at `arrived(step)`, the step whose sync point it reached: its local work is done and it
  is entering the step's blocking collectives (the loss all-reduce). One `store.set` per
  step on the main thread. A rank blocked in a collective waiting for others has arrived.

When the current step has run longer than its deadline, the watchdog:

1. writes every thread's Python stack to stderr and to `RUN/stacks-rank{r}.txt`;
2. reads the arrivals: ranks that have not reached this step's sync point did not arrive
   (`stalled_ranks`). Under FSDP the ranks waiting for a stalled one are blocked in an
   all-gather inside forward, before their own sync point, so arrivals alone can name
   everybody. Hence also a monitored barrier: each rank whose deadline passed publishes how
   far it got in the step (loading data, inside forward/backward with the number of
   transformer blocks entered, counted by forward pre-hooks placed before FSDP's own, or at
   the step's reductions). After a short grace, ranks behind the furthest one are the
   stalled ones; a rank that does not report at all is stuck outside any step, or frozen;
3. logs one line naming them (rank, host, where they were) and exits with code 3 at once
   (`os._exit`: a hung collective cannot be unwound), so the launcher restarts the job
   from its last checkpoint. Every rank's watchdog may fire; each says the same.

Store reads run in a helper thread with a short time limit (a store whose server froze, or
whose client lock is held by a main thread stuck in `store.set`, would otherwise block the
watchdog too); an unreachable store is reported as such and the process still exits, at
most `grace_s + 2 * store_timeout_s` after the deadline. A main thread that holds the GIL
keeps the watchdog thread from running at all: for that, a backstop in C
(`faulthandler.dump_traceback_later(exit=True)`) dumps the stacks and exits with code 1
once that whole budget has passed as well.
"""

from __future__ import annotations

import faulthandler
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from scifm.core.logging import get_logger

log = get_logger(__name__)

_KEY = "scifm/watchdog"
_PHASES = ("loading data", "in forward/backward", "at the step's reductions")
_POLL_S = 0.2
_LISTED = 8
"""Ranks named in one line at most (a 512-node job may have thousands waiting)."""
_T = TypeVar("_T")


def _host_key(rank: int) -> str:
    return f"{_KEY}/host/{rank}"


def _arrival_key(rank: int) -> str:
    return f"{_KEY}/arrived/{rank}"


def _progress_key(step: int, rank: int) -> str:
    return f"{_KEY}/progress/{step}/{rank}"


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


@dataclass(frozen=True)
class StalledRank:
    """A rank that has not reached the sync point of the step being judged."""

    rank: int
    host: str
    last_step: int
    """The last step whose sync point this rank reached; -1: none since its watchdog started."""

    def describe(self) -> str:
        last = (f"last arrived at step {self.last_step}" if self.last_step >= 0
                else "arrived at no step yet")  # fmt: skip
        return f"{self.rank} (host {self.host}, {last})"


def within(timeout_s: float, read: Callable[[], _T]) -> _T:
    """`read()` in a daemon thread; TimeoutError if it has not returned after `timeout_s`."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = read()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="scifm-watchdog-store", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _read_present(store: dist.Store, keys: list[str], first: int = 0) -> dict[int, bytes]:
    """The values of the keys that exist, by position; never waits for a missing key.

    One `check` and one `multi_get` when all exist; halves around the missing ones (a few
    round trips each) instead of one check per key, which a thousand ranks would feel."""
    if not keys:
        return {}
    if store.check(keys):
        return {first + i: value for i, value in enumerate(store.multi_get(keys))}
    if len(keys) == 1:
        return {}
    half = len(keys) // 2
    return {**_read_present(store, keys[:half], first),
            **_read_present(store, keys[half:], first + half)}  # fmt: skip


def stalled_ranks(store: dist.Store, world_size: int, step: int,
                  timeout_s: float) -> list[StalledRank]:  # fmt: skip
    """Ranks that have not arrived at `step`'s sync point, from the keys `StepWatchdog`
    keeps in `store`. Raises TimeoutError when the store does not answer in `timeout_s`."""

    def read() -> list[StalledRank]:
        ranks = range(world_size)
        arrived = _read_present(store, [_arrival_key(r) for r in ranks])
        hosts = _read_present(store, [_host_key(r) for r in ranks])
        last = {r: int(arrived[r]) if r in arrived else -1 for r in ranks}
        return [StalledRank(r, hosts[r].decode() if r in hosts else "?", last[r])
                for r in ranks if last[r] < step]  # fmt: skip

    return within(timeout_s, read)


def describe_arrivals(late: list[StalledRank], world_size: int, step: int) -> str:
    if not late:
        return f"every rank arrived at step {step}'s reductions (the hang is in or after them)"
    if len(late) == world_size > 1:
        return f"no rank arrived at step {step}'s reductions"
    return "ranks that did not arrive: " + _listed([s.describe() for s in late])


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
            parts.append("stalled ranks: " + _listed([p.describe() for p in self.stalled]))
        if self.silent:
            parts.append("ranks that did not report (stuck outside the step, or frozen): "
                         + _listed([str(r) for r in self.silent]))  # fmt: skip
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
    """Per-rank deadline on each optimizer step; see the module docstring.

    Call `start()` after the process group exists, then per step `step_started(n)`,
    `arrived(n)` before the step's first blocking collective, and `step_finished(n)`;
    `stop()` at the end. Time between `step_finished` and the next `step_started`
    (checkpoint saves, evaluation) is not under the deadline.
    """

    def __init__(self, deadline_s: float, *, first_deadline_s: float | None = None,
                 exit_code: int = 3, dump_dir: Path | None = None, grace_s: float = 3.0,
                 store_timeout_s: float = 2.0) -> None:  # fmt: skip
        self.deadline_s = deadline_s
        self.first_deadline_s = first_deadline_s or deadline_s
        self.exit_code, self.dump_dir = exit_code, dump_dir
        self.grace_s, self.store_timeout_s = grace_s, store_timeout_s
        self.rank, self.world_size = 0, 1
        self.host = socket.gethostname()
        self._store: dist.Store | None = None
        self._lock = threading.Lock()
        self._step: int | None = None
        self._phase = 0
        self._blocks = 0
        self._started_at = 0.0
        self._steps_done = 0
        self._store_failed = False
        self._last_arrival: int | None = None
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
        """Publish this rank's hostname and start the watchdog thread."""
        if dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            if self.world_size > 1:
                self._store = dist.distributed_c10d._get_default_store()
                self._publish(_host_key(self.rank), self.host)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="scifm-watchdog", daemon=True)
        self._thread.start()

    def step_started(self, step: int) -> None:
        if self._last_arrival is None or step <= self._last_arrival:  # a (re)start, a rollback
            self._arrive(step - 1)
        with self._lock:
            self._step, self._phase, self._blocks = step, 0, 0
            self._started_at = time.monotonic()
            deadline = self._deadline()
        faulthandler.dump_traceback_later(deadline + self._budget_s(), exit=True)

    def arrived(self, step: int) -> None:
        self._phase = 2
        self._arrive(step)

    def _arrive(self, step: int) -> None:
        self._last_arrival = step
        self._publish(_arrival_key(self.rank), str(step))

    def step_finished(self, step: int) -> None:
        faulthandler.cancel_dump_traceback_later()
        with self._lock:
            self._step = None
            self._steps_done += 1

    def stop(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _POLL_S + 1)
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _deadline(self) -> float:
        return self.first_deadline_s if self._steps_done == 0 else self.deadline_s

    def _budget_s(self) -> float:
        """The most the watchdog thread takes once the deadline passed, plus a margin."""
        return 2 * _POLL_S + self.grace_s + 2 * self.store_timeout_s + 5

    def _publish(self, key: str, value: str) -> None:
        """A store write on the main thread; a failing store is reported once, not raised."""
        if self._store is None or self._store_failed:
            return
        try:
            self._store.set(key, value)
        except Exception as err:  # the job goes on; a hang will still be caught by time
            self._store_failed = True
            log.warning("watchdog: the rendezvous store failed (%s); progress not published",
                        err)  # fmt: skip

    def _overrun(self) -> tuple[int, float] | None:
        with self._lock:
            if self._step is None:
                return None
            deadline = self._deadline()
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
        message = (f"watchdog: step {step} exceeded its {deadline:g}s deadline on rank "
                   f"{self.rank}; {self._diagnose(step)}; exiting with code {self.exit_code} "
                   "so the launcher restarts from the last checkpoint")  # fmt: skip
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

    def _diagnose(self, step: int) -> str:
        """Who did not arrive, and where each rank was; never longer than the budget."""
        mine = Progress(self.rank, self.host, step, self._phase, self._blocks)
        store = self._store
        if store is None:
            return f"one process, {_PHASES[mine.phase]}: see the stack dump"
        try:
            late = stalled_ranks(store, self.world_size, step, self.store_timeout_s)
        except Exception as err:
            return f"the rendezvous store was unreachable ({err}): see the stack dumps"
        arrivals = describe_arrivals(late, self.world_size, step)
        try:
            budget = self.grace_s + self.store_timeout_s
            verdict = within(budget, lambda: self._monitored_barrier(store, mine))
        except Exception as err:
            return f"{arrivals}; no progress reports ({err})"
        return f"{arrivals}; {verdict.describe()}"

    def _monitored_barrier(self, store: dist.Store, mine: Progress) -> Verdict:
        """Publish this rank's progress, collect the others' for up to `grace_s`."""
        store.set(_progress_key(mine.step, self.rank), json.dumps(mine.__dict__))
        keys = [_progress_key(mine.step, rank) for rank in range(self.world_size)]
        end = time.monotonic() + self.grace_s
        while not store.check(keys) and time.monotonic() < end:
            time.sleep(_POLL_S)
        found = _read_present(store, keys)
        reports = {rank: Progress(**json.loads(value)) for rank, value in found.items()}
        return judge(reports, self.world_size)
