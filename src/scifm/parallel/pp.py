"""Pipeline parallelism: the model split into stages of whole layers, run by a torch schedule.

The trainer builds the full, identically seeded model on every rank; `build_pipeline` then
keeps only this rank's stages. Each stage is a `Llama` whose submodules are the full model's
own objects (the embedding on the first stage, norm + output on the last, a balanced run of
layers on each), so every parameter keeps its full-model name (`layers.3.attention.wq.weight`)
and a checkpoint saved at one layout loads at another. The model handed in is pruned in place
to the union of this rank's stages: the trainer keeps using it for the optimizer and for
checkpoints, and the stages (`model_parts`) are what the schedule runs.

Stages are numbered along the model. With `pp_stages_per_rank` = v > 1 (Interleaved1F1B), rank
r holds stages r, r + pp, r + 2 pp, ... ("loop" order, what torch's interleaved schedules
expect), so the last stage is always on pp rank pp - 1.

`PipelineRunner` is the trainer's step seam (`scifm.train.step`): it concatenates one step's
micro-batches into the batch the schedule splits again (n_microbatches = their number, so
micro_batch_size and grad_accum_steps mean the same with and without PP), scales each
micro-batch's loss by 1 / n as gradient accumulation does (the schedule's own scaling is off),
and broadcasts the mean cross entropy from the last stage to every pp rank.

Each stage is parallelized like a whole model (TP -> AC -> compile -> FSDP2 on its own).
Refused with a one-line error: tied embeddings (the first and last stage would share one
weight across ranks) and TP with sequence parallelism (a later stage receives
sequence-split activations, and the model sizes RoPE from its input's length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from scifm.core.errors import ScifmError
from scifm.model import Llama, ModelConfig
from scifm.parallel.config import ParallelConfig
from scifm.parallel.parallelize import parallelize

__all__ = [
    "PipelineRunner",
    "RecordingLoss",
    "StageSpec",
    "build_pipeline",
    "check_microbatches",
    "split_stages",
    "stage_layer_counts",
    "validate_pipeline",
]


class RecordingLoss(Protocol):
    """The trainer's loss (`scifm.train.loss.LanguageModelLoss`): a scalar to backpropagate per
    call, and the mean of the recorded cross entropies since the last pop."""

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def pop_mean(self) -> float | None: ...


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage: its index along the model and the layers it holds."""

    index: int
    num_stages: int
    layers: tuple[int, ...]

    @property
    def is_first(self) -> bool:
        """Holds the token embedding."""
        return self.index == 0

    @property
    def is_last(self) -> bool:
        """Holds the final norm and the output projection."""
        return self.index == self.num_stages - 1


# ----------------------------------------------------------------------------- the split


def num_stages(cfg: ParallelConfig) -> int:
    return cfg.pp * cfg.pp_stages_per_rank


def stage_layer_counts(num_layers: int, stages: int) -> list[int]:
    """Layers per stage, balanced: counts differ by at most one.

    Every stage gets num_layers // stages; the remainder r < stages goes one each to the
    middle stages 1, 2, ..., then to the first, never to the last. The last stage also runs
    the norm and the dim x vocab output matmul (as costly as a layer at Llama shapes), and
    the first stage holds the most activations in flight under 1F1B (one per stage ahead).
    """
    base, extra = divmod(num_layers, stages)
    priority = [*range(1, stages - 1), 0]
    favoured = set(priority[:extra])
    return [base + (i in favoured) for i in range(stages)]


def split_stages(model_cfg: ModelConfig, cfg: ParallelConfig, pp_rank: int) -> list[StageSpec]:
    """The stages pp rank `pp_rank` holds, in model order (r, r + pp, ... for interleaving)."""
    validate_pipeline(model_cfg, cfg)
    if not 0 <= pp_rank < cfg.pp:
        raise ScifmError(f"pp rank {pp_rank} is outside parallel.pp={cfg.pp}")
    total = num_stages(cfg)
    counts = stage_layer_counts(model_cfg.num_layers, total)
    starts = [sum(counts[:i]) for i in range(total)]
    return [
        StageSpec(index, total, tuple(range(starts[index], starts[index] + counts[index])))
        for index in range(pp_rank, total, cfg.pp)
    ]


