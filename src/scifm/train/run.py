"""The training loop of one process: mixture -> model -> AdamW -> metrics and checkpoints.

`train()` builds everything from typed configs and runs `total_steps` optimizer steps. The
data position is a pure function of the step (sample n of the blended stream), so a run
restarted in the same directory resumes from its latest checkpoint and sees exactly the
batches an uninterrupted run would have seen. Multi-process parallelism (FSDP, TP, PP) is
applied from outside the model by the parallel engine of a later issue.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

import scifm
from scifm.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from scifm.core.dist import (
    detect_launch,
    device_type,
    init_distributed,
    local_device,
    shutdown_distributed,
)
from scifm.core.errors import ScifmError
from scifm.core.logging import get_logger
from scifm.core.progress import track
from scifm.core.seed import seed_everything, set_deterministic
from scifm.data import DataConfig
from scifm.data.loader import TokenLoader
from scifm.data.mixture import mixture_fingerprint
from scifm.model import ModelConfig, build_model, count_params, flops_per_token
from scifm.parallel import ParallelConfig
from scifm.parallel.parallelize import build_mesh, data_parallel_rank, parallelize
from scifm.train.config import TrainConfig
from scifm.train.metrics import MetricsLog, read_metrics
from scifm.train.schedule import warmup_cosine

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
    step: int = 0
    tokens_seen: int = 0
    first_loss: float | None = None


def _resolve_device(cfg: TrainConfig) -> torch.device:
    kind = device_type() if cfg.device == "auto" else cfg.device
    launch = detect_launch()
    return local_device(launch, kind) if launch.is_distributed else torch.device(kind)


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, which are 1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, foreach=True
    )


def _check_shapes(model_cfg: ModelConfig, seq_len: int) -> None:
    """Samples must fit the RoPE table before any step runs (token ids are checked per batch)."""
    if seq_len > model_cfg.max_seq_len:
        raise ScifmError(
            f"data.seq_len={seq_len} exceeds model.max_seq_len={model_cfg.max_seq_len}; "
            "lower data.seq_len or raise model.max_seq_len"
        )


def _loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    inputs, labels = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def _checkpoint_state(model, optimizer, state: _State) -> dict[str, Any]:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd, "step": state.step, "tokens": state.tokens_seen}


_FREE_TO_CHANGE = {
    "out_dir",
    "max_steps",
    "max_tokens",
    "log_every",
    "checkpoint_every",
    "data_workers",
}


def _check_same_run(meta: dict[str, Any], trainer: _Trainer) -> None:
    """Resuming is only exact for the same model, data and optimisation settings."""
    train_now = {k: v for k, v in trainer.cfg.to_dict().items() if k not in _FREE_TO_CHANGE}
    train_then = {k: v for k, v in meta.get("train", {}).items() if k not in _FREE_TO_CHANGE}
    changed = [
        name
        for name, then, now in (
            ("model", meta.get("model"), trainer.model_cfg.to_dict()),
            ("data", meta.get("data"), trainer.data_cfg.to_dict()),
            ("train", train_then, train_now),
        )
        if then != now
    ] + [key for key, value in trainer.metadata.items() if meta.get(key) != value]
    if changed:
        raise ScifmError(
            f"{trainer.run_dir} holds a run with different {', '.join(changed)} settings; "
            "resume it with the same recipe, or train into a new --out directory"
        )


def _resume(trainer: _Trainer) -> None:
    found = latest_checkpoint(trainer.run_dir)
    if found is None:
        return
    _check_same_run(found.metadata, trainer)
    model, optimizer, state = trainer.model, trainer.optimizer, trainer.state
    sd = _checkpoint_state(model, optimizer, state)
    meta = load_checkpoint(found.path, sd)
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    state.step, state.tokens_seen = int(meta["step"]), int(meta["tokens_seen"])
    state.first_loss = meta.get("first_loss")
    trainer.seek(int(meta.get("consumed_samples", state.step * trainer.samples_per_step)))
    log.info("resumed from %s (step %d)", found.path, state.step)


class _Trainer:
    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig, cfg: TrainConfig,
                 metadata: dict[str, Any], parallel: ParallelConfig) -> None:  # fmt: skip
        self.model_cfg, self.data_cfg, self.cfg = model_cfg, data_cfg, cfg
        self.run_dir = Path(cfg.out_dir)
        self.metadata = metadata
        self.device = _resolve_device(cfg)
        self.mesh = None
        self.dp_rank, self.dp_size = 0, 1
        if dist.is_initialized():
            self.mesh = build_mesh(parallel, dist.get_world_size(), self.device.type)
            self.dp_rank, self.dp_size = data_parallel_rank(self.mesh)
        self.is_main = not dist.is_initialized() or dist.get_rank() == 0
        _check_shapes(model_cfg, data_cfg.seq_len)
        self.loader = self._make_loader(consumed_samples=0)
        mixture = self.loader.sampler.mixture  # opened here: a bad file fails before the model
        self.metadata = {**metadata, "mixture_sha256": mixture_fingerprint(mixture)}
        self.model = build_model(model_cfg, device=self.device, seed=cfg.seed)
        if self.mesh is not None:  # the same full init on every rank, then sharded
            parallelize(self.model, parallel, self.mesh)
        self.optimizer = _make_optimizer(self.model, cfg)
        self.total_steps = cfg.total_steps(data_cfg.seq_len, self.dp_size)
        self.samples_per_step = cfg.micro_batch_size * cfg.grad_accum_steps * self.dp_size
        self.state = _State()
        self.flops_per_token = flops_per_token(model_cfg, data_cfg.seq_len)

    def _make_loader(self, consumed_samples: int) -> TokenLoader:
        cfg = self.cfg
        return TokenLoader(
            self.data_cfg,
            global_batch=cfg.micro_batch_size * cfg.grad_accum_steps * self.dp_size,
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

    def step(self) -> dict[str, float]:
        cfg, state = self.cfg, self.state
        lr = cfg.lr * warmup_cosine(state.step, self.total_steps, cfg.warmup_steps,
                                    cfg.min_lr_ratio)  # fmt: skip
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        data_s = compute_s = 0.0
        loss_sum = 0.0
        for _ in range(cfg.grad_accum_steps):
            t0 = time.perf_counter()
            batch = next(self.loader)["tokens"].to(self.device, non_blocking=True)
            t1 = time.perf_counter()
            loss = _loss(self.model, batch) / cfg.grad_accum_steps
            loss.backward()
            loss_sum += float(loss.detach())
            data_s, compute_s = data_s + t1 - t0, compute_s + time.perf_counter() - t1
        t2 = time.perf_counter()
        loss_sum = self._mean_over_ranks(loss_sum)
        grad_norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        compute_s += time.perf_counter() - t2
        state.step += 1
        state.tokens_seen += self.samples_per_step * self.data_cfg.seq_len
        if state.first_loss is None:
            state.first_loss = loss_sum
        return {"loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
                "data_s": data_s, "compute_s": compute_s}  # fmt: skip

    def _mean_over_ranks(self, value: float) -> float:
        if self.dp_size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)  # gloo has no AVG: sum, then divide
        return float(total) / dist.get_world_size()

    def _clip(self) -> float:
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm, foreach=True)
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)

    def save(self) -> Path:
        meta = {
            **self.metadata,
            "tokens_seen": self.state.tokens_seen,
            "first_loss": self.state.first_loss,
            "consumed_samples": self.loader.consumed_samples,
            "model": self.model_cfg.to_dict(),
            "data": self.data_cfg.to_dict(),
            "train": self.cfg.to_dict(),
            "rope_convention": self.model_cfg.rope_convention,
            "scifm_version": scifm.__version__,
        }
        state = _checkpoint_state(self.model, self.optimizer, self.state)
        return save_checkpoint(self.run_dir, self.state.step, state, meta)


def _record(trainer: _Trainer, stats: dict[str, float], window: dict[str, float]) -> dict:
    elapsed = window["elapsed_s"]
    tokens_per_s = window["tokens"] / elapsed if elapsed > 0 else 0.0
    return {
        "step": trainer.state.step,
        "tokens_seen": trainer.state.tokens_seen,
        "loss": round(window["loss"] / window["steps"], 6),
        "lr": stats["lr"],
        "grad_norm": round(stats["grad_norm"], 6),
        "tokens_per_s": round(tokens_per_s, 1),
        "achieved_flops": round(tokens_per_s * trainer.flops_per_token, 1),
        "step_time_s": round(elapsed / window["steps"], 4),
        "data_wait_s": round(window["data_s"] / window["steps"], 5),
        "compute_s": round(window["compute_s"] / window["steps"], 4),
        "memory_mb": _memory_mb(trainer.device),
    }


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _new_window() -> dict[str, float]:
    return {"elapsed_s": 0.0, "tokens": 0, "steps": 0, "data_s": 0.0, "compute_s": 0.0, "loss": 0.0}


def train(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    cfg: TrainConfig,
    metadata: dict[str, Any] | None = None,
    parallel: ParallelConfig | None = None,
) -> TrainResult:
    """Run (or resume) training in `cfg.out_dir`; returns what the run achieved.

    Under torchrun / mpiexec / srun the ranks form the `parallel` layout (FSDP2 / HSDP data
    parallelism); the data stream is the same global stream, sliced by data-parallel rank.
    """
    started = False
    if detect_launch().is_distributed and not dist.is_initialized():
        kind = device_type() if cfg.device == "auto" else cfg.device
        init_distributed(device=kind)
        started = True
    try:
        return _train(model_cfg, data_cfg, cfg, metadata or {}, parallel or ParallelConfig())
    finally:
        if started:
            shutdown_distributed()


def _train(model_cfg: ModelConfig, data_cfg: DataConfig, cfg: TrainConfig,
           metadata: dict[str, Any], parallel: ParallelConfig) -> TrainResult:  # fmt: skip
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if cfg.deterministic:
        set_deterministic(True)
    trainer = _Trainer(model_cfg, data_cfg, cfg, metadata, parallel)
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    _resume(trainer)
    return _loop(trainer)


def _loop(trainer: _Trainer) -> TrainResult:
    cfg, state = trainer.cfg, trainer.state
    path = trainer.run_dir / "metrics.jsonl"
    metrics = MetricsLog(path, resume_step=state.step) if trainer.is_main else None
    window, run_tokens, run_start = _new_window(), 0, time.perf_counter()
    with track(trainer.total_steps, "train") as bar:
        bar.advance(state.step)
        while state.step < trainer.total_steps:
            start = time.perf_counter()
            stats = trainer.step()
            _accumulate(window, stats, time.perf_counter() - start, trainer)
            run_tokens += trainer.samples_per_step * trainer.data_cfg.seq_len
            bar.update(description=f"train loss {stats['loss']:.3f}")
            bar.advance(1)
            if state.step % cfg.log_every == 0 or state.step == trainer.total_steps:
                record = _record(trainer, stats, window)
                if metrics is not None:
                    metrics.write(record)
                window = _new_window()
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                trainer.save()
    if metrics is not None:
        metrics.close()
    if dist.is_initialized():
        dist.barrier()  # every rank reads the finished metrics file below
    latest = latest_checkpoint(trainer.run_dir)
    checkpoint = latest.path if latest and latest.step == state.step else trainer.save()
    elapsed = time.perf_counter() - run_start
    records = read_metrics(path)
    speed = (
        run_tokens / elapsed
        if run_tokens
        else statistics.median([r["tokens_per_s"] for r in records] or [0.0])
    )
    return TrainResult(
        run_dir=trainer.run_dir,
        steps=state.step,
        tokens_seen=state.tokens_seen,
        first_loss=float(state.first_loss if state.first_loss is not None else "nan"),
        last_loss=float(records[-1]["loss"]) if records else float("nan"),
        tokens_per_s=speed,
        num_params=count_params(trainer.model_cfg),
        checkpoint=checkpoint,
        elapsed_s=elapsed,
    )


def _accumulate(window: dict, stats: dict, seconds: float, trainer: _Trainer) -> None:
    window["elapsed_s"] += seconds
    window["tokens"] += trainer.samples_per_step * trainer.data_cfg.seq_len
    window["steps"] += 1
    window["data_s"] += stats["data_s"]
    window["compute_s"] += stats["compute_s"]
    window["loss"] += stats["loss"]
