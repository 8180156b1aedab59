"""Launch real multi-process jobs on CPU/gloo: torchrun, or plain processes with MPI variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scifm.data import CorpusSource, DataConfig
from tests.unit.data.conftest import make_corpora

WORKERS = Path(__file__).parent / "workers"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "SLURM_"))}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["SCIFM_PROGRESS"] = "0"
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_torchrun(script: str, nproc: int, *args: str, timeout: float = 120) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
        "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "localhost:0", str(WORKERS / script), *args,
    ]  # fmt: skip
    done = subprocess.run(command, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def run_with_mpi_variables(script: str, nproc: int, *args: str, extra_env: dict | None = None,
                           timeout: float = 120) -> None:  # fmt: skip
    """What mpiexec (MPICH/Hydra) gives each rank: PMI_RANK/PMI_SIZE, no MASTER_ADDR."""
    procs = []
    for rank in range(nproc):
        env = {**_clean_env(), "PMI_RANK": str(rank), "PMI_SIZE": str(nproc),
               "MPI_LOCALRANKID": str(rank), **(extra_env or {})}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(WORKERS / script), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))  # fmt: skip
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]


def run_mpiexec(script: str, nproc: int, *args: str, timeout: float = 120) -> None:
    """A real `mpiexec -n N` (MPICH's Hydra, installed by the test extra): no MASTER_ADDR."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    assert mpiexec.is_file(), f"{mpiexec} missing: install the test extra (make install)"
    command = [str(mpiexec), "-n", str(nproc), sys.executable, str(WORKERS / script), *args]
    done = subprocess.run(command, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture
def launch():
    return {"torchrun": run_torchrun, "mpi": run_with_mpi_variables, "mpiexec": run_mpiexec}


def small_mixture(root: Path) -> DataConfig:
    """Three small corpora under `root`, mixed 5:3:2, in 16-token samples."""
    corpora = make_corpora(root, docs_per_file=60)
    sources = [CorpusSource(name=n, prefixes=p, weight=w)
               for (n, p), w in zip(corpora.items(), (5, 3, 2), strict=True)]  # fmt: skip
    return DataConfig(corpora=sources, seq_len=16, shuffle_window_docs=8)


def write_recipe(root: Path, model: dict, train: dict) -> Path:
    """A recipe YAML (data, model, train sections) training `model` on `small_mixture`."""
    config = root / "recipe.yaml"
    data = small_mixture(root)
    config.write_text(yaml.safe_dump({"data": data.to_dict(), "model": model, "train": train}))
    return config


def torchrun_result(script: str, nproc: int, *args: str,
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`run_torchrun` without the success check, for jobs that are meant to fail."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
        "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "localhost:0", str(WORKERS / script), *args,
    ]  # fmt: skip
    return subprocess.run(command, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