def validate_pipeline(
    model_cfg: ModelConfig, cfg: ParallelConfig, num_microbatches: int | None = None
) -> None:
    """One-line ScifmError for a pipeline layout the model or the schedule cannot run."""
    stages = num_stages(cfg)
    per_rank, schedule = cfg.pp_stages_per_rank, cfg.pp_schedule
    if schedule == "Interleaved1F1B" and per_rank < 2:
        raise ScifmError(
            f"parallel.pp_schedule=Interleaved1F1B needs parallel.pp_stages_per_rank >= 2 "
            f"(got {per_rank}); raise it, or use pp_schedule 1F1B or GPipe"
        )
    if schedule != "Interleaved1F1B" and per_rank > 1:
        raise ScifmError(
            f"parallel.pp_schedule={schedule} runs one stage per rank but "
            f"parallel.pp_stages_per_rank={per_rank}; set it to 1, or use Interleaved1F1B"
        )
    if stages > model_cfg.num_layers:
        raise ScifmError(
            f"parallel.pp={cfg.pp} x pp_stages_per_rank={per_rank} = {stages} stages but the "
            f"model has {model_cfg.num_layers} layers; lower parallel.pp or "
            "parallel.pp_stages_per_rank (each stage needs at least one layer)"
        )
    if cfg.pp > 1 and model_cfg.tie_embeddings:
        raise ScifmError(
            "model.tie_embeddings=true shares one weight between the first and the last "
            "pipeline stage, which sit on different ranks; set model.tie_embeddings=false "
            "or parallel.pp=1"
        )
    if num_microbatches is not None:
        check_microbatches(cfg, num_microbatches)


def check_microbatches(cfg: ParallelConfig, num_microbatches: int) -> None:
    """What torch 2.13's schedules accept, as one ScifmError naming the fix.

    1F1B needs at least one micro-batch per stage. Interleaved1F1B runs max(1, n // pp)
    rounds and needs n to be a multiple of them (any n <= pp, or a multiple of pp, works).
    GPipe takes any n >= 1. (n = train.grad_accum_steps: micro-batches per step and pipeline.)
    """
    stages, n = num_stages(cfg), num_microbatches
    if cfg.pp_schedule == "1F1B" and n < stages:
        raise ScifmError(
            f"parallel.pp_schedule=1F1B needs at least one micro-batch per stage: "
            f"train.grad_accum_steps={n} < {stages} stages; raise train.grad_accum_steps "
            f"to {stages} or more"
        )
    if cfg.pp_schedule == "Interleaved1F1B" and not _interleaved_accepts(n, cfg.pp):
        lower = max(k for k in range(1, n) if _interleaved_accepts(k, cfg.pp))
        upper = min(k for k in range(n + 1, n + cfg.pp + 1) if _interleaved_accepts(k, cfg.pp))
        raise ScifmError(
            f"parallel.pp_schedule=Interleaved1F1B needs train.grad_accum_steps to be a "
            f"multiple of its rounds, max(1, n // pp={cfg.pp}) = {n // cfg.pp}, but got {n}; "
            f"use {lower} or {upper} (a multiple of parallel.pp always works)"
        )


