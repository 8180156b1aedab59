"""`scifm tokenize`: shards in parallel (processes x launcher ranks), resumable, then one merge.

1. Plan: the inputs are cut into shards (`readers.plan_shards`); the list depends only on the
   inputs and the config, never on how many processes run.
2. Assign: shards go to launcher ranks (torchrun, mpiexec, srun: `core.dist.detect_launch`)
   by a fixed greedy balance of their sizes; each rank runs its own shards in this process
   (`tokenize.workers` 1) or in that many spawned processes (`tokenizers` must never be used
   across a fork; a script calling this with workers > 1 needs the usual
   `if __name__ == "__main__":` guard, as for any spawned process).
3. Run a shard (`shard.run_shard`): documents -> token ids + EOD -> PREFIX.work/<shard>.bin and
   .sizes, rejected records -> <shard>.rejects.jsonl, then a completion marker
   <shard>.done.json, written last, with counts, the input's size, mtime and hash, the
   tokenizer's sha256 and the settings. A rerun skips every shard whose marker still matches
   and redoes the others.
4. Merge (rank 0, after every rank is done, through a gloo all-reduce that also tells every
   rank whether another failed): shard files are concatenated in shard order into
   PREFIX.bin/.idx and PREFIX.rejects.jsonl (line numbers made file-global), then
   PREFIX.manifest.json is written last and PREFIX.work removed. Shard outputs do not depend on
   who made them, so the merged files are byte-identical for any number of workers or ranks.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import IO, Any

import numpy as np

from scifm.core.dist import LaunchInfo, detect_launch
from scifm.core.errors import ScifmError
from scifm.core.io import atomic_path, sha256_file
from scifm.core.logging import get_logger
from scifm.core.progress import track
from scifm.tokens.format import dtype_for_vocab, prefix_paths, write_index
from scifm.tokens.readers import Shard, expand_inputs, plan_shards
from scifm.tokens.shard import ShardJob, init_worker, read_marker, run_shard, set_progress
from scifm.tokens.tokenizer import Tokenizer
from scifm.tokens.writer import (
    TokenizeConfig,
    manifest_path,
    rejects_path,
    write_manifest,
)

log = get_logger(__name__)
PathLike = str | os.PathLike[str]
RUN_ONLY = ("workers", "batch_size")
"""Config fields that change how a run goes, never its output (left out of the manifest)."""
SYNC_TIMEOUT_S = 7 * 24 * 3600.0
"""Ranks wait for each other at the end of their shards; a slow rank must not time them out
(a failed rank ends the job through its launcher)."""


def tokenize_files(
    cfg: TokenizeConfig, inputs: Sequence[PathLike], tokenizer_path: PathLike, prefix: PathLike
) -> dict[str, Any]:
    """Tokenize `inputs` into PREFIX.bin/.idx/.rejects.jsonl/.manifest.json; return the stats."""
    prefix = Path(prefix)
    if prefix.is_dir():
        raise ScifmError(f"--out {prefix} is a directory; give a prefix such as {prefix}/corpus")
    files = expand_inputs(inputs)
    shards = plan_shards(files, cfg.shard_bytes, cfg.txt_documents, cfg.text_field)
    tokenizer = Tokenizer.load(tokenizer_path)
    job = _job(cfg, tokenizer, prefix)
    info = detect_launch()
    group = _process_group(info)
    try:
        _run_rank(job, shards, info, cfg.workers, group)
        if info.rank == 0:
            _telling_every_rank(group, lambda: merge(job, shards, files, tokenizer, cfg, prefix))
        elif _any_rank(group, failed=False):
            raise ScifmError("rank 0 failed to merge the shards; see its error")
    finally:
        _release(group)
    return _stats(prefix)


def _job(cfg: TokenizeConfig, tokenizer: Tokenizer, prefix: Path) -> ShardJob:
    bin_path, _ = prefix_paths(prefix)
    return ShardJob(
        work_dir=str(bin_path.with_suffix(".work")),
        tokenizer_path=str(tokenizer.path),
        tokenizer_sha256=tokenizer.sha256,
        dtype=str(dtype_for_vocab(tokenizer.vocab_size)),
        eod=tokenizer.eos_id if cfg.append_eod else None,
        text_field=cfg.text_field,
        txt_documents=cfg.txt_documents,
        batch_size=cfg.batch_size,
        fast=cfg.encoder == "auto",
    )


def assign(shards: Sequence[Shard], world_size: int) -> list[list[Shard]]:
    """Shards of each rank: largest first, each to the least loaded rank (ties: lowest rank)."""
    loads = [0] * world_size
    mine: list[list[Shard]] = [[] for _ in range(world_size)]
    for shard in sorted(shards, key=lambda s: (-s.size, s.index)):
        rank = loads.index(min(loads))
        mine[rank].append(shard)
        loads[rank] += max(shard.size, 1)
    return mine


def _run_rank(
    job: ShardJob, shards: Sequence[Shard], info: LaunchInfo, workers: int, group: Any
) -> None:
    """Run this rank's unfinished shards, then wait for every rank (failing if any failed)."""
    error: BaseException | None = None
    try:
        Path(job.work_dir).mkdir(parents=True, exist_ok=True)
        mine = assign(shards, info.world_size)[info.rank]
        todo = [shard for shard in mine if read_marker(job, shard) is None]
        count = _worker_count(workers, info, len(todo))
        done = len(mine) - len(todo)
        (log.info if done else log.debug)(
            "tokenize: %d shards, %d on this rank, %d already done (resumed); %d worker(s)",
            len(shards), len(mine), done, count,
        )  # fmt: skip
        with track(sum(s.size for s in todo), f"tokenize {Path(job.work_dir).stem}") as bar:
            if count <= 1:
                _run_here(job, sorted(todo, key=lambda s: s.index), bar.advance)
            else:
                _run_pool(job, todo, count, _threads(count, info), bar.advance)
    except BaseException as err:
        error = err
    if _any_rank(group, failed=error is not None) and error is None:
        raise ScifmError("another rank failed while tokenizing (see its error); rerun to resume")
    if error is not None:
        raise error


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _worker_count(workers: int, info: LaunchInfo, shards: int) -> int:
    """tokenize.workers, or (0) this rank's share of the node's cores; at most one per shard."""
    wanted = workers or max(1, _cores() // max(1, info.local_world_size))
    return max(1, min(wanted, shards))


def _threads(workers: int, info: LaunchInfo) -> int:
    """Encoding threads per worker so that all workers of the node fill its cores once."""
    return max(1, _cores() // max(1, info.local_world_size) // workers)


def _run_here(job: ShardJob, todo: Sequence[Shard], advance: Callable[[int], None]) -> None:
    set_progress(advance)
    try:
        for shard in todo:
            run_shard(shard, job)
    finally:
        set_progress(None)


def _run_pool(
    job: ShardJob, todo: Sequence[Shard], workers: int, threads: int, advance: Callable[[int], None]
) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=init_worker, initargs=(threads, queue)
    ) as pool:
        pending: set[Future[dict[str, Any]]] = {pool.submit(run_shard, s, job) for s in todo}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(queue, advance)
                for future in done:
                    future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    _drain(queue, advance)


def _drain(queue: Any, advance: Callable[[int], None]) -> None:
    while not queue.empty():
        advance(queue.get())


def _telling_every_rank(group: Any, work: Callable[[], None]) -> None:
    """Run `work` here, then tell the other ranks (waiting in `_any_rank`) if it failed."""
    error: BaseException | None = None
    try:
        work()
    except BaseException as err:
        error = err
    _any_rank(group, failed=error is not None)
    if error is not None:
        raise error


def merge(
    job: ShardJob,
    shards: Sequence[Shard],
    files: Sequence[Path],
    tokenizer: Tokenizer,
    cfg: TokenizeConfig,
    prefix: Path,
) -> None:
    """Concatenate every shard in order into PREFIX.*, write the manifest last, drop the work."""
    markers = [read_marker(job, shard) for shard in shards]
    missing = [shard.name for shard, marker in zip(shards, markers, strict=True) if not marker]
    if missing:
        raise ScifmError(f"{job.work_dir}: shards {missing[:5]} are not complete; rerun to resume")
    done: list[dict[str, Any]] = [m for m in markers if m]
    rejected = sum((Counter(m["rejected"]) for m in done), Counter())
    rejects_file = rejects_path(prefix)
    if sum(m["documents"] for m in done) == 0:
        _write_rejects(job, shards, done, rejects_file)
        shutil.rmtree(job.work_dir, ignore_errors=True)
        raise ScifmError(
            f"no valid document in the inputs ({sum(rejected.values())} records rejected: "
            f"{_reasons(rejected)}); see {rejects_file}"
        )
    manifest_path(prefix).unlink(missing_ok=True)
    _concatenate(job, shards, done, prefix)
    _write_rejects(job, shards, done, rejects_file)
    extra = {
        "rejected": sum(rejected.values()),
        "rejects": dict(sorted(rejected.items())),
        "rejects_file": rejects_file.name,
        "shards": len(shards),
        "config": {k: v for k, v in cfg.to_dict().items() if k not in RUN_ONLY},
    }
    totals = {
        "documents": sum(m["documents"] for m in done),
        "tokens": sum(m["tokens"] for m in done),
        "dtype": job.dtype,
    }
    write_manifest(prefix, totals, tokenizer, _input_entries(files, shards, done), extra)
    shutil.rmtree(job.work_dir, ignore_errors=True)


def _concatenate(
    job: ShardJob, shards: Sequence[Shard], markers: Sequence[dict[str, Any]], prefix: Path
) -> None:
    bin_path, idx_path = prefix_paths(prefix)
    with atomic_path(bin_path) as tmp, open(tmp, "wb") as out:
        for shard in shards:
            with open(job.bin(shard), "rb") as part:
                shutil.copyfileobj(part, out, 1 << 24)
    sizes = np.concatenate(
        [np.zeros(0, np.int32)] + [np.fromfile(job.sizes(shard), dtype="<i4") for shard in shards]
    )
    if int(sizes.sum(dtype=np.int64)) != sum(m["tokens"] for m in markers):
        raise ScifmError(f"{job.work_dir}: shard files disagree with their markers; rerun")
    write_index(idx_path, sizes, np.arange(len(sizes) + 1, dtype=np.int64), job.dtype)


def _write_rejects(
    job: ShardJob, shards: Sequence[Shard], markers: Sequence[dict[str, Any]], path: Path
) -> None:
    """Concatenate the shards' rejects; line numbers become line numbers in the whole file."""
    offsets: dict[int, int] = {}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for shard, marker in zip(shards, markers, strict=True):
            offset = offsets.get(shard.file_index, 0)
            offsets[shard.file_index] = offset + int(marker["positions"])
            with open(job.rejects(shard), encoding="utf-8") as part:
                _copy_rejects(part, out, offset)


def _copy_rejects(part: IO[str], out: IO[str], line_offset: int) -> None:
    for line in part:
        if line_offset:
            record = json.loads(line)
            if "line" in record:
                record["line"] += line_offset
            line = json.dumps(record, ensure_ascii=False) + "\n"
        out.write(line)


def _input_entries(
    files: Sequence[Path], shards: Sequence[Shard], markers: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """path, bytes, sha256, documents and rejected records of every input file, in order."""
    entries = []
    for index, path in enumerate(files):
        mine = [(s, m) for s, m in zip(shards, markers, strict=True) if s.file_index == index]
        whole = len(mine) == 1 and mine[0][0].whole_file
        entries.append(
            {
                "path": str(path),
                "bytes": mine[0][0].file_bytes if mine else path.stat().st_size,
                "sha256": mine[0][1]["sha256"] if whole else sha256_file(path),
                "documents": sum(m["documents"] for _, m in mine),
                "rejected": sum(sum(m["rejected"].values()) for _, m in mine),
            }
        )
    return entries


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"


def _stats(prefix: Path) -> dict[str, Any]:
    """What the command prints: counts, dtype and rejects, from the manifest just written."""
    manifest = json.loads(manifest_path(prefix).read_text(encoding="utf-8"))
    keys = ("documents", "tokens", "dtype", "rejected", "rejects", "shards")
    stats = {key: manifest[key] for key in keys}
    stats["prefix"] = str(prefix)
    stats["rejects_file"] = str(rejects_path(prefix))
    return stats


def _process_group(info: LaunchInfo) -> Any:
    """A gloo group over every rank (None for one process): ranks agree on success with it."""
    if not info.is_distributed:
        return None
    from datetime import timedelta

    import torch.distributed as dist

    from scifm.core.dist import init_distributed

    if dist.is_initialized():
        return dist.new_group(backend="gloo", timeout=timedelta(seconds=SYNC_TIMEOUT_S))
    init_distributed(timeout_s=SYNC_TIMEOUT_S, device="cpu")
    return dist.group.WORLD


def _any_rank(group: Any, failed: bool) -> bool:
    """Barrier of all ranks: True when any of them reports a failure."""
    if group is None:
        return failed
    import torch
    import torch.distributed as dist

    flag = torch.tensor([int(failed)], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return bool(flag.item())


def _release(group: Any) -> None:
    """Destroy the process group if tokenize created it (a caller's own group stays)."""
    if group is None:
        return
    import torch.distributed as dist

    if group is dist.group.WORLD:
        dist.destroy_process_group()
    else:
        dist.destroy_process_group(group)
