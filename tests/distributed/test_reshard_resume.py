"""Resharding: a checkpoint saved by 2 ranks under FSDP2 resumes at 1 rank, at 4 ranks and
under tensor parallelism (TP=2), and the resumed steps' losses equal the uninterrupted run's.

The global batch is fixed in tokens (8 samples of 16), so each layout derives its own
gradient accumulation (1 rank: 4 micro-batches of 2; 2 ranks: 2; 4 ranks: 1) and reads the
same global stream from the saved consumed-sample count. DCP reshards model and AdamW state
to the new layout; the losses agree to fp32 rounding. Every run saves asynchronously (DCP
writing in the background over its own gloo group), so this also checks that those
checkpoints are complete and exact.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scifm.checkpoint import list_checkpoints
from tests.distributed.conftest import WORKERS, _clean_env, run_torchrun, write_recipe

pytestmark = pytest.mark.distributed

MODEL = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 3000,
         "multiple_of": 32, "max_seq_len": 16}  # fmt: skip
TRAIN = {"max_steps": 6, "warmup_steps": 2, "log_every": 1, "deterministic": True,
         "optimizer": {"lr": 2e-3, "eps": 1e-6}, "num_threads": 1, "micro_batch_size": 2,
         "global_batch_tokens": 8 * 16,
         "checkpoint": {"every": 3, "keep_last": None, "async_save": True}}  # fmt: skip


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The uninterrupted 2-rank FSDP2 run, with checkpoints at steps 3 and 6."""
    root = tmp_path_factory.mktemp("reshard")
    config = write_recipe(root, MODEL, TRAIN)
    reference = root / "fsdp2"
    run_torchrun("train_layout.py", 2, str(config), str(reference), json.dumps({"dp_shard": 2}),
                 timeout=300)  # fmt: skip
    assert [c.step for c in list_checkpoints(reference)] == [3, 6]
    return root, config, reference


def _from_step_3(reference: Path, out: Path) -> None:
    """A copy of the reference run as it was right after its step-3 checkpoint."""
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints" / "step-00000006")


@pytest.mark.parametrize(
    ("name", "nproc", "parallel"),
    [("one", 1, {}), ("four", 4, {"dp_shard": 4}), ("tp2", 2, {"tp": 2})],
)
def test_checkpoint_of_two_fsdp_ranks_resumes_at_another_layout(saved, name, nproc, parallel):
    root, config, reference = saved
    out = root / name
    _from_step_3(reference, out)
    args = (str(config), str(out), json.dumps(parallel))
    if nproc == 1:
        done = subprocess.run(
            [sys.executable, str(WORKERS / "train_layout.py"), *args],
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        run_torchrun("train_layout.py", nproc, *args, timeout=300)
    expected, got = _losses(reference), _losses(out)
    assert len(got) == 6 and got[:3] == expected[:3]
    assert max(abs(a - b) for a, b in zip(expected[3:], got[3:], strict=True)) < 1e-5, (
        expected, got)  # fmt: skip
    meta = list_checkpoints(out)[-1].metadata
    assert meta["step"] == 6 and meta["consumed_samples"] == 6 * 8
    assert meta["world_size"] == nproc and meta["parallel"]["tp"] == parallel.get("tp", 1)
