"""Launcher layer: who am I, how many are we, and which backend, under any launcher.

scifm runs unchanged under torchrun, mpiexec/mpirun (MPICH/Hydra as on Aurora and Polaris,
Open MPI), srun, or no launcher at all (one process). Each launcher announces rank and size
in its own environment variables; `detect_launch` reads them in a fixed order of precedence.
The backend follows the device: nccl on CUDA, xccl on Intel XPU, gloo on CPU.

mpiexec sets no MASTER_ADDR/MASTER_PORT. `rendezvous_init_method` then agrees on one:
from the scheduler's first node (PBS_NODEFILE, SLURM_JOB_NODELIST) with a port derived from
the job id; when no host list exists, a torch FileStore on a shared directory keyed by
the job, which every rank of one job computes identically; and with neither (a bare
`mpiexec -n 4` on a workstation), a local port keyed by the MPI proxy process that
started every rank of this node.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from scifm.core.errors import ScifmError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that need it: `detect_launch` (used by logging and
# progress bars everywhere) stays importable without torch, so light processes such as the
# tokenize workers start in a fraction of a second.

# (launcher, rank, world size, local rank, local world size); first whose rank and size are set.
_LAUNCHER_VARS = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID|PALS_LOCAL_RANKID|PMI_LOCAL_RANK",
     "MPI_LOCALNRANKS|PALS_LOCAL_SIZE|PMI_LOCAL_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)  # fmt: skip

_JOB_ID_VARS = (
    "SCIFM_RUN_ID", "TORCHELASTIC_RUN_ID", "PBS_JOBID", "SLURM_JOB_ID",
    "PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "PMI_PORT",
)  # fmt: skip


@dataclass(frozen=True)
class LaunchInfo:
    """This process's place in the job, as the launcher described it."""

    launcher: str
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    match = re.match(r"\s*(\d+)", raw)  # SLURM_NTASKS_PER_NODE may read "4(x2)"
    if not match:
        raise ScifmError(f"launcher variable {name}={raw!r} is not an integer")
    return int(match.group(1))


def _first_int_env(env: Mapping[str, str], names: str) -> int | None:
    """The first set variable of `A|B|C` (MPICH Hydra, Cray PALS as on Aurora, PMI)."""
    for name in names.split("|"):
        value = _int_env(env, name)
        if value is not None:
            return value
    return None


