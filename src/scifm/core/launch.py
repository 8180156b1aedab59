"""`scifm launch`: run any launcher command, restart it when it fails, stop it when it hangs.

A training job resumes from its run directory's newest complete checkpoint every time it
starts, so surviving a failure only takes starting it again. This wrapper does that
around any launcher (`mpiexec` on Aurora and Polaris, `srun`, `torchrun`):

- it runs the command in its own session (process group) and passes its output (stdout and
  stderr merged) through byte for byte as it arrives, also appending it to `--log` if given;
- an idle-output watchdog: when the job prints nothing for `--idle-timeout` seconds (a hang
  that even the trainer's own watchdog missed), the whole process group gets SIGTERM, then
  SIGKILL after `--kill-grace` seconds; output printed meanwhile is still passed through;
- when an attempt exits non-zero or is stopped for idling, it is started again, up to
  `--max-restarts` times; each attempt sees `SCIFM_LAUNCH_ATTEMPT` (0, 1, ...) and
  `SCIFM_LAUNCH_RESTARTS` (the maximum);
- SIGTERM, SIGINT and SIGUSR1 sent to `scifm launch` are forwarded to the job's process
  group (the trainer saves a checkpoint on SIGTERM/SIGUSR1); after a forwarded SIGTERM or
  SIGINT the wrapper does not restart, it waits for the job and exits with its code;
- processes of an attempt left behind when its leader exits (they would hold GPUs and ports
  the next attempt needs) are killed before the attempt counts as over.

Exit code: 0 when an attempt succeeds; otherwise the last attempt's: its own code, 128 + N
for one killed by signal N, 1 for one stopped by the idle watchdog.

The leader is never reaped before the attempt is over (`waitid(..., WNOWAIT)` only looks),
so its pid stays the id of the job's process group and `killpg` cannot hit a stranger.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from scifm.core.errors import ScifmError

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_STOPPING = (signal.SIGTERM, signal.SIGINT)
_TICK_S = 0.1
"""How often the watchdog looks at the clock while the job is silent."""
_DRAIN_S = 2.0
"""After the leader exits: how long its leftovers may keep the output pipe open."""
IDLE_EXIT_CODE = 1


@dataclass(frozen=True)
class LaunchConfig:
    """What to run and how persistently; the fields mirror `scifm launch`'s flags."""

    command: list[str]
    max_restarts: int = 0
    idle_timeout_s: float | None = None
    kill_grace_s: float = 30.0
    restart_delay_s: float = 1.0
    log: Path | None = None

    def validate(self) -> None:
        if not self.command:
            raise ScifmError("no command to launch: write `scifm launch [OPTIONS] -- COMMAND ...`")
        for name in ("max_restarts", "kill_grace_s", "restart_delay_s"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ScifmError(f"{_flag(name)} must be >= 0, got {value}")
        if self.idle_timeout_s is not None and not self.idle_timeout_s > 0:
            raise ScifmError(
                f"--idle-timeout must be > 0 seconds, got {self.idle_timeout_s}; "
                "leave it out to turn the watchdog off"
            )


def _flag(field: str) -> str:
    return "--" + field.removesuffix("_s").replace("_", "-")


def _say(message: str) -> None:
    sys.stderr.write(f"scifm launch: {message}\n")
    sys.stderr.flush()


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the leader has exited, without reaping it (its pid keeps naming the group)."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: reaps, still correct
        return proc.poll() is not None
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _wait_for_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _exited(proc) and time.monotonic() < deadline:
        time.sleep(_TICK_S)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


@dataclass
class _Outcome:
    code: int
    idle: bool


class _Attempt:
    """One run of the command: relay its output, watch for silence, clean up its group."""

    def __init__(
        self, proc: subprocess.Popen[bytes], cfg: LaunchConfig, sinks: list[IO[bytes]], attempt: int
    ) -> None:
        self.proc, self.cfg, self.sinks, self.attempt = proc, cfg, sinks, attempt
        self.last_output = time.monotonic()
        self.term_at: float | None = None  # when the idle watchdog sent SIGTERM
        self.killed = False
        self.exited_at: float | None = None
        self.leftovers_killed = False

    def run(self) -> _Outcome:
        try:
            self._relay()
        except BaseException:
            if not _exited(self.proc):  # e.g. our stdout went away: do not orphan the job
                _signal_group(self.proc, signal.SIGTERM)
                _wait_for_exit(self.proc, self.cfg.kill_grace_s)
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.wait()
            raise
        _signal_group(self.proc, signal.SIGKILL)  # leftovers: the leader is gone, so must they be
        code = self.proc.wait()
        if self.term_at is not None:
            return _Outcome(IDLE_EXIT_CODE, idle=True)
        return _Outcome(128 - code if code < 0 else code, idle=False)

    def _relay(self) -> None:
        """Pass output through until the leader has exited and the pipe is drained."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            pipe_open = True
            while True:
                if pipe_open and selector.select(timeout=_TICK_S):
                    pipe_open = self._forward(os.read(fd, 65536))
                elif not pipe_open:
                    time.sleep(_TICK_S)
                if self._tick(time.monotonic(), pipe_open):
                    return

    def _forward(self, data: bytes) -> bool:
        """Pass a chunk through verbatim; False at end of output."""
        if not data:
            return False
        self.last_output = time.monotonic()
        for sink in self.sinks:
            sink.write(data)
            sink.flush()
        return True

    def _tick(self, now: float, pipe_open: bool) -> bool:
        """Run the watchdog while the leader lives; True when the attempt is over."""
        if self.exited_at is None and _exited(self.proc):
            self.exited_at = now
        if self.exited_at is None:
            self._watch_idle(now)
            return False
        return not pipe_open or self._drain(now, self.exited_at)

    def _drain(self, now: float, exited_at: float) -> bool:
        """The leader has exited but something still holds its output pipe open."""
        if now - exited_at < _DRAIN_S:
            return False
        if self.leftovers_killed:  # a process outside the group: stop reading
            return True
        _signal_group(self.proc, signal.SIGKILL)
        self.leftovers_killed, self.exited_at = True, now
        return False

    def _watch_idle(self, now: float) -> None:
        timeout = self.cfg.idle_timeout_s
        if self.term_at is not None:
            if not self.killed and now - self.term_at >= self.cfg.kill_grace_s:
                _signal_group(self.proc, signal.SIGKILL)
                self.killed = True
        elif timeout is not None and now - self.last_output >= timeout:
            _say(f"no output for {timeout:g}s; stopping attempt {self.attempt}")
            _signal_group(self.proc, signal.SIGTERM)
            self.term_at = now


class _Launcher:
    """The restart loop, and the signal handler that forwards to the current attempt."""

    def __init__(self, cfg: LaunchConfig, sinks: list[IO[bytes]]) -> None:
        self.cfg, self.sinks = cfg, sinks
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None  # a SIGTERM/SIGINT received: no more restarts
        self.pending: int | None = None  # one that came while no attempt was running

    def forward(self, signum: int, frame: FrameType | None) -> None:
        if signum in _STOPPING:
            self.stop_signal = signum
        if self.proc is not None and not _exited(self.proc):
            _signal_group(self.proc, signum)
        elif signum in _STOPPING:
            self.pending = signum

    def run(self) -> int:
        attempt, code = 0, 0
        while True:
            code = self._attempt(attempt)
            if code == 0 or self.stop_signal is not None:
                return code
            if attempt >= self.cfg.max_restarts:
                if self.cfg.max_restarts:
                    _say(
                        f"giving up after {self.cfg.max_restarts} restarts (last exit code {code})"
                    )
                return code
            attempt += 1
            if not self._pause():
                return code

    def _pause(self) -> bool:
        """Wait out the restart delay; False when a stop signal arrives meanwhile."""
        deadline = time.monotonic() + self.cfg.restart_delay_s
        while self.stop_signal is None and time.monotonic() < deadline:
            time.sleep(min(_TICK_S, max(0.0, deadline - time.monotonic())))
        return self.stop_signal is None

    def _attempt(self, attempt: int) -> int:
        proc = self._start(attempt)
        self.proc = proc
        pending, self.pending = self.pending, None
        if pending is not None:  # arrived between the last check and the start
            _signal_group(proc, pending)
        try:
            outcome = _Attempt(proc, self.cfg, self.sinks, attempt).run()
        finally:
            self.proc = None
        if outcome.code != 0 and self.stop_signal is None and attempt < self.cfg.max_restarts:
            why = "was idle" if outcome.idle else f"exited with code {outcome.code}"
            _say(f"attempt {attempt} {why}; restarting ({attempt + 1} of {self.cfg.max_restarts})")
        return outcome.code

    def _start(self, attempt: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "SCIFM_LAUNCH_ATTEMPT": str(attempt),
            "SCIFM_LAUNCH_RESTARTS": str(self.cfg.max_restarts),
        }
        command = self.cfg.command
        try:
            return subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise ScifmError(
                f"command not found: {command[0]}; give the launcher's full path "
                "or fix PATH (activate the environment first)"
            ) from None
        except OSError as err:
            raise ScifmError(
                f"cannot run {command[0]}: {err.strerror or err}; "
                "check that it is an executable file"
            ) from None


def _open_log(path: Path) -> IO[bytes]:
    try:
        return open(path, "ab")
    except OSError as err:
        raise ScifmError(
            f"cannot open --log {path}: {err.strerror or err}; "
            "give a file in an existing, writable directory"
        ) from None


def launch(cfg: LaunchConfig, out: IO[bytes] | None = None) -> int:
    """Run `cfg.command` with restarts and the idle watchdog; returns the exit code.

    The job's output goes to `out` (default: this process's stdout) and to `cfg.log`.
    Bad input raises `ScifmError` before anything is started.
    """
    cfg.validate()
    log = _open_log(cfg.log) if cfg.log is not None else None
    sinks = [out if out is not None else sys.stdout.buffer, *([log] if log else [])]
    launcher = _Launcher(cfg, sinks)
    previous = {signum: signal.signal(signum, launcher.forward) for signum in _FORWARDED}
    try:
        return launcher.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if log is not None:
            log.close()
