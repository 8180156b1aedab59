"""Chaos on gloo: a rank killed mid-run, a rank signalled alone, a NaN on one rank.

Each job is `torchrun ... -m scifm.cli train` (the real command line, exit codes included).
Faults come from `SCIFM_FAULT` (see `scifm.train.faults`); they fire in a job's first
attempt only, so a restarted job runs clean. Every run is 2 ranks under FSDP2 in
deterministic fp32.

- SIGKILL of one rank at a random step; torchrun `--max-restarts 1` restarts both ranks,
  which resume from the newest checkpoint: the final weights are bit-identical to an
  uninterrupted run's.
- SIGKILL of one rank midway through a save: the restarted job resumes from the previous
  complete checkpoint (the partial one is never read) and ends bit-identical.
- SIGUSR1 to rank 1 only: both ranks agree, save that step and exit with 128 + 10; running
  the job again finishes it, bit-identical to the uninterrupted run.
- NaN gradients on rank 0 only: both ranks apply the same policy (skip the update, stop
  with exit code 4, or roll back to the last checkpoint and step over the bad batch).
- Rank 1 stalls in step 5 under `scifm launch`: the watchdog (3 s deadline) names rank 1
  and ends the job within seconds; the relaunched job finishes, bit-identical.
- Rank 2 of 3 burns 0.3 s of CPU per step: it is reported as a straggler, by rank and host.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scifm.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from scifm.model import ModelConfig, build_model
from tests.distributed.conftest import _clean_env, write_recipe

pytestmark = pytest.mark.distributed

MODEL = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 3000,
         "multiple_of": 32, "max_seq_len": 16}  # fmt: skip
TRAIN = {"max_steps": 8, "warmup_steps": 2, "log_every": 1, "deterministic": True,
         "optimizer": {"lr": 2e-3, "eps": 1e-6}, "num_threads": 1, "micro_batch_size": 4,
         "checkpoint": {"every": 2}}  # fmt: skip


def torchrun_command(config: Path, out: Path, *overrides: str, nproc: int = 2,
                     max_restarts: int = 0) -> list[str]:  # fmt: skip
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
        "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d", "--rdzv-endpoint",
        "localhost:0", "--max-restarts", str(max_restarts), "-m", "scifm.cli", "train",
        "--config", str(config), "--out", str(out), f"parallel.dp_shard={nproc}", *overrides,
    ]  # fmt: skip


def run(command: list[str], fault: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**_clean_env(), "SCIFM_FAULT": fault}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def torchrun(config: Path, out: Path, fault: str = "", max_restarts: int = 0):
    return run(torchrun_command(config, out, max_restarts=max_restarts), fault)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    model = build_model(ModelConfig.from_dict(MODEL), device="cpu", seed=None)
    state = {"model": model.state_dict()}
    load_checkpoint(latest_checkpoint(run).path, state)
    return state["model"]


def _assert_bit_identical(a: Path, b: Path) -> None:
    expected, got = _weights(a), _weights(b)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The recipe, and the uninterrupted run every chaotic one is compared with."""
    root = tmp_path_factory.mktemp("chaos")
    config = write_recipe(root, MODEL, TRAIN)
    clean = root / "clean"
    done = torchrun(config, clean)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, config, clean


def test_sigkill_at_a_random_step_then_torchrun_restart_is_bit_identical(job) -> None:
    root, config, clean = job
    rng = random.Random()
    step, rank = rng.randint(2, 8), rng.randint(0, 1)
    out = root / f"killed-{step}-{rank}"
    done = torchrun(config, out, fault=f"kill@{step}:rank={rank}", max_restarts=1)
    assert done.returncode == 0, (step, rank, done.stderr[-3000:])
    assert "failed (exitcode: -9)" in done.stderr, done.stderr[-2000:]  # killed, restarted
    assert latest_checkpoint(out).step == 8
    _assert_bit_identical(clean, out)


