"""Training hyperparameters and run settings, validated where they are defined."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from scifm.config import Config


class TrainConfig(Config):
    BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ("max_steps", "max_tokens")

    out_dir: str = "runs/debug"
    """Run directory: metrics.jsonl, checkpoints/, loss.png, report.json."""
    seed: int = 0
    """Seed of the model initialisation."""
    micro_batch_size: int = Field(default=8, gt=0)
    """Sequences per forward/backward pass."""
    grad_accum_steps: int = Field(default=1, gt=0)
    """Micro-batches accumulated per optimizer step."""
    data_workers: int = Field(default=0, ge=0)
    """torch DataLoader worker processes reading samples (0: read in the training process)."""
    max_steps: int | None = Field(default=None, gt=0)
    """Optimizer steps to run; give this or max_tokens."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Token budget; steps = ceil(max_tokens / tokens per step)."""
    lr: float = Field(default=3e-3, gt=0)
    """Peak learning rate."""
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """Final learning rate of the cosine decay, as a fraction of the peak."""
    warmup_steps: int = Field(default=20, ge=0)
    """Linear warmup steps."""
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    """Clip the global gradient norm to this value; null disables clipping."""
    log_every: int = Field(default=10, gt=0)
    """Steps between metric records."""
    checkpoint_every: int | None = Field(default=None, gt=0)
    """Steps between checkpoints; a final checkpoint is always written."""
    device: Literal["auto", "cpu", "cuda", "xpu"] = "auto"
    num_threads: int | None = Field(default=None, gt=0)
    """CPU threads for torch (None: torch's default)."""
    deterministic: bool = False
    """Ask torch for deterministic kernels."""

    @model_validator(mode="after")
    def _one_budget(self) -> Self:
        if self.max_steps is None and self.max_tokens is None:
            raise ValueError("set train.max_steps or train.max_tokens")
        if self.max_steps is not None and self.max_tokens is not None:
            raise ValueError("set only one of train.max_steps and train.max_tokens")
        return self

    def tokens_per_step(self, seq_len: int, data_parallel: int = 1) -> int:
        return self.micro_batch_size * self.grad_accum_steps * seq_len * data_parallel

    def total_steps(self, seq_len: int, data_parallel: int = 1) -> int:
        if self.max_steps is not None:
            return self.max_steps
        per_step = self.tokens_per_step(seq_len, data_parallel)
        return max(1, -(-int(self.max_tokens or 0) // per_step))
