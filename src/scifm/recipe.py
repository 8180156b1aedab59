"""A recipe: one YAML file with a section per stage, each section owned by its stage.

```yaml
corpus:    scifm.curate.demo.DemoCorpusConfig     # which demo corpora, size caps
tokenizer: scifm.tokens.tokenizer.TokenizerConfig # BPE vocabulary and special tokens
tokenize:  scifm.tokens.writer.TokenizeConfig     # text field, EOD
data:      scifm.data.mixture.DataConfig          # corpora prefixes, weights, seq_len
model:     scifm.model.config.ModelConfig         # Llama shape
train:     scifm.train.config.TrainConfig         # optimisation and run directory
parallel:  scifm.parallel.config.ParallelConfig   # data-parallel layout (FSDP2 / HSDP / DDP)
demo:      DemoConfig                             # the demo's mixture weights and prompts
```

Every section has defaults, so a recipe names only what it changes; the defaults are the
built-in demo (`recipes/demo.yaml` spells them out). Every subcommand loads a Recipe and
uses the sections it needs; `--dry-run` prints those sections resolved and validated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from scifm.checkpoint.config import CheckpointConfig
from scifm.config import Config, apply_overrides
from scifm.curate.demo import DemoCorpusConfig
from scifm.data.mixture import DataConfig
from scifm.model.config import ModelConfig
from scifm.parallel import ParallelConfig
from scifm.tokens.tokenizer import TokenizerConfig
from scifm.tokens.writer import TokenizeConfig
from scifm.train.config import TrainConfig
from scifm.train.optim import OptimizerConfig

DEMO_PROMPTS = (
    "The eigenvalues of a matrix",
    "Compute the integral of",
    "The probability density function",
)


class DemoConfig(Config):
    weights: dict[str, float] = Field(
        default_factory=lambda: {"math": 0.4, "scicomp": 0.4, "python": 0.2}
    )
    """Mixture weight of each demo corpus (names from corpus.corpora)."""
    prompts: list[str] = Field(default_factory=lambda: list(DEMO_PROMPTS), min_length=1)
    """Prompts whose greedy continuations the demo shows."""
    max_new_tokens: int = Field(default=24, gt=0)
    """Tokens generated per prompt."""
    eval_tasks: list[str] = Field(default_factory=lambda: ["heldout", "sciq", "arc_easy"])
    """What the demo evaluates its model on at the end (`scifm eval --tasks`)."""
    eval_limit: int | None = Field(default=None, gt=0)
    """Questions per benchmark (null: all)."""

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        negative = sorted(name for name, w in weights.items() if w < 0)
        if negative:
            raise ValueError(f"weights must be >= 0 (0 leaves a corpus out): {negative}")
        return weights


def _demo_model() -> ModelConfig:
    return ModelConfig.named("demo5m", vocab_size=4096, max_seq_len=256)


def _demo_train() -> TrainConfig:
    return TrainConfig(
        out_dir="runs/demo", micro_batch_size=16, max_tokens=600_000,
        optimizer=OptimizerConfig(lr=3e-3),
        warmup_steps=10, log_every=5,
        checkpoint=CheckpointConfig(every=50, keep_last=2),
    )  # fmt: skip


class Recipe(Config):
    corpus: DemoCorpusConfig = Field(default_factory=DemoCorpusConfig)
    tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(vocab_size=4096))
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    data: DataConfig = Field(default_factory=lambda: DataConfig(seq_len=256, valid_fraction=0.02))
    model: ModelConfig = Field(default_factory=_demo_model)
    train: TrainConfig = Field(default_factory=_demo_train)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None, overrides: Iterable[str] = (), source: str = "config"
    ) -> Self:
        """Fields a recipe leaves out keep the demo's values, section by section."""
        data = {key: {} if value is None else value for key, value in (data or {}).items()}
        overrides = list(overrides)
        _budget_chosen_by(overrides, data.get("train"))
        given = apply_overrides(data, overrides)
        base = cls().to_dict()
        _budget_chosen_by(list(_dotted(given, "train")), base["train"])
        return super().from_dict(merge_onto(base, given), source=source)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.data.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_seq_len="
                f"{self.model.max_seq_len}; lower one or raise the other"
            )
        unknown = sorted(set(self.demo.weights) - set(self.corpus.corpora))
        if unknown:
            raise ValueError(f"demo.weights names corpora not in corpus.corpora: {unknown}")
        if not any(w > 0 for w in self.demo.weights.values()):
            raise ValueError("demo.weights needs at least one positive weight")
        return self

    def sections(self, *names: str) -> dict:
        """The named sections as plain data, for printing."""
        return {name: getattr(self, name).to_dict() for name in names}


def _dotted(data: Mapping[str, Any], section: str) -> Iterable[str]:
    value = data.get(section)
    return [f"{section}.{key}=" for key in value] if isinstance(value, Mapping) else []


def _budget_chosen_by(overrides: list[str], train: Any) -> None:
    """When `overrides` set one budget field (max_steps or max_tokens), null the other in `train`.

    A budget is one choice: naming it replaces whichever budget the layer below had.
    """
    if not isinstance(train, dict):
        return
    chosen = {
        f for f in TrainConfig.BUDGET_FIELDS for o in overrides if o.startswith(f"train.{f}=")
    }
    for field in set(TrainConfig.BUDGET_FIELDS) - chosen if chosen else ():
        train[field] = None


def merge_onto(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` laid over `base`: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_onto(merged[key], value)
        else:
            merged[key] = value
    return merged