def _interleaved_accepts(n: int, pp: int) -> bool:
    return n % max(1, n // pp) == 0


# ----------------------------------------------------------------------------- the modules


def stage_module(model: Llama, spec: StageSpec) -> Llama:
    """A `Llama` over `spec`'s part of `model`, sharing its modules (names unchanged)."""
    with torch.device("meta"):
        stage = Llama(model.cfg)  # placeholders, replaced below by the model's own modules
    stage.tok_embeddings = model.tok_embeddings if spec.is_first else None
    stage.layers = nn.ModuleDict({str(i): model.layers[str(i)] for i in spec.layers})
    stage.norm = model.norm if spec.is_last else None
    stage.output = model.output if spec.is_last else None
    stage.rope_cos, stage.rope_sin = model.rope_cos, model.rope_sin
    return stage


def prune_to_stages(model: Llama, specs: list[StageSpec]) -> None:
    """Delete, in place, every module of `model` that none of `specs` holds."""
    kept = {str(i) for spec in specs for i in spec.layers}
    for key in [k for k in model.layers if k not in kept]:
        del model.layers[key]
    if not any(spec.is_first for spec in specs):
        model.tok_embeddings = None
    if not any(spec.is_last for spec in specs):
        model.norm = None
        model.output = None


# ----------------------------------------------------------------------------- the runner


class _StepLoss:
    """The schedule's loss function: this step's loss_fn, scaled by 1 / micro-batches.

    In its first step, torch infers the shapes between stages by running one extra forward
    and backward, which calls the loss once on placeholder activations before the real
    micro-batches. That step pops the loss function's record after every call and keeps the
    last n; later steps make exactly n calls and leave the records to one `pop_mean()`.
    """

    def __init__(self) -> None:
        self.loss_fn: RecordingLoss | None = None
        self.scale = 1.0
        self.pop_each = True
        self.calls = 0
        self.popped: list[float] = []

    def begin(self, loss_fn: RecordingLoss, num_microbatches: int, pop_each: bool) -> None:
        self.loss_fn, self.scale = loss_fn, 1.0 / num_microbatches
        self.pop_each, self.calls, self.popped = pop_each, 0, []

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert self.loss_fn is not None, "PipelineRunner.run binds the loss function"
        loss = self.loss_fn(logits, labels) * self.scale
        self.calls += 1
        if self.pop_each:
            self.popped.append(self.loss_fn.pop_mean())
        return loss

    def mean(self, num_microbatches: int) -> float:
        """The mean recorded loss of this step's n real micro-batches (last stage only)."""
        if self.pop_each:
            real = self.popped[-num_microbatches:]
            return float(torch.tensor(real, dtype=torch.float32).mean())
        if self.calls != num_microbatches:
            raise RuntimeError(
                f"the pipeline schedule called the loss {self.calls} times for "
                f"{num_microbatches} micro-batches; the mean loss would be wrong"
            )
        return self.loss_fn.pop_mean()


class PipelineRunner:
    """Forward + backward of one step's micro-batches through this rank's pipeline stages.

    A torch schedule is built for one micro-batch count; when the count changes (batch-size
    ramp-up) the runner builds the schedule for the new count, around the same stage modules.
    """

    def __init__(self, parts: list[nn.Module], specs: list[StageSpec], cfg: ParallelConfig,
                 group: dist.ProcessGroup, device: torch.device) -> None:  # fmt: skip
        self.parts, self.specs, self.cfg = parts, specs, cfg
        self.group, self.device = group, device
        self.has_first = any(spec.is_first for spec in specs)
        self.has_last = any(spec.is_last for spec in specs)
        self.last_group_rank = cfg.pp - 1  # loop order puts the last stage there
        self.step_loss = _StepLoss()
        self.schedule = None
        self.num_microbatches = 0
        self.steps_run = 0

    def run(self, micro_batches: list[torch.Tensor], loss_fn: RecordingLoss) -> float:
        """Gradients of the step's mean loss accumulate in the stages; the mean cross entropy
        (as `loss_fn` records it on the last stage) comes back on every pp rank."""
        n = len(micro_batches)
        _check_same_shape(micro_batches)
        if n != self.num_microbatches:
            self.prepare(n)
        batch = torch.cat(micro_batches).to(self.device)
        inputs, labels = batch[:, :-1], batch[:, 1:]
        self.step_loss.begin(loss_fn, n, pop_each=self.steps_run == 0)
        args = (inputs,) if self.has_first else ()
        self.schedule.step(*args, target=labels if self.has_last else None,
                           return_outputs=False)  # fmt: skip
        self.steps_run += 1
        mean = self.step_loss.mean(n) if self.has_last else None
        self.step_loss.loss_fn = None
        return self._broadcast_from_last(mean)

    def prepare(self, num_microbatches: int) -> None:
        """Build the stages and the schedule for `num_microbatches` per step."""
        check_microbatches(self.cfg, num_microbatches)
        stages = [
            PipelineStage(part, spec.index, spec.num_stages, self.device, group=self.group)
            for part, spec in zip(self.parts, self.specs, strict=True)
        ]
        if self.cfg.pp_schedule == "Interleaved1F1B":
            self.schedule = ScheduleInterleaved1F1B(
                stages, num_microbatches, loss_fn=self.step_loss, scale_grads=False
            )
        else:
            self.schedule = _SINGLE_SCHEDULES[self.cfg.pp_schedule](
                stages[0], num_microbatches, loss_fn=self.step_loss, scale_grads=False
            )
        self.num_microbatches, self.steps_run = num_microbatches, 0

    def _broadcast_from_last(self, mean: float | None) -> float:
        value = torch.tensor([0.0 if mean is None else mean], dtype=torch.float64,
                             device=self.device)  # fmt: skip
        dist.broadcast(value, group=self.group, group_src=self.last_group_rank)
        return float(value)


def _check_same_shape(micro_batches: list[torch.Tensor]) -> None:
    shapes = sorted({tuple(batch.shape) for batch in micro_batches})
    if len(shapes) != 1:
        raise ScifmError(
            f"pipeline micro-batches must share one shape, got {shapes}; keep "
            "train.micro_batch_size fixed and every sample data.seq_len + 1 tokens long"
        )


_SINGLE_SCHEDULES = {"GPipe": ScheduleGPipe, "1F1B": Schedule1F1B}


def build_pipeline(
    model: Llama,
    cfg: ParallelConfig,
    mesh: DeviceMesh,
    device: torch.device,
    num_microbatches: int,
) -> tuple[list[nn.Module], PipelineRunner]:
    """Split `model` into this rank's stages, parallelize each, wrap them in `cfg`'s schedule.

    `model` (the full, initialised model, identical on every rank) is pruned in place to this
    rank's stages; keep it for the optimizer and checkpoints (full-model parameter names).
    `num_microbatches` is the step's micro-batch count (grad_accum_steps), checked against the
    schedule here. Returns the stage modules, in model order, and the runner for the
    trainer's step.
    """
    validate_pipeline(model.cfg, cfg, num_microbatches)
    pp_mesh = mesh["pp"]
    specs = split_stages(model.cfg, cfg, pp_mesh.get_local_rank())
    parts: list[nn.Module] = [stage_module(model, spec) for spec in specs]
    prune_to_stages(model, specs)
    for part in parts:
        parallelize(part, cfg, mesh)
    runner = PipelineRunner(parts, specs, cfg, pp_mesh.get_group(), device)
    runner.prepare(num_microbatches)
    return parts, runner
