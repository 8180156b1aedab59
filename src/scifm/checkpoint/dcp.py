"""Save and load training state with torch.distributed.checkpoint (DCP), atomically.

Layout: RUN/checkpoints/step-00000100/ holds DCP's shard files plus `metadata.json` (step,
tokens seen, configs, code version). A checkpoint is written under a hidden temporary name
and renamed once complete, so a directory named step-* is always whole; `metadata.json` is
written last inside it and is what marks a checkpoint as loadable. DCP works in one process
without a process group and, in a later issue, across ranks and layouts unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from scifm.core.errors import ScifmError
from scifm.core.io import write_json

METADATA = "metadata.json"
_PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    metadata: dict[str, Any]


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns that it runs in one process when no process group exists; that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def checkpoint_dir(run_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{_PREFIX}{step:08d}"


def save_checkpoint(
    run_dir: str | os.PathLike[str], step: int, state: dict[str, Any], metadata: dict[str, Any]
) -> Path:
    """Write `state` (a DCP state dict) for `step`; returns the final directory."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if _is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    with _single_process_quiet():
        dcp.save(state, checkpoint_id=str(tmp))
    _barrier()
    if _is_main():
        write_json(tmp / METADATA, {"step": step, **metadata})
        _replace_dir(tmp, final)
    _barrier()
    return final


def _replace_dir(new: Path, final: Path) -> None:
    """Move `new` to `final`; an existing `final` is set aside first and removed last."""
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def read_metadata(path: Path) -> dict[str, Any]:
    meta = path / METADATA
    if not meta.is_file():
        raise ScifmError(f"{path}: not a complete checkpoint ({METADATA} is missing)")
    try:
        data = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise ScifmError(f"{meta}: unreadable checkpoint metadata ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int):
        raise ScifmError(f"{meta}: checkpoint metadata has no integer 'step'")
    return data


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for path in sorted(root.glob(f"{_PREFIX}*")) if root.is_dir() else []:
        if (path / METADATA).is_file():
            meta = read_metadata(path)
            found.append(CheckpointInfo(path, int(meta["step"]), meta))
    return sorted(found, key=lambda info: info.step)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> CheckpointInfo | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> dict[str, Any]:
    """Load in place into `state` (tensors are filled, not replaced); returns the metadata."""
    directory = Path(path)
    metadata = read_metadata(directory)
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(directory))
    return metadata