def detect_launch(env: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read rank, world size and local rank from torchrun, MPI or Slurm variables."""
    env = os.environ if env is None else env
    for launcher, rank_var, size_var, local_var, local_size_var in _LAUNCHER_VARS:
        rank, size = _int_env(env, rank_var), _int_env(env, size_var)
        if rank is None or size is None:
            continue
        if not 0 <= rank < size:
            raise ScifmError(f"{launcher}: rank {rank} is outside world size {size}")
        local_rank = _first_int_env(env, local_var)
        local_size = _first_int_env(env, local_size_var)
        return LaunchInfo(
            launcher=launcher,
            rank=rank,
            world_size=size,
            local_rank=rank if local_rank is None else local_rank,
            local_world_size=size if local_size is None else local_size,
        )
    return LaunchInfo("none", rank=0, world_size=1, local_rank=0, local_world_size=1)


def device_type() -> str:
    """The accelerator type this process should use: cuda, xpu or cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


def backend_for(device: str) -> str:
    """nccl on CUDA, xccl on Intel XPU, gloo on CPU; accelerators also get gloo for CPU
    tensors (the loss average, the anomaly and signal flags, straggler times)."""
    backends = {"cuda": "cpu:gloo,cuda:nccl", "xpu": "cpu:gloo,xpu:xccl", "cpu": "gloo"}
    if device not in backends:
        raise ScifmError(f"unknown device type {device!r}; use one of {sorted(backends)}")
    return backends[device]


def local_device(info: LaunchInfo, kind: str | None = None) -> torch.device:
    """This rank's device: the local_rank-th accelerator, or the CPU."""
    import torch

    kind = kind or device_type()
    if kind == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if kind == "cuda" else torch.xpu.device_count()
    return torch.device(kind, info.local_rank % max(count, 1))


def job_id(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    for name in _JOB_ID_VARS:
        if env.get(name):
            return env[name]
    return None


def first_host(env: Mapping[str, str]) -> str | None:
    """The job's first node from PBS_NODEFILE or SLURM_JOB_NODELIST, if either is set."""
    nodefile = env.get("PBS_NODEFILE")
    if nodefile and Path(nodefile).is_file():
        for line in Path(nodefile).read_text().splitlines():
            if line.strip():
                return line.strip()
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if nodelist:
        return first_slurm_host(nodelist)
    return None


def first_slurm_host(nodelist: str) -> str:
    """'nid[001-004,007],gpu1' -> 'nid001' (Slurm's compressed host-list syntax)."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if head is None:
        raise ScifmError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges = head.group(1), head.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def port_for(job: str | None, base: int = 29500, span: int = 2000) -> int:
    """A port every rank of one job derives identically from its job id."""
    if job is None:
        return base
    return base + int(hashlib.sha256(job.encode()).hexdigest(), 16) % span


def rendezvous_init_method(env: Mapping[str, str] | None = None) -> str:
    """env:// when MASTER_ADDR is set; else a host from the scheduler; else a shared FileStore."""
    env = os.environ if env is None else env
    if env.get("MASTER_ADDR"):
        return "env://"
    job = job_id(env)
    host = first_host(env)
    if host is not None:
        return f"tcp://{host}:{env.get('MASTER_PORT') or port_for(job)}"
    if job is None:
        return _single_node_rendezvous(env)
    directory = Path(env.get("SCIFM_RDZV_DIR", ".scifm-rdzv")).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(job.encode()).hexdigest()[:16]
    return f"file://{directory / ('rdzv-' + key)}"


def _single_node_rendezvous(env: Mapping[str, str]) -> str:
    """All ranks on this node, started by one MPI process manager (Hydra's proxy): they
    share a parent process, whose id keys a local TCP rendezvous."""
    info = detect_launch(env)
    if info.launcher in ("mpich", "openmpi") and info.local_world_size == info.world_size:
        return f"tcp://127.0.0.1:{port_for(f'node-{os.getppid()}')}"
    raise ScifmError(
        "no MASTER_ADDR and no job id to agree on one: set MASTER_ADDR and MASTER_PORT, "
        "or SCIFM_RUN_ID to the same value on every rank"
    )


def init_distributed(timeout_s: float = 600.0, device: str | None = None) -> LaunchInfo:
    """Create the default process group when launched with more than one process.

    One process (no launcher) needs no process group and gets none. Returns the LaunchInfo.
    """
    import torch
    import torch.distributed as dist

    info = detect_launch()
    if not info.is_distributed or dist.is_initialized():
        return info
    kind = device or device_type()
    if kind != "cpu":
        local = local_device(info, kind)
        getattr(torch, kind).set_device(local)
    timeout = timedelta(seconds=timeout_s)
    store = _restarted_agent_store(info.world_size, timeout)
    dist.init_process_group(
        backend=backend_for(kind),
        init_method=None if store is not None else rendezvous_init_method(),
        store=store,
        rank=info.rank,
        world_size=info.world_size,
        timeout=timeout,
    )
    return info


def _restarted_agent_store(world_size: int, timeout: timedelta) -> torch.distributed.Store | None:
    """After torchrun restarts its workers (`--max-restarts`), a key space of their own.

    torchrun shares its rendezvous TCPStore with the workers, and a restarted worker can
    read the previous attempt's gloo/NCCL addresses from it, then fail to connect
    (pytorch/pytorch#135712). The restart count is the same for every worker of an attempt,
    so prefixing the store with it keeps attempts apart. None: plain `init_method` rendezvous.
    """
    import torch.distributed as dist

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or attempt == "0":
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                           world_size, is_master=False, timeout=timeout)  # fmt: skip
    return dist.PrefixStore(f"scifm/attempt-{attempt}", client)


def shutdown_distributed() -> None:
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        # torch 2.13 + gloo: a device mesh's groups keep gloo threads alive until collected;
        # left to interpreter shutdown, about one exit in three aborts ("terminate called
        # without an active exception"), which a launcher reports as a failed rank
        gc.collect()
