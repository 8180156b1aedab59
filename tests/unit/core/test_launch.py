"""`scifm launch`: restarts, the idle-output watchdog, signal forwarding and bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LAUNCH = [sys.executable, "-m", "scifm.cli", "launch"]


def _launch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIFM_LAUNCH")}
    return subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)  # fmt: skip


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_first_success_runs_once_and_passes_output_through() -> None:
    done = _launch("--", *_python("print('hello from the job')"))
    assert done.returncode == 0 and done.stdout == "hello from the job\n"
    assert "scifm launch" not in done.stderr


def test_failures_are_restarted_until_one_attempt_succeeds(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    job = (
        f"import os, pathlib, sys; p = pathlib.Path({str(counter)!r}); "
        "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
        "print('attempt', os.environ['SCIFM_LAUNCH_ATTEMPT']); sys.exit(0 if n == 2 else 7)"
    )
    log = tmp_path / "job.log"
    done = _launch("--max-restarts", "3", "--restart-delay", "0", "--log", str(log), "--",
                   *_python(job))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["attempt 0", "attempt 1", "attempt 2"]
    assert "attempt 0 exited with code 7; restarting (1 of 3)" in done.stderr
    assert "attempt 1 exited with code 7; restarting (2 of 3)" in done.stderr
    assert log.read_text() == done.stdout


def test_exhausted_restarts_give_the_last_exit_code() -> None:
    done = _launch("--max-restarts", "1", "--restart-delay", "0", "--",
                   *_python("import sys; sys.exit(5)"))  # fmt: skip
    assert done.returncode == 5
    assert "giving up after 1 restarts (last exit code 5)" in done.stderr


def test_a_silent_job_and_its_children_are_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    job = ("import subprocess, sys, time; "
           "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('started', flush=True); "
           "time.sleep(60)")  # fmt: skip
    start = time.monotonic()
    done = _launch("--idle-timeout", "1.5", "--kill-grace", "1", "--", *_python(job))
    elapsed = time.monotonic() - start
    assert done.returncode != 0 and "no output for 1.5s; stopping the job" in done.stderr
    assert elapsed < 15, elapsed
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


def test_sigterm_is_forwarded_and_not_restarted(tmp_path: Path) -> None:
    marker = tmp_path / "saved"
    job = (
        "import signal, sys, time; "
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').write('x'), "
        "sys.exit(143))); print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([*LAUNCH, "--max-restarts", "3", "--", *_python(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and marker.read_text() == "x"
    assert "restarting" not in err


def test_bad_input_is_one_line_and_exit_code_2() -> None:
    for args, message in [((), "no command to launch"),
                          (("--max-restarts", "-1", "--", "true"), "--max-restarts must be"),
                          (("--", "no-such-launcher-xyz"), "command not found"),
                          (("--idle-timeout", "soon", "--", "true"), "invalid float")]:  # fmt: skip
        done = _launch(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