def test_sigkill_in_the_middle_of_a_save_resumes_from_the_previous_checkpoint(job) -> None:
    root, config, clean = job
    out = root / "killed-saving"
    done = torchrun(config, out, fault="killsave@4:rank=1", max_restarts=1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failed (exitcode: -9)" in done.stderr
    log = " ".join(done.stderr.split())  # rich wraps long log lines
    assert "resumed from" in log and "(step 2)" in log, log[-3000:]
    assert [c.step for c in list_checkpoints(out)] == [6, 8]  # the recipe keeps the last 2
    assert not list((out / "checkpoints").glob(".*"))  # the partial one was cleared
    _assert_bit_identical(clean, out)


def test_a_signal_to_one_rank_saves_on_every_rank_and_the_rerun_finishes(job) -> None:
    root, config, clean = job
    out = root / "preempted"
    done = torchrun(config, out, fault="signal@3:rank=1,name=SIGUSR1")
    assert done.returncode != 0
    assert f"exitcode  : {128 + signal.SIGUSR1}" in done.stderr, done.stderr[-3000:]
    assert "stopped by SIGUSR1 after saving" in done.stderr
    assert [c.step for c in list_checkpoints(out)] == [2, 3]
    again = torchrun(config, out)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_bit_identical(clean, out)


@pytest.mark.parametrize("policy", ["skip", "stop", "rollback"])
def test_nan_on_one_rank_is_handled_by_the_policy_on_both(job, policy) -> None:
    root, config, _ = job
    out = root / f"nan-{policy}"
    command = torchrun_command(config, out, f"train.anomaly.policy={policy}")
    done = run(command, fault="nan@5:rank=0")
    metas = [c.metadata for c in list_checkpoints(out)]
    if policy == "stop":
        assert f"exitcode  : {4}" in done.stderr and "step 5: loss is nan" in done.stderr
        assert [m["step"] for m in metas] == [2, 4]  # nothing saved after the bad step
        return
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[4]["bad_steps"] == 1 and records[-1]["step"] == 8
    final = metas[-1]
    assert final["step"] == 8 and final["bad_steps"] == 1
    if policy == "skip":
        assert final["skipped_steps"] == 1 and final["consumed_samples"] == 8 * 8
    else:  # back to step 4, the batch of step 5 stepped over: one batch more consumed
        assert final["rollbacks"] == 1 and final["consumed_samples"] == 9 * 8
        assert [r["step"] for r in records] == [1, 2, 3, 4, 4, 5, 6, 7, 8]
    weights = _weights(out)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_stalled_rank_is_named_and_the_relaunched_job_finishes(job) -> None:
    root, config, clean = job
    out = root / "hang"
    command = [sys.executable, "-m", "scifm.cli", "launch", "--max-restarts", "1",
               "--restart-delay", "0", "--",
               *torchrun_command(config, out, "train.watchdog.step_timeout_s=3")]  # fmt: skip
    start = time.monotonic()
    done = run(command, fault="sleep@5:rank=1,seconds=300")
    elapsed = time.monotonic() - start
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "watchdog: step 5 exceeded its 3s deadline" in output, output[-4000:]
    assert "stalled ranks: 1 (host" in output and "loading data" in output, output[-4000:]
    print(next(line for line in output.splitlines() if "watchdog: step 5" in line))
    assert "attempt 0 exited with code 1; restarting (1 of 1)" in output, output[-4000:]
    assert elapsed < 100, elapsed  # the stall alone would take 300 s
    stacks = (out / "stacks-rank1.txt").read_text()  # the main thread, caught in the stall
    assert "in at_step_start" in stacks and "in _dump_stacks" in stacks, stacks
    assert latest_checkpoint(out).step == 8
    _assert_bit_identical(clean, out)


def test_a_slow_rank_is_reported_as_a_straggler(job) -> None:
    root, config, _ = job
    out = root / "slow"
    command = torchrun_command(
        config,
        out,
        "train.stragglers.every=3",
        "train.stragglers.factor=2",
        "train.max_steps=6",
        nproc=3,
    )
    done = run(command, fault="slow@1:rank=2,seconds=0.3")
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [line for line in done.stderr.splitlines() if "stragglers at step" in line]
    assert len(reports) == 2 and all("rank 2 (host" in line for line in reports), reports
    assert not any("rank 0 (" in line or "rank 1 (" in line for line in reports), reports
