"""The launcher layer forms a real gloo process group under torchrun and under MPI variables."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.distributed


def _records(out, nproc):
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def test_torchrun_two_processes(launch, tmp_path) -> None:
    launch["torchrun"]("allreduce.py", 2, str(tmp_path))
    records = _records(tmp_path, 2)
    assert [r["rank"] for r in records] == [0, 1]
    assert all(r["launcher"] == "torchrun" and r["backend"] == "gloo" for r in records)
    assert all(r["sum"] == 3.0 for r in records)


def test_mpi_variables_without_master_addr_agree_through_file_store(launch, tmp_path) -> None:
    """mpiexec sets no MASTER_ADDR: ranks meet through a FileStore keyed by the job id."""
    env = {"PMI_PORT": f"test-{tmp_path.name}", "SCIFM_RDZV_DIR": str(tmp_path / "rdzv")}
    launch["mpi"]("allreduce.py", 3, str(tmp_path), extra_env=env)
    records = _records(tmp_path, 3)
    assert all(r["launcher"] == "mpich" and r["world_size"] == 3 for r in records)
    assert all(r["sum"] == 6.0 for r in records)
