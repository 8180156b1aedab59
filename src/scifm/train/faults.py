"""Deliberate faults for chaos tests and fire drills, injected through `SCIFM_FAULT`.

Long runs meet crashes, hangs, slow ranks and NaNs; the code that survives them must be
exercised on purpose. `SCIFM_FAULT` holds `;`-separated faults `KIND@STEP[:key=value,...]`:

    kill@5:rank=1          SIGKILL this process at the start of step 5 (rank 1 only)
    killsave@4:rank=1      SIGKILL it while checkpoint 4 is being saved (its shards written,
                           the checkpoint not yet complete)
    sleep@4:rank=1,seconds=60   stall step 4 before it reaches its collectives
    signal@3:name=SIGTERM  send a signal to this process at the start of step 3
    nan@6:rank=0           make step 6's loss and gradients NaN on rank 0
    slow@1:rank=2,seconds=0.3   burn CPU for 0.3 s in every step from step 1 on

A fault without `rank=` fires on every rank. Faults fire in the first attempt of a job only
(restarts by torchrun or `scifm launch` run clean) unless `attempt=K` names another, and
each fires at most once per process (`slow` repeats every step). Unset, this costs nothing.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import torch

from scifm.core.errors import ScifmError

ENV = "SCIFM_FAULT"
KINDS = ("kill", "killsave", "sleep", "signal", "nan", "slow")


@dataclass
class Fault:
    kind: str
    step: int
    rank: int | None = None
    attempt: int = 0
    seconds: float = 0.0
    name: str = "SIGTERM"
    fired: bool = field(default=False, compare=False)

    def applies(self, step: int, rank: int, attempt: int) -> bool:
        if self.attempt != attempt or (self.rank is not None and self.rank != rank):
            return False
        if self.kind == "slow":
            return step >= self.step
        return step == self.step and not self.fired


def parse_faults(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        head, _, options = item.partition(":")
        kind, _, step = head.partition("@")
        if kind not in KINDS or not step.isdigit():
            raise ScifmError(
                f"{ENV}: cannot read {item!r}; write KIND@STEP[:key=value,...] with KIND one "
                f"of {', '.join(KINDS)}, e.g. kill@5:rank=1"
            )
        fault = Fault(kind, int(step))
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key in ("rank", "attempt"):
                setattr(fault, key, int(value))
            elif key == "seconds":
                fault.seconds = float(value)
            elif key == "name":
                fault.name = value
            else:
                raise ScifmError(f"{ENV}: unknown option {key!r} in {item!r} "
                                 "(rank, attempt, seconds, name)")  # fmt: skip
        faults.append(fault)
    return faults


def current_attempt() -> int:
    """0 for a job's first run; torchrun and `scifm launch` count their restarts."""
    for name in ("SCIFM_LAUNCH_ATTEMPT", "TORCHELASTIC_RESTART_COUNT"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


class FaultInjector:
    """The faults of this process, fired at the points of a step they belong to."""

    def __init__(self, rank: int, spec: str | None = None) -> None:
        self.rank = rank
        self.attempt = current_attempt()
        self.faults = parse_faults(os.environ.get(ENV, "") if spec is None else spec)

    def _due(self, kinds: tuple[str, ...], step: int) -> list[Fault]:
        due = [f for f in self.faults
               if f.kind in kinds and f.applies(step, self.rank, self.attempt)]  # fmt: skip
        for fault in due:
            fault.fired = True
        return due

    def at_step_start(self, step: int) -> None:
        for fault in self._due(("kill", "sleep", "signal"), step):
            if fault.kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif fault.kind == "signal":
                os.kill(os.getpid(), signal.Signals[fault.name])
            else:
                time.sleep(fault.seconds)

    def after_checkpoint_write(self, step: int) -> None:
        """Between this rank's shard writes and the checkpoint's completion."""
        if self._due(("killsave",), step):
            os.kill(os.getpid(), signal.SIGKILL)

    def in_compute(self, step: int) -> None:
        """Inside the step's forward/backward time: a rank that computes slowly."""
        for fault in self._due(("slow",), step):
            _burn_cpu(fault.seconds)

    def poison(self, step: int, parameters: list[torch.nn.Parameter]) -> bool:
        """Turn this step's gradients to NaN (as a bad batch or overflow would); True if so."""
        if not self._due(("nan",), step):
            return False
        with torch.no_grad():
            for param in parameters:
                if param.grad is not None:
                    param.grad.fill_(float("nan"))
        return True


def _burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
