"""`scifm launch`: restarts, the idle-output watchdog, process-group cleanup, signal forwarding
and bad input. Jobs are small `python -c` programs; most run in-process through `launch`,
the signal tests through a real `python -m scifm.cli launch` process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scifm.cli import main
from scifm.core import launch as launch_module
from scifm.core.launch import LaunchConfig, launch

LAUNCH = [sys.executable, "-m", "scifm.cli", "launch"]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _run(command: list[str], **options) -> tuple[int, bytes]:
    out = io.BytesIO()
    code = launch(LaunchConfig(command=command, restart_delay_s=0, **options), out=out)
    return code, out.getvalue()


def _gone(pid: int) -> bool:
    """Killed: no such process, or a zombie waiting for whoever adopted it."""
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(20):
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCIFM_LAUNCH_ATTEMPT", "SCIFM_LAUNCH_RESTARTS"):
        monkeypatch.delenv(name, raising=False)


def test_first_success_runs_once_and_passes_output_through() -> None:
    job = "import os; print('hello', os.environ['SCIFM_LAUNCH_ATTEMPT'], end=' '); print('x')"
    done = subprocess.run([*LAUNCH, "--", *_python(job)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "hello 0 x\n" and done.stderr == ""


def test_failures_are_restarted_until_one_attempt_succeeds(tmp_path: Path, capsys) -> None:
    counter = tmp_path / "count"
    job = (
        f"import os, pathlib, sys; p = pathlib.Path({str(counter)!r}); "
        "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
        "e = os.environ; print('attempt', e['SCIFM_LAUNCH_ATTEMPT'], e['SCIFM_LAUNCH_RESTARTS']); "
        "sys.exit(0 if n == 2 else 7)"
    )
    log = tmp_path / "job.log"
    code, out = _run(_python(job), max_restarts=3, log=log)
    err = capsys.readouterr().err
    assert code == 0, err
    assert out == b"attempt 0 3\nattempt 1 3\nattempt 2 3\n" and log.read_bytes() == out
    assert err.splitlines() == [
        "scifm launch: attempt 0 exited with code 7; restarting (1 of 3)",
        "scifm launch: attempt 1 exited with code 7; restarting (2 of 3)",
    ]


def test_exhausted_restarts_give_the_last_exit_code(capsys) -> None:
    code, _ = _run(_python("import sys; sys.exit(5)"), max_restarts=1)
    assert code == 5
    assert "giving up after 1 restarts (last exit code 5)" in capsys.readouterr().err
    code, _ = _run(_python("import os; os.kill(os.getpid(), 9)"))
    assert code == 128 + 9  # as shells report a death by signal


def test_a_silent_job_and_its_children_are_killed(tmp_path: Path, capsys) -> None:
    pid_file = tmp_path / "child.pid"
    job = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('started', flush=True); "
        "time.sleep(60)"
    )
    start = time.monotonic()
    code, out = _run(_python(job), idle_timeout_s=1.0, kill_grace_s=0.5)
    elapsed = time.monotonic() - start
    assert code == 1 and out == b"started\n"
    assert capsys.readouterr().err == "scifm launch: no output for 1s; stopping attempt 0\n"
    assert 1.5 <= elapsed < 1.5 + 4, elapsed  # idle + grace (SIGTERM is ignored) + slack
    assert _gone(int(pid_file.read_text()))


def test_an_idle_attempt_saves_on_sigterm_and_is_restarted(capsys) -> None:
    job = (
        "import os, signal, sys, time\n"
        "if os.environ['SCIFM_LAUNCH_ATTEMPT'] == '1': print('resumed'); sys.exit(0)\n"
        "def save(*_): print('saved on SIGTERM', flush=True); sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, save); print('step 1', flush=True); time.sleep(60)\n"
    )
    code, out = _run(_python(job), max_restarts=1, idle_timeout_s=1.2, kill_grace_s=20)
    assert code == 0 and out == b"step 1\nsaved on SIGTERM\nresumed\n"  # output during grace too
    assert "attempt 0 was idle; restarting (1 of 1)" in capsys.readouterr().err


def test_output_without_newlines_resets_the_idle_clock(capsys) -> None:
    job = "import sys, time\nfor _ in range(12): print('.', end='', flush=True); time.sleep(0.2)"
    code, out = _run(_python(job), idle_timeout_s=1.2)  # shorter than the job, longer than a gap
    assert code == 0 and out == b"." * 12 and capsys.readouterr().err == ""


def test_leftovers_holding_the_pipe_are_killed_when_the_leader_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch_module, "_DRAIN_S", 0.3)
    pid_file = tmp_path / "child.pid"
    job = (
        "import subprocess, sys; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('bye')"
    )
    start = time.monotonic()
    code, out = _run(_python(job))
    assert code == 0 and out == b"bye\n" and time.monotonic() - start < 5
    assert _gone(int(pid_file.read_text()))


def test_signals_are_forwarded_and_sigterm_stops_restarts(tmp_path: Path) -> None:
    marker = tmp_path / "saved"
    job = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR1, lambda *_: print('checkpoint', flush=True))\n"
        f"def save(*_): open({str(marker)!r}, 'w').write('x'); sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, save); print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    proc = subprocess.Popen([*LAUNCH, "--max-restarts", "3", "--", *_python(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGUSR1)
    assert proc.stdout.readline() == "checkpoint\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and marker.read_text() == "x"
    assert err == ""  # no restart


def test_sigterm_during_the_restart_delay_stops(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    job = f"import sys; open({str(counter)!r}, 'a').write('x'); sys.exit(3)"
    proc = subprocess.Popen([*LAUNCH, "--max-restarts", "3", "--restart-delay", "30", "--",
                             *_python(job)], stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None and "restarting (1 of 3)" in proc.stderr.readline()
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 3 and time.monotonic() - start < 5
    assert counter.read_text() == "x"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no command to launch"),
        (("--max-restarts", "2"), "no command to launch"),
        (("--max-restarts", "-1", "--", "true"), "--max-restarts must be >= 0"),
        (("--restart-delay", "nan", "--", "true"), "--restart-delay must be >= 0"),
        (("--idle-timeout", "0", "--", "true"), "--idle-timeout must be > 0"),
        (("--idle-timeout", "soon", "--", "true"), "invalid float value: 'soon'"),
        (("--max-restarts", "2", "torchrun", "x"), "put the command after `--`"),
        (("--", "no-such-launcher-xyz"), "command not found: no-such-launcher-xyz"),
        (("--", "/"), "cannot run /"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: tuple[str, ...], message: str, capsys) -> None:
    try:
        code = main(["launch", *args])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err


def test_a_bad_log_path_fails_before_the_job_starts(tmp_path: Path, capsys) -> None:
    ran = tmp_path / "ran"
    log = tmp_path / "missing" / "job.log"
    code = main(["launch", "--log", str(log), "--", *_python(f"open({str(ran)!r}, 'w')")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: cannot open --log {log}") and not ran.exists()
    assert os.environ.get("SCIFM_LAUNCH_ATTEMPT") is None
