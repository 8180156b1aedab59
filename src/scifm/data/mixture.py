"""Mixture spec: which corpora to train on, from which token files, with which weights.

A corpus is one or more `.bin/.idx` prefixes read as one concatenated token stream (the
documents already end with EOD). Weights are per corpus and normalised to sum to one.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from scifm.config import Config


class CorpusSource(Config):
    name: str = Field(min_length=1)
    """Corpus name, used in metrics and reports."""
    prefixes: list[str] = Field(min_length=1)
    """Token file prefixes (path without .bin/.idx) whose concatenation is this corpus."""
    weight: float = Field(gt=0)
    """Relative sampling weight; the mixture normalises weights to sum to one."""


class DataConfig(Config):
    corpora: list[CorpusSource] = Field(default_factory=list)
    """The corpora of the mixture."""
    seq_len: int = Field(default=256, gt=0)
    """Tokens per training sample (each sample reads seq_len + 1 tokens: inputs and labels)."""
    seed: int = 1234
    """Seed of the per-corpus shuffles; the same seed gives the same samples everywhere."""
    tokenizer: str | None = None
    """tokenizer.json that produced the token files (used to decode samples and prompts)."""

    @field_validator("corpora")
    @classmethod
    def _unique_names(cls, corpora: list[CorpusSource]) -> list[CorpusSource]:
        names = [c.name for c in corpora]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"corpus names must be unique, repeated: {', '.join(duplicates)}")
        return corpora

    def normalized_weights(self) -> list[float]:
        total = sum(c.weight for c in self.corpora)
        return [c.weight / total for c in self.corpora]
