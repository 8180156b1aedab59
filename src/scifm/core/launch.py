"""`scifm launch`: run any launcher command, restart it when it fails, stop it when it hangs.

A training job resumes from its run directory's newest complete checkpoint every time it
starts, so surviving a failure only takes starting it again. This wrapper does that
around any launcher (`mpiexec` on Aurora and Polaris, `srun`, `torchrun`):

- it runs the command in its own session (process group) and passes its output through
  line by line (and to `--log` if given);
- an idle-output watchdog: when the job prints nothing for `--idle-timeout` seconds (a hang
  that even the trainer's own watchdog missed), the whole process group gets SIGTERM, then
  SIGKILL after `--kill-grace` seconds;
- when an attempt exits non-zero or is stopped for idling, it is started again, up to
  `--max-restarts` times; each attempt sees `SCIFM_LAUNCH_ATTEMPT` (0, 1, ...);
- SIGTERM, SIGINT and SIGUSR1 sent to `scifm launch` are forwarded to the job (the
  trainer saves a checkpoint on SIGTERM/SIGUSR1); after a forwarded SIGTERM or SIGINT the
  wrapper does not restart, it waits for the job and exits with its code.

Exit code: 0 when an attempt succeeds; otherwise the last attempt's (128 + N for a job
killed by signal N).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from scifm.core.errors import ScifmError

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_STOPPING = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class LaunchConfig:
    command: list[str]
    max_restarts: int = 0
    idle_timeout_s: float | None = None
    kill_grace_s: float = 30.0
    restart_delay_s: float = 1.0
    log: Path | None = None

    def validate(self) -> None:
        if not self.command:
            raise ScifmError("no command to launch: write `scifm launch [OPTIONS] -- COMMAND ...`")
        for name in ("max_restarts", "idle_timeout_s", "kill_grace_s", "restart_delay_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise ScifmError(f"{flag} must be >= 0, got {value}")


@dataclass
class _Attempt:
    code: int
    idle: bool


def _say(message: str) -> None:
    sys.stderr.write(f"scifm launch: {message}\n")
    sys.stderr.flush()


class _Launcher:
    def __init__(self, cfg: LaunchConfig) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def forward(self, signum: int, frame: FrameType | None) -> None:
        if signum in _STOPPING:
            self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc, signum)

    def run(self) -> int:
        attempt, last = 0, 0
        while True:
            result = self._attempt(attempt)
            last = result.code
            if last == 0 or self.stopping:
                return last
            if attempt >= self.cfg.max_restarts:
                if self.cfg.max_restarts:
                    _say(f"giving up after {self.cfg.max_restarts} restarts "
                         f"(last exit code {last})")  # fmt: skip
                return last
            why = "was idle" if result.idle else f"exited with code {last}"
            attempt += 1
            _say(f"attempt {attempt - 1} {why}; restarting ({attempt} of "
                 f"{self.cfg.max_restarts})")  # fmt: skip
            time.sleep(self.cfg.restart_delay_s)

    def _attempt(self, attempt: int) -> _Attempt:
        env = {**os.environ, "SCIFM_LAUNCH_ATTEMPT": str(attempt),
               "SCIFM_LAUNCH_RESTARTS": str(self.cfg.max_restarts)}  # fmt: skip
        try:
            self.proc = subprocess.Popen(
                self.cfg.command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise ScifmError(f"command not found: {self.cfg.command[0]}; give the launcher's "
                             "full path or fix PATH") from None  # fmt: skip
        idle = self._pump(self.proc)
        code = self.proc.wait()
        return _Attempt(128 - code if code < 0 else code, idle)

    def _pump(self, proc: subprocess.Popen[bytes]) -> bool:
        """Pass output through until the job ends; True if it was stopped for idling."""
        lines: queue.Queue[bytes | None] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        log = open(self.cfg.log, "ab") if self.cfg.log else None  # noqa: SIM115
        try:
            return self._relay(proc, lines, log)
        finally:
            if log is not None:
                log.close()

    def _relay(self, proc: subprocess.Popen[bytes], lines: queue.Queue[bytes | None],
               log: IO[bytes] | None) -> bool:  # fmt: skip
        timeout = self.cfg.idle_timeout_s
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                _say(f"no output for {timeout:g}s; stopping the job")
                _stop_group(proc, self.cfg.kill_grace_s)
                return True
            if line is None:
                return False
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            if log is not None:
                log.write(line)
                log.flush()


def _read_lines(stream: IO[bytes] | None, lines: queue.Queue[bytes | None]) -> None:
    assert stream is not None
    for line in iter(stream.readline, b""):
        lines.put(line)
    lines.put(None)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the job's whole process group, then SIGKILL after the grace period."""
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    _signal_group(proc, signal.SIGKILL)  # also any child that outlived the leader


def launch(cfg: LaunchConfig) -> int:
    """Run `cfg.command` with restarts and the idle watchdog; returns the exit code."""
    cfg.validate()
    launcher = _Launcher(cfg)
    previous = {signum: signal.signal(signum, launcher.forward) for signum in _FORWARDED}
    try:
        return launcher.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
