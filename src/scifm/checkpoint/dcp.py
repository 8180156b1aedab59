"""Save and load training state with torch.distributed.checkpoint (DCP), atomically.

A checkpoint is written under a hidden temporary name (`.step-00000100.tmp`): every rank
writes its DCP shards and its own small `ranks/rank-NNNNN.pt` (RNG states), then rank 0
lists every file with its size into `metadata.json` and renames the directory into place.
A directory named step-* therefore exists only once every rank has finished, and its file
list lets a later resume detect a truncated or missing shard (`scifm.checkpoint.layout`).

`Checkpointer` adds what a training run needs on top: retention (keep the last k and every
m-th), and asynchronous saves. An asynchronous save copies the state to CPU memory, returns,
and writes in a background thread that coordinates over its own gloo process group (so it
never interleaves with the training collectives); `poll()` after each step asks every rank
whether its writes are done and renames the checkpoint once all are. DCP loads a
checkpoint saved at one layout into any other (resharding), in one process or many.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from scifm.checkpoint.config import CheckpointConfig
from scifm.checkpoint.layout import (
    checkpoint_dir,
    file_sizes,
    prune_checkpoints,
    rank_file,
    read_metadata,
)
from scifm.core.io import write_json
from scifm.core.logging import get_logger

log = get_logger(__name__)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _is_main() -> bool:
    return _rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns that it runs in one process when no process group exists; that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _temporary_dir(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def _prepare(final: Path, rank_state: dict[str, Any] | None) -> Path:
    """A fresh temporary directory (made by rank 0), holding this rank's own state file."""
    tmp = _temporary_dir(final)
    if _is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "ranks").mkdir(parents=True)
    _barrier()
    if rank_state is not None:
        torch.save(rank_state, rank_file(tmp, _rank()))
    return tmp


def _finalize(tmp: Path, final: Path, step: int, metadata: dict[str, Any]) -> None:
    """Rank 0, after every rank finished writing: file list + metadata, then the rename."""
    write_json(tmp / "metadata.json", {"step": step, **metadata, "files": file_sizes(tmp)})
    _replace_dir(tmp, final)


def _replace_dir(new: Path, final: Path) -> None:
    """Move `new` to `final`; an existing `final` is set aside first and removed last."""
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    state: dict[str, Any],
    metadata: dict[str, Any],
    rank_state: dict[str, Any] | None = None,
    on_written: Callable[[int], None] | None = None,
) -> Path:
    """Write `state` (a DCP state dict) for `step` synchronously; returns the final directory.

    A collective: every rank calls it. `rank_state` is this rank's own small state (saved
    as-is, not resharded), such as its RNG states. `on_written(step)` runs on each rank once
    its own writes are done, before the checkpoint is complete (fault injection uses it).
    """
    final = checkpoint_dir(run_dir, step)
    tmp = _prepare(final, rank_state)
    with _single_process_quiet():
        dcp.save(state, checkpoint_id=str(tmp))
    if on_written is not None:
        on_written(step)
    _barrier()
    if _is_main():
        _finalize(tmp, final, step, metadata)
    _barrier()
    return final


def load_checkpoint(path: str | os.PathLike[str], state: dict[str, Any],
                    local: bool = False) -> dict[str, Any]:  # fmt: skip
    """Load in place into `state` (tensors are filled, not replaced); returns the metadata.

    `state` may hold any subset of the saved entries (only their bytes are read). By default
    every rank of a process group calls this together; `local=True` reads in this process
    alone, without collectives (ranks reading different parts independently).
    """
    directory = Path(path)
    metadata = read_metadata(directory)
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(directory), no_dist=local)
    return metadata


def load_rank_state(path: str | os.PathLike[str], rank: int) -> dict[str, Any] | None:
    """This rank's own saved state, or None when the checkpoint has none for it."""
    file = rank_file(Path(path), rank)
    return torch.load(file, weights_only=False) if file.is_file() else None


@dataclass
class _Pending:
    future: Future
    tmp: Path
    final: Path
    step: int
    metadata: dict[str, Any]


class Checkpointer:
    """Saves of one run: synchronous or asynchronous, with retention applied after each."""

    def __init__(self, run_dir: str | os.PathLike[str], cfg: CheckpointConfig,
                 on_written: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.run_dir, self.cfg, self.on_written = Path(run_dir), cfg, on_written
        self._pending: _Pending | None = None
        self._group: dist.ProcessGroup | None = None
        if cfg.async_save and dist.is_initialized():
            self._group = dist.new_group(backend="gloo")  # DCP's own, off the training group

    def save(self, step: int, state: dict[str, Any], metadata: dict[str, Any],
             rank_state: dict[str, Any] | None = None) -> Path:  # fmt: skip
        """Checkpoint `step` (a collective); asynchronous saves return before the writes end."""
        self.wait()
        final = checkpoint_dir(self.run_dir, step)
        if not self.cfg.async_save:
            save_checkpoint(self.run_dir, step, state, metadata, rank_state, self.on_written)
            self._prune()
            return final
        tmp = _prepare(final, rank_state)
        with _single_process_quiet():
            future = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self._group,
                                    no_dist=not dist.is_initialized())  # fmt: skip
        if not isinstance(future, Future):  # an AsyncSaveResponse in newer torch
            future = future.upload_completion
        self._pending = _Pending(future, tmp, final, step, metadata)
        return final

    @property
    def pending_step(self) -> int | None:
        return self._pending.step if self._pending else None

    def poll(self) -> None:
        """Finish a background save once every rank's writes are done (a collective)."""
        if self._pending is None:
            return
        done = torch.tensor([int(self._pending.future.done())])
        if dist.is_initialized():
            dist.all_reduce(done, op=dist.ReduceOp.MIN)
        if int(done):
            self._complete()

    def wait(self) -> None:
        """Block until a background save is complete and renamed (a collective)."""
        if self._pending is not None:
            self._complete()

    def _complete(self) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        pending.future.result()  # raises here if this rank's writes failed
        if self.on_written is not None:
            self.on_written(pending.step)
        _barrier()
        if _is_main():
            _finalize(pending.tmp, pending.final, pending.step, pending.metadata)
        _barrier()
        self._prune()

    def _prune(self) -> None:
        if _is_main():
            deleted = prune_checkpoints(self.run_dir, self.cfg.keep_last, self.cfg.keep_every)
            if deleted:
                log.info("retention removed checkpoints of steps %s", deleted)
        _barrier()

    def close(self) -> None:
        self.wait()
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None
