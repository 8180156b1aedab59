"""Launcher detection for torchrun, MPI (MPICH/Hydra, Open MPI) and Slurm variables."""

from __future__ import annotations

import pytest

from scifm.core.dist import (
    LaunchInfo,
    backend_for,
    detect_launch,
    first_slurm_host,
    port_for,
    rendezvous_init_method,
)
from scifm.core.errors import ScifmError


def test_no_launcher_is_one_process() -> None:
    assert detect_launch({}) == LaunchInfo("none", 0, 1, 0, 1)


def test_torchrun() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert detect_launch(env) == LaunchInfo("torchrun", 5, 8, 1, 4)


def test_mpich_hydra_as_on_aurora_and_polaris() -> None:
    env = {"PMI_RANK": "13", "PMI_SIZE": "24", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "12"}
    info = detect_launch(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank) == ("mpich", 13, 24, 1)
    assert info.local_world_size == 12 and info.is_distributed and not info.is_main


def test_open_mpi() -> None:
    env = {
        "OMPI_COMM_WORLD_RANK": "3",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "3",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
    }
    assert detect_launch(env) == LaunchInfo("openmpi", 3, 4, 3, 4)


def test_slurm_with_compressed_tasks_per_node() -> None:
    env = {"SLURM_PROCID": "6", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2",
           "SLURM_NTASKS_PER_NODE": "4(x2)"}  # fmt: skip
    assert detect_launch(env) == LaunchInfo("slurm", 6, 8, 2, 4)


def test_torchrun_wins_over_scheduler_variables() -> None:
    """torchrun inside an sbatch job: Slurm variables describe the job, RANK the process."""
    env = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert detect_launch(env).launcher == "torchrun"


def test_missing_local_rank_falls_back_to_rank() -> None:
    assert detect_launch({"PMI_RANK": "1", "PMI_SIZE": "2"}).local_rank == 1


@pytest.mark.parametrize(
    "env", [{"RANK": "4", "WORLD_SIZE": "4"}, {"PMI_RANK": "x", "PMI_SIZE": "2"}]
)
def test_inconsistent_variables_are_a_clear_error(env: dict[str, str]) -> None:
    with pytest.raises(ScifmError):
        detect_launch(env)


def test_backend_by_device() -> None:
    assert [backend_for(d) for d in ("cuda", "xpu", "cpu")] == [
        "cpu:gloo,cuda:nccl", "cpu:gloo,xpu:xccl", "gloo"]  # fmt: skip
    with pytest.raises(ScifmError, match="unknown device"):
        backend_for("tpu")


def test_slurm_host_list() -> None:
    assert first_slurm_host("nid[001-004,007],gpu1") == "nid001"
    assert first_slurm_host("node17") == "node17"
    assert first_slurm_host("x3005c0s[13,19]b0n0") == "x3005c0s13"


def test_rendezvous_prefers_master_addr() -> None:
    assert rendezvous_init_method({"MASTER_ADDR": "h0", "PBS_JOBID": "1"}) == "env://"


def test_rendezvous_from_pbs_nodefile(tmp_path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x4102c0s0b0n0\nx4102c0s1b0n0\n")
    env = {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "123.aurora"}
    method = rendezvous_init_method(env)
    assert method == f"tcp://x4102c0s0b0n0:{port_for('123.aurora')}"
    assert 29500 <= port_for("123.aurora") < 31500
    assert port_for("123.aurora") == port_for("123.aurora")


def test_rendezvous_file_store_keyed_by_job(tmp_path) -> None:
    env = {"PMI_PORT": "host:1234", "SCIFM_RDZV_DIR": str(tmp_path)}
    method = rendezvous_init_method(env)
    assert method.startswith(f"file://{tmp_path}/rdzv-")
    assert method == rendezvous_init_method(dict(env))
    assert method != rendezvous_init_method({**env, "PMI_PORT": "host:999"})


def test_rendezvous_without_any_hint_is_a_clear_error() -> None:
    with pytest.raises(ScifmError, match="MASTER_ADDR"):
        rendezvous_init_method({})
    across_nodes = {"PMI_RANK": "0", "PMI_SIZE": "8", "MPI_LOCALNRANKS": "4"}
    with pytest.raises(ScifmError, match="MASTER_ADDR"):
        rendezvous_init_method(across_nodes)


def test_bare_mpiexec_on_one_node_meets_on_a_local_port_keyed_by_its_proxy() -> None:
    one_node = {"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "4"}
    method = rendezvous_init_method(one_node)
    assert method.startswith("tcp://127.0.0.1:") and method == rendezvous_init_method(one_node)


def test_cray_pals_local_rank_as_on_aurora() -> None:
    env = {"PMI_RANK": "13", "PMI_SIZE": "24", "PALS_LOCAL_RANKID": "1", "PALS_LOCAL_SIZE": "12"}
    info = detect_launch(env)
    assert (info.rank, info.local_rank, info.local_world_size) == (13, 1, 12)
