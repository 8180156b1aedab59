"""Where checkpoints live, how a complete one is recognised, and which ones are kept.

RUN/checkpoints/step-00000100/ holds DCP's shard files (`__0_0.distcp`, ...), DCP's own
`.metadata`, one `ranks/rank-NNNNN.pt` per rank (RNG states), and `metadata.json`, written
last. `metadata.json` lists every other file with its size, so a checkpoint is *complete*
only when that file parses and every listed file is present with exactly that size: a
truncated shard, a missing file or missing metadata is detected without reading the
tensors. Resuming takes the newest complete checkpoint and warns about newer incomplete
ones; nothing is ever resumed from a partial checkpoint.

Retention keeps the newest `keep_last` complete checkpoints plus every step that is a
multiple of `keep_every`. Deletion first renames a directory to a hidden name, so a crash
midway never leaves a half-deleted directory that looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scifm.core.errors import ScifmError
from scifm.core.logging import get_logger

log = get_logger(__name__)

METADATA = "metadata.json"
RANKS_DIR = "ranks"
_PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class BrokenCheckpoint:
    path: Path
    reason: str


def checkpoints_root(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_dir(run_dir: str | os.PathLike[str], step: int) -> Path:
    return checkpoints_root(run_dir) / f"{_PREFIX}{step:08d}"


def rank_file(directory: Path, rank: int) -> Path:
    return directory / RANKS_DIR / f"rank-{rank:05d}.pt"


def file_sizes(directory: Path) -> dict[str, int]:
    """Every file under `directory` (but metadata.json), by relative path, with its size."""
    sizes = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != METADATA:
            sizes[path.relative_to(directory).as_posix()] = path.stat().st_size
    return sizes


def read_metadata(path: Path) -> dict[str, Any]:
    meta = path / METADATA
    if not meta.is_file():
        raise ScifmError(f"{path}: not a complete checkpoint ({METADATA} is missing)")
    try:
        data = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScifmError(f"{meta}: unreadable checkpoint metadata ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int):
        raise ScifmError(f"{meta}: checkpoint metadata has no integer 'step'")
    return data


def integrity_problem(path: Path, metadata: dict[str, Any]) -> str | None:
    """Why the files of a checkpoint do not match its metadata, or None when they do."""
    expected = metadata.get("files")
    if expected is None:  # written before file lists existed: DCP's index must be there
        return None if (path / ".metadata").is_file() else "DCP's .metadata file is missing"
    for name, size in expected.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{name} is {actual:,} bytes, expected {size:,} (truncated or overwritten)"
    return None


def inspect_checkpoint(path: Path) -> CheckpointInfo | BrokenCheckpoint:
    try:
        metadata = read_metadata(path)
    except ScifmError as err:
        return BrokenCheckpoint(path, str(err).split(": ", 1)[-1])
    problem = integrity_problem(path, metadata)
    if problem:
        return BrokenCheckpoint(path, problem)
    return CheckpointInfo(path, int(metadata["step"]), metadata)


def scan_checkpoints(
    run_dir: str | os.PathLike[str],
) -> tuple[list[CheckpointInfo], list[BrokenCheckpoint]]:
    """Complete checkpoints (oldest first) and broken ones, of a run directory."""
    root = checkpoints_root(run_dir)
    complete, broken = [], []
    for path in sorted(root.glob(f"{_PREFIX}*")) if root.is_dir() else []:
        found = inspect_checkpoint(path)
        (complete if isinstance(found, CheckpointInfo) else broken).append(found)
    return sorted(complete, key=lambda info: info.step), broken


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, oldest first."""
    return scan_checkpoints(run_dir)[0]


def latest_checkpoint(run_dir: str | os.PathLike[str], warn: bool = False) -> CheckpointInfo | None:
    """The newest complete checkpoint; with `warn`, log each newer broken one being passed over."""
    complete, broken = scan_checkpoints(run_dir)
    latest = complete[-1] if complete else None
    if warn:
        for bad in broken:
            if latest is None or bad.path.name > latest.path.name:
                fallback = latest.path.name if latest else "the start (no complete checkpoint)"
                log.warning("checkpoint %s is incomplete (%s); resuming from %s instead",
                            bad.path, bad.reason, fallback)  # fmt: skip
    return latest


def steps_to_delete(steps: list[int], keep_last: int | None, keep_every: int | None) -> list[int]:
    """Which of the complete checkpoints' steps retention removes."""
    if keep_last is None:
        return []
    newest = set(sorted(steps)[-keep_last:])
    return [s for s in sorted(steps)
            if s not in newest and not (keep_every and s % keep_every == 0)]  # fmt: skip


def remove_dir(path: Path) -> None:
    """Hide `path` under a temporary name first, then delete it."""
    hidden = path.with_name(f".{path.name}.deleting")
    shutil.rmtree(hidden, ignore_errors=True)
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def prune_checkpoints(
    run_dir: str | os.PathLike[str], keep_last: int | None, keep_every: int | None
) -> list[int]:
    """Apply retention and clear leftovers of interrupted saves; returns the deleted steps."""
    root = checkpoints_root(run_dir)
    for leftover in root.glob(".*"):
        if leftover.name.endswith((".tmp", ".old", ".deleting")):
            shutil.rmtree(leftover, ignore_errors=True)
    complete = {info.step: info.path for info in list_checkpoints(run_dir)}
    deleted = steps_to_delete(list(complete), keep_last, keep_every)
    for step in deleted:
        remove_dir(complete[step])
    return deleted
