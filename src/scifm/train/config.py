"""Training hyperparameters and run settings, validated where they are defined."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from scifm.checkpoint.config import CheckpointConfig
from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.data.loader import BatchSchedule
from scifm.train.anomaly import AnomalyConfig
from scifm.train.optim import OptimizerConfig
from scifm.train.sinks import MetricsConfig

_MOVED = {
    **{key: f"optimizer.{key}" for key in ("lr", "beta1", "beta2", "eps", "weight_decay")},
    "checkpoint_every": "checkpoint.every",
}


class WatchdogConfig(Config):
    """Hang detection: a step that overruns its deadline ends the job, naming the ranks that
    did not arrive, so the launcher can restart it from the last checkpoint."""

    step_timeout_s: float | None = Field(default=None, gt=0)
    """Deadline of one optimizer step; null disables the watchdog."""
    first_step_timeout_s: float | None = Field(default=None, gt=0)
    """Deadline of the first step after (re)start, which compiles and warms up (default:
    10 x step_timeout_s)."""
    collective_timeout_s: float = Field(default=600.0, gt=0)
    """Timeout of every collective of the process group (torch.distributed's own)."""


class StragglerConfig(Config):
    """Ranks whose own compute is slower than the median's by `factor` are reported."""

    every: int | None = Field(default=50, gt=0)
    """Steps between comparisons (one small all-gather); null disables the check."""
    factor: float = Field(default=1.5, gt=1)
    """A rank slower than this multiple of the median rank is a straggler."""


class BatchRampupConfig(Config):
    """Grow the global batch during early training (Megatron's `--rampup-batch-size`)."""

    start_batch_size: int = Field(gt=0)
    """Global batch (samples) of the first steps; must split into ranks x micro-batches."""
    increment: int = Field(gt=0)
    """Samples added to the global batch at each increase."""
    ramp_samples: int = Field(gt=0)
    """Samples over which the batch grows to its final size, in equal parts per increase."""


class TrainConfig(Config):
    BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ("max_steps", "max_tokens")

    out_dir: str = "runs/debug"
    """Run directory: metrics.jsonl, checkpoints/, loss.png, report.json."""
    seed: int = 0
    """Seed of the model initialisation."""
    micro_batch_size: int = Field(default=8, gt=0)
    """Sequences per forward/backward pass."""
    grad_accum_steps: int = Field(default=1, gt=0)
    """Micro-batches accumulated per optimizer step (ignored when global_batch_tokens is set)."""
    global_batch_tokens: int | None = Field(default=None, gt=0)
    """Tokens per optimizer step; gradient accumulation is derived from it and must come out
    whole: global_batch_tokens = micro_batch_size x accumulation x data ranks x seq_len."""
    batch_rampup: BatchRampupConfig | None = None
    """Optional batch-size ramp-up; the final global batch is the one above."""
    data_workers: int = Field(default=0, ge=0)
    """torch DataLoader worker processes reading samples (0: read in the training process)."""
    max_steps: int | None = Field(default=None, gt=0)
    """Optimizer steps to run; give this or max_tokens."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Token budget; steps = ceil(max_tokens / tokens per step)."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    """Algorithm (adamw, muon, sophiag), peak learning rate and its other hyperparameters."""
    lr_schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    """After linear warmup: cosine decay; warmup-stable-decay (constant, then a decay over the
    last `decay_fraction` of steps); or constant."""
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """Final learning rate of the decay, as a fraction of the peak."""
    warmup_steps: int = Field(default=20, ge=0)
    """Linear warmup steps."""
    decay_fraction: float = Field(default=0.2, gt=0, le=1)
    """wsd: fraction of all steps spent in the final decay."""
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"
    """wsd: shape of the final decay ("1-sqrt": Hägele et al. 2024)."""
    z_loss_weight: float = Field(default=0.0, ge=0)
    """Weight of the z-loss, mean(logsumexp(logits)^2) (PaLM uses 1e-4); 0 disables it."""
    grad_clip: float | None = Field(default=1.0, gt=0)
    """Clip the global gradient norm to this value; null disables clipping."""
    log_every: int = Field(default=10, gt=0)
    """Steps between metric records."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    """Where records go besides RUN/metrics.jsonl (TensorBoard, W&B) and the status line."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Interval, retention, asynchronous saves and the signals that trigger a save."""
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    """NaN/inf and loss-spike detection and its policy: skip, stop or rollback."""
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    """Step deadline (hang detection) and the collective timeout."""
    stragglers: StragglerConfig = Field(default_factory=StragglerConfig)
    """Slow-rank detection: how often, and how much slower than the median."""
    device: Literal["auto", "cpu", "cuda", "xpu"] = "auto"
    num_threads: int | None = Field(default=None, gt=0)
    """CPU threads for torch (None: torch's default)."""
    deterministic: bool = False
    """Ask torch for deterministic kernels."""

    @model_validator(mode="before")
    @classmethod
    def _fields_moved(cls, data: Any) -> Any:
        moved = [key for key in _MOVED if isinstance(data, dict) and key in data]
        if moved:
            new = _MOVED[moved[0]]
            raise ValueError(f"train.{moved[0]} is now train.{new}; move it there")
        return data

    @model_validator(mode="after")
    def _one_budget(self) -> Self:
        if self.max_steps is None and self.max_tokens is None:
            raise ValueError("set train.max_steps or train.max_tokens")
        if self.max_steps is not None and self.max_tokens is not None:
            raise ValueError("set only one of train.max_steps and train.max_tokens")
        return self

    def accumulation(self, seq_len: int, data_parallel: int = 1) -> int:
        """Micro-batches per rank per optimizer step (at the final global batch)."""
        if self.global_batch_tokens is None:
            return self.grad_accum_steps
        per_micro = self.micro_batch_size * data_parallel * seq_len
        steps, rest = divmod(self.global_batch_tokens, per_micro)
        if rest or steps == 0:
            raise ScifmError(
                f"train.global_batch_tokens={self.global_batch_tokens} is not a whole number "
                f"of micro-batches: micro_batch_size {self.micro_batch_size} x {data_parallel} "
                f"data ranks x seq_len {seq_len} = {per_micro} tokens; make it a multiple of "
                f"{per_micro}"
            )
        return steps

    def global_batch(self, seq_len: int, data_parallel: int = 1) -> int:
        """Samples per optimizer step (at the final global batch)."""
        return self.micro_batch_size * self.accumulation(seq_len, data_parallel) * data_parallel

    def tokens_per_step(self, seq_len: int, data_parallel: int = 1) -> int:
        return self.global_batch(seq_len, data_parallel) * seq_len

    def batch_schedule(self, seq_len: int, data_parallel: int = 1) -> BatchSchedule:
        final = self.global_batch(seq_len, data_parallel)
        ramp = self.batch_rampup
        if ramp is None:
            return BatchSchedule(final)
        return BatchSchedule(final, ramp.start_batch_size, ramp.increment, ramp.ramp_samples)

    def total_steps(self, seq_len: int, data_parallel: int = 1) -> int:
        """max_steps, or the steps whose samples first reach max_tokens (ramp-up included)."""
        if self.max_steps is not None:
            return self.max_steps
        schedule = self.batch_schedule(seq_len, data_parallel)
        samples = -(-int(self.max_tokens or 0) // seq_len)
        steps = 0
        while schedule.position_after(steps) < samples and steps < len(schedule.ramp_steps):
            steps += 1
        position = schedule.position_after(steps)
        if position < samples:
            steps += -(-(samples - position) // schedule.final)
        return max(1, steps)
