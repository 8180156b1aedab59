"""The training loop: mixture -> model -> parallel layout -> optimizer -> callbacks.

`train()` builds a `Trainer` from typed configs and runs `total_steps` optimizer steps. The
data position is one number (the global consumed-sample count), so a run restarted in the
same directory resumes from its latest checkpoint and sees exactly the batches an
uninterrupted run would have seen, at any data-parallel size. One step: read this rank's
micro-batches, forward and backward through the step runner (gradient accumulation, or a
pipeline schedule), average the loss over ranks, clip the global gradient norm, step the
optimizer. Metrics, checkpoints and the progress bar are callbacks (`train.callbacks`).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

import scifm
from scifm.checkpoint import (
    Checkpointer,
    CheckpointInfo,
    latest_checkpoint,
    load_checkpoint,
    load_rank_state,
)
from scifm.core.dist import (
    detect_launch,
    device_type,
    init_distributed,
    local_device,
    shutdown_distributed,
)
from scifm.core.errors import ScifmError
from scifm.core.logging import get_logger
from scifm.core.seed import rng_state, seed_everything, set_deterministic, set_rng_state
from scifm.core.version import code_version
from scifm.data import DataConfig
from scifm.data.loader import TokenLoader
from scifm.data.mixture import mixture_fingerprint
from scifm.model import ModelConfig, build_model, count_params, flops_per_token
from scifm.parallel import ParallelConfig
from scifm.parallel.norms import clip_grad_norm
from scifm.parallel.parallelize import build_mesh, data_parallel_rank, parallelize
from scifm.parallel.pp import build_pipeline
from scifm.train.anomaly import AnomalyDetector, TrainingStopped
from scifm.train.callbacks import Callback, StepStats, default_callbacks
from scifm.train.config import TrainConfig
from scifm.train.faults import FaultInjector
from scifm.train.loss import HessianProbeLoss, LanguageModelLoss
from scifm.train.metrics import read_metrics
from scifm.train.optim import build_optimizer, wants_hessian
from scifm.train.preempt import Preempted, SignalFlag
from scifm.train.schedule import lr_multiplier
from scifm.train.step import LocalRunner, StepRunner
from scifm.train.stragglers import StragglerDetector
from scifm.train.watchdog import StepWatchdog

log = get_logger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens_seen: int
    first_loss: float
    last_loss: float
    tokens_per_s: float
    num_params: int
    checkpoint: Path
    elapsed_s: float


@dataclass
class _State:
    """What a checkpoint's metadata carries besides the tensors."""

    step: int = 0
    tokens_seen: int = 0
    first_loss: float | None = None
    bad_steps: int = 0
    skipped_steps: int = 0
    rollbacks: int = 0
    skipped_samples: int = 0

    def restore(self, meta: dict[str, Any]) -> None:
        for name, value in asdict(_State()).items():
            setattr(self, name, meta.get(name, value))


def _resolve_device(cfg: TrainConfig) -> torch.device:
    kind = device_type() if cfg.device == "auto" else cfg.device
    launch = detect_launch()
    return local_device(launch, kind) if launch.is_distributed else torch.device(kind)


def _check_shapes(model_cfg: ModelConfig, seq_len: int) -> None:
    """Samples must fit the RoPE table before any step runs (token ids are checked per batch)."""
    if seq_len > model_cfg.max_seq_len:
        raise ScifmError(
            f"data.seq_len={seq_len} exceeds model.max_seq_len={model_cfg.max_seq_len}; "
            "lower data.seq_len or raise model.max_seq_len"
        )


_FREE_TO_CHANGE = {
    "out_dir",
    "max_steps",
    "max_tokens",
    "log_every",
    "metrics",
    "checkpoint",
    "anomaly",
    "watchdog",
    "stragglers",
    "data_workers",
}


def _comparable_train(settings: dict[str, Any]) -> dict[str, Any]:
    """Train settings that must match to resume; fields newer than the checkpoint take
    their defaults."""
    defaults = TrainConfig(max_steps=1).to_dict()
    merged = {**defaults, **settings}
    return {k: v for k, v in merged.items() if k in defaults and k not in _FREE_TO_CHANGE}


def _check_same_run(meta: dict[str, Any], trainer: Trainer) -> None:
    """Resuming is only exact for the same model, data and optimisation settings."""
    now_train = _comparable_train(trainer.cfg.to_dict())
    sections = (
        ("model", meta.get("model"), trainer.model_cfg.to_dict()),
        ("data", meta.get("data"), trainer.data_cfg.to_dict()),
        ("train", _comparable_train(meta.get("train", {})), now_train),
    )
    changed = [name for name, then, now in sections if then != now]
    changed += [
        key for key, value in trainer.metadata.items() if key in meta and meta[key] != value
    ]  # keys newer than the checkpoint pass
    if changed:
        raise ScifmError(
            f"{trainer.run_dir} holds a run with different {', '.join(changed)} settings; "
            "resume it with the same recipe, or train into a new --out directory"
        )


class Trainer:
    """Everything one rank needs to run optimizer steps, built from the configs."""

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig, cfg: TrainConfig,
                 metadata: dict[str, Any], parallel: ParallelConfig) -> None:  # fmt: skip
        self.model_cfg, self.data_cfg, self.cfg, self.parallel = model_cfg, data_cfg, cfg, parallel
        self.run_dir = Path(cfg.out_dir)
        self.device = _resolve_device(cfg)
        self.mesh = None
        self.dp_rank, self.dp_size = 0, 1
        if dist.is_initialized():
            self.mesh = build_mesh(parallel, dist.get_world_size(), self.device.type)
            self.dp_rank, self.dp_size = data_parallel_rank(self.mesh)
        else:
            parallel.layout(1)  # tp or pp > 1 without a launcher: one clear error
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.is_main = self.rank == 0
        self.faults = FaultInjector(self.rank)  # a malformed SCIFM_FAULT fails first
        _check_shapes(model_cfg, data_cfg.seq_len)
        self.batch_schedule = cfg.batch_schedule(data_cfg.seq_len, self.dp_size)
        self.loader = self._make_loader(consumed_samples=0)
        mixture = self.loader.sampler.mixture  # opened here: a bad file fails before the model
        self.metadata = {"tokenizer_sha256": mixture.tokenizer_sha256, **metadata,
                         "mixture_sha256": mixture_fingerprint(mixture)}  # fmt: skip
        self.model = build_model(model_cfg, device=self.device, seed=cfg.seed)
        self.model_parts: list[torch.nn.Module] = [self.model]
        self.runner: StepRunner = LocalRunner(self.model)
        self.pp_group: dist.ProcessGroup | None = None
        if self.mesh is not None and parallel.pp > 1:  # self.model is pruned to this rank's stages
            self.model_parts, self.runner = build_pipeline(
                self.model, parallel, self.mesh, self.device,
                cfg.accumulation(data_cfg.seq_len, self.dp_size),
            )  # fmt: skip
            self.pp_group = self.mesh["pp"].get_group()
        else:  # the same full init on every rank, then sharded (one process: AC, compile)
            parallelize(self.model, parallel, self.mesh)
        self.optimizer = build_optimizer(self.model_parts, cfg.optimizer)
        self.loss_fn = LanguageModelLoss(cfg.z_loss_weight)
        self.total_steps = cfg.total_steps(data_cfg.seq_len, self.dp_size)
        self.state = _State()
        self.flops_per_token = flops_per_token(model_cfg, data_cfg.seq_len)
        self.checkpointer = Checkpointer(
            self.run_dir, cfg.checkpoint, on_written=self.faults.after_checkpoint_write
        )
        self.saved_step: int | None = None
        self.anomaly = AnomalyDetector(cfg.anomaly)
        self.signals = SignalFlag(cfg.checkpoint.save_on_signals)
        self.stop_signal: int | None = None
        self.watchdog = _make_watchdog(cfg, self.run_dir)
        if self.watchdog is not None:
            self.watchdog.watch(self.model_parts, _blocks(self.model_parts))
        self.stragglers = _make_straggler_detector(cfg)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def world_size(self) -> int:
        return dist.get_world_size() if dist.is_initialized() else 1

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the matmuls (the peak FLOP/s MFU is measured against)."""
        return torch.bfloat16 if self.parallel.param_dtype == "bfloat16" else torch.float32

    def run_config(self) -> dict[str, Any]:
        """Every setting of the run, for the metric sinks (W&B's run config)."""
        return {"model": self.model_cfg.to_dict(), "data": self.data_cfg.to_dict(),
                "train": self.cfg.to_dict(), "parallel": self.parallel.to_dict(),
                **self.metadata}  # fmt: skip

    def _make_loader(self, consumed_samples: int) -> TokenLoader:
        cfg = self.cfg
        return TokenLoader(
            self.data_cfg,
            global_batch=self.batch_schedule,
            micro_batch=cfg.micro_batch_size,
            rank=self.dp_rank,
            world=self.dp_size,
            consumed_samples=consumed_samples,
            vocab_size=self.model_cfg.vocab_size,
            num_workers=cfg.data_workers,
            pin_memory=self.device.type == "cuda",
        )

    def seek(self, consumed_samples: int) -> None:
        """Continue the data stream from a global sample count (after a resume)."""
        self.loader = self._make_loader(consumed_samples)

    def step(self) -> StepStats:
        """One optimizer step over the next global batch (or a bad step handled by policy)."""
        cfg, state = self.cfg, self.state
        number = state.step + 1
        if self.watchdog is not None:
            self.watchdog.step_started(number)
        self.faults.at_step_start(number)
        multiplier = lr_multiplier(state.step, self.total_steps, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * multiplier
        start = time.perf_counter()
        samples = self.loader.batch_size
        micro_batches = [m["tokens"].to(self.device, non_blocking=True)
                         for m in self.loader.next_step()]  # fmt: skip
        loaded = time.perf_counter()
        loss, local_s = self._compute(number, micro_batches, samples)
        computed = time.perf_counter()
        if self.watchdog is not None:
            self.watchdog.arrived(number)
        loss = self._mean_over_ranks(loss)
        grad_norm = clip_grad_norm(self._parameters(), cfg.grad_clip, self.pp_group)
        reason = self.anomaly.verdict(loss, grad_norm)
        bad, self.stop_signal = self._agree(reason is not None, self.signals.received)
        synced = time.perf_counter()
        if not bad:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _wait_for(self.device)
        done = time.perf_counter()
        state.step += 1
        state.tokens_seen += samples * self.data_cfg.seq_len
        if bad:
            self._bad_step(number, reason or "another rank saw a bad step")
        elif state.first_loss is None:
            state.first_loss = loss
        if self.stragglers is not None:
            self.stragglers.record(local_s)
            self.stragglers.check(number)
        if self.watchdog is not None:
            self.watchdog.step_finished(number)
        self.checkpointer.poll()
        return StepStats(
            loss=loss, lr=cfg.optimizer.lr * multiplier, grad_norm=grad_norm, samples=samples,
            tokens=samples * self.data_cfg.seq_len, data_s=loaded - start,
            compute_s=(computed - loaded) + (done - synced), comm_s=synced - computed,
            step_s=done - start, local_s=local_s, bad=bad,
        )  # fmt: skip

    def _compute(self, number: int, micro_batches: list[torch.Tensor],
                 samples: int) -> tuple[float, float]:  # fmt: skip
        """Forward and backward of this rank's micro-batches: (local loss, own compute time)."""
        start = _local_clock(self.device)
        if wants_hessian(self.optimizer, self.state.step):
            self._refresh_hessian(micro_batches, samples)
        loss = self.runner.run(micro_batches, self.loss_fn)  # float(): waits for the device
        self.faults.in_compute(number)
        if self.faults.poison(number, self._parameters()):
            loss = float("nan")
        return loss, _local_clock(self.device) - start

    def _agree(self, bad: bool, signal: int | None) -> tuple[bool, int | None]:
        """Every rank takes the same branch: bad if any rank says so, and any rank's signal."""
        flags = torch.tensor([int(bad), signal or 0], dtype=torch.int64)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), int(flags[1]) or None

    def _bad_step(self, number: int, reason: str) -> None:
        """Apply the anomaly policy to step `number`, whose update was not applied."""
        policy, state = self.cfg.anomaly, self.state
        state.bad_steps += 1
        if policy.policy == "stop" or (policy.policy == "rollback"
                                       and state.rollbacks >= policy.max_rollbacks):  # fmt: skip
            raise TrainingStopped(
                f"step {number}: {reason}; stopping (train.anomaly.policy={policy.policy}"
                f", {state.rollbacks} rollbacks); the last checkpoint is untouched"
            )
        if policy.policy == "skip":
            state.skipped_steps += 1
            log.warning("step %d: %s; update skipped (%d so far)", number, reason,
                        state.skipped_steps)  # fmt: skip
            return
        self._rollback(number, reason)

    def _rollback(self, number: int, reason: str) -> None:
        """Reload the newest checkpoint, keep the data position after the bad batch."""
        self.checkpointer.wait()
        found = self._newest_checkpoint()
        if found is None:
            raise TrainingStopped(f"step {number}: {reason}; no checkpoint to roll back to "
                                  "(set train.checkpoint.every)")  # fmt: skip
        position, counters = self.loader.consumed_samples, asdict(self.state)
        self._load(found)
        skipped = position - self.loader.consumed_samples
        self.state.restore({**counters, "step": self.state.step,
                            "tokens_seen": self.state.tokens_seen,
                            "first_loss": self.state.first_loss})  # fmt: skip
        self.state.rollbacks += 1
        self.state.skipped_samples += skipped
        self.seek(position)
        log.warning("step %d: %s; rolled back to step %d, stepping over %d samples",
                    number, reason, self.state.step, skipped)  # fmt: skip

    def _refresh_hessian(self, micro_batches: list[torch.Tensor], samples: int) -> None:
        """SophiaG's Gauss-Newton-Bartlett estimate: one backward of the loss against labels
        sampled from the model's own predictions, through the same runner (pipelines too)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.runner.run(micro_batches, HessianProbeLoss())
        self.optimizer.update_hessian(num_tokens=samples * self.data_cfg.seq_len)
        self.optimizer.zero_grad(set_to_none=True)

    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for part in self.model_parts for p in part.parameters()]

    def _mean_over_ranks(self, value: float) -> float:
        """Mean over data-parallel ranks (ranks of one data rank hold the same loss)."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)  # gloo has no AVG: sum, then divide
        return float(total) / dist.get_world_size()

    def checkpoint_state(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return {"model": model_sd, "optim": optim_sd}

    def load_state(self, state: dict[str, Any]) -> None:
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])  # fmt: skip

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {
            **self.metadata,
            **asdict(self.state),
            "consumed_samples": self.loader.consumed_samples,
            "world_size": self.world_size,
            "global_batch": self.batch_schedule.final,
            "model": self.model_cfg.to_dict(),
            "data": self.data_cfg.to_dict(),
            "train": self.cfg.to_dict(),
            "parallel": self.parallel.to_dict(),
            "rope_convention": self.model_cfg.rope_convention,
            "scifm_version": scifm.__version__,
            "code_version": code_version(),
        }

    def save(self) -> Path:
        """Checkpoint the current step (asynchronously when configured)."""
        path = self.checkpointer.save(self.state.step, self.checkpoint_state(),
                                      self.checkpoint_metadata(), rng_state())  # fmt: skip
        self.saved_step = self.state.step
        return path

    def _load(self, found: CheckpointInfo) -> None:
        """Model, optimizer, step counters, RNG and data position from a checkpoint."""
        state = self.checkpoint_state()
        meta = load_checkpoint(found.path, state)
        self.load_state(state)
        self.state.restore(meta)
        self.saved_step = self.state.step
        self._restore_rng(found.path, meta)
        consumed = meta.get("consumed_samples")
        self.seek(int(consumed) if consumed is not None
                  else self.batch_schedule.position_after(self.state.step))  # fmt: skip

    def _restore_rng(self, path: Path, meta: dict[str, Any]) -> None:
        """Same world size: each rank's saved generators; otherwise a seed derived from the
        step, so a resharded run is still reproducible."""
        saved = (
            load_rank_state(path, self.rank) if meta.get("world_size") == self.world_size else None
        )
        if saved is not None:
            set_rng_state(saved)
        else:
            seed_everything(self.cfg.seed + self.state.step, self.rank)

    def _newest_checkpoint(self) -> CheckpointInfo | None:
        """Rank 0 scans the run directory and tells the others (no metadata storm on a
        parallel filesystem from thousands of ranks listing the same files)."""
        found = [latest_checkpoint(self.run_dir, warn=True) if self.is_main else None]
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast_object_list(found, src=0)
        return found[0]

    def resume(self) -> None:
        """Continue from the newest complete checkpoint in the run directory, if any."""
        found = self._newest_checkpoint()
        if found is None:
            return
        _check_same_run(found.metadata, self)
        self._load(found)
        saved_batch = found.metadata.get("global_batch")
        if saved_batch is not None and saved_batch != self.batch_schedule.final:
            log.warning("the global batch changes from %d to %d samples at this layout; set "
                        "train.global_batch_tokens to keep it across world sizes",
                        saved_batch, self.batch_schedule.final)  # fmt: skip
        log.info("resumed from %s (step %d)", found.path, self.state.step)


def _wait_for(device: torch.device) -> None:
    """Let timestamps mean finished work on asynchronous devices."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _local_clock(device: torch.device) -> float:
    """This rank's own compute clock: process CPU time on CPU, where a rank blocked in a
    collective accrues little; wall time on accelerators (see `train.stragglers`)."""
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def _make_watchdog(cfg: TrainConfig, run_dir: Path) -> StepWatchdog | None:
    timeout = cfg.watchdog.step_timeout_s
    if timeout is None:
        return None
    first = cfg.watchdog.first_step_timeout_s or 10 * timeout
    return StepWatchdog(timeout, first_deadline_s=first, dump_dir=run_dir)


def _blocks(parts: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """The transformer blocks held by this rank (pipeline stages hold some of them)."""
    return [block for part in parts if hasattr(part, "layers") for block in part.layers.values()]


def _make_straggler_detector(cfg: TrainConfig) -> StragglerDetector | None:
    every = cfg.stragglers.every
    if every is None or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return StragglerDetector(every, cfg.stragglers.factor)


def train(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    cfg: TrainConfig,
    metadata: dict[str, Any] | None = None,
    parallel: ParallelConfig | None = None,
    callbacks: list[Callback] | None = None,
) -> TrainResult:
    """Run (or resume) training in `cfg.out_dir`; returns what the run achieved.

    Under torchrun / mpiexec / srun the ranks form the `parallel` layout; the data stream is
    the same global stream, sliced by data-parallel rank. `callbacks` replace the default
    metrics, checkpoint and progress callbacks. Raises `Preempted` after saving when a
    configured signal arrived, and `TrainingStopped` when the anomaly policy ends the run.
    """
    started = False
    if detect_launch().is_distributed and not dist.is_initialized():
        kind = device_type() if cfg.device == "auto" else cfg.device
        init_distributed(timeout_s=cfg.watchdog.collective_timeout_s, device=kind)
        started = True
    try:
        return _train(model_cfg, data_cfg, cfg, metadata or {}, parallel or ParallelConfig(),
                      default_callbacks() if callbacks is None else callbacks)  # fmt: skip
    finally:
        if started:
            shutdown_distributed()


def _train(model_cfg: ModelConfig, data_cfg: DataConfig, cfg: TrainConfig,
           metadata: dict[str, Any], parallel: ParallelConfig,
           callbacks: list[Callback]) -> TrainResult:  # fmt: skip
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if cfg.deterministic:
        set_deterministic(True)
    trainer = Trainer(model_cfg, data_cfg, cfg, metadata, parallel)
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    trainer.resume()
    if cfg.anomaly.policy == "rollback" and trainer.saved_step is None:
        trainer.save()  # a rollback needs somewhere to go back to
    with contextlib.ExitStack() as stack:
        stack.enter_context(trainer.signals)
        if trainer.watchdog is not None:
            trainer.watchdog.start()
            stack.callback(trainer.watchdog.stop)
        result = _loop(trainer, callbacks)
    trainer.checkpointer.close()  # a collective: not on the way out of a failure
    return result


def _loop(trainer: Trainer, callbacks: list[Callback]) -> TrainResult:
    state = trainer.state
    run_tokens, run_start = 0, time.perf_counter()
    try:
        for callback in callbacks:
            callback.on_train_start(trainer)
        while state.step < trainer.total_steps:
            stats = trainer.step()
            run_tokens += stats.tokens
            for callback in callbacks:
                callback.on_step_end(trainer, stats)
            if trainer.stop_signal is not None:
                _save_and_stop(trainer)
    finally:
        for callback in callbacks:
            callback.on_train_end(trainer)
    if dist.is_initialized():
        dist.barrier()  # every rank reads the finished metrics file below
    trainer.checkpointer.wait()
    latest = latest_checkpoint(trainer.run_dir)
    checkpoint = latest.path if latest and latest.step == state.step else trainer.save()
    trainer.checkpointer.wait()
    elapsed = time.perf_counter() - run_start
    records = read_metrics(trainer.metrics_path)
    speed = (
        run_tokens / elapsed
        if run_tokens
        else statistics.median([r["tokens_per_s"] for r in records] or [0.0])
    )
    finite = [r["loss"] for r in records if math.isfinite(r["loss"])]
    return TrainResult(
        run_dir=trainer.run_dir,
        steps=state.step,
        tokens_seen=state.tokens_seen,
        first_loss=float(state.first_loss if state.first_loss is not None else "nan"),
        last_loss=float(finite[-1]) if finite else float("nan"),
        tokens_per_s=speed,
        num_params=count_params(trainer.model_cfg),
        checkpoint=checkpoint,
        elapsed_s=elapsed,
    )


def _save_and_stop(trainer: Trainer) -> None:
    """A scheduler's signal reached some rank: save this step (all ranks), then stop."""
    signum = trainer.stop_signal
    assert signum is not None
    if trainer.saved_step != trainer.state.step:
        trainer.save()
    trainer.checkpointer.wait()
    path = latest_checkpoint(trainer.run_dir)
    raise Preempted(signum, str(path.path if path else trainer.run_dir))
