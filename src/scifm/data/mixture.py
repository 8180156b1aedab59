"""Mixture spec: which corpora to train on, from which token files, with which weights.

A corpus is one or more `.bin/.idx` prefixes read as one token stream (documents already end
with EOD); its weight is its share of every global batch, and inside the corpus each file is
sampled in proportion to its tokens. Three ways to write a mixture, all read by
`read_mixture_file` (relative prefixes are relative to the mixture file):

    # AuroraGPT data-file list: `weight prefix corpus` per line; a corpus's weight is the
    # sum of its lines' weights
    0.0031 /data/dolma/c4-0000_text_document c4
    # Megatron's --data-path form: `w1 p1 w2 p2 ...` (each prefix its own corpus)
    0.3 /data/wiki_text_document 0.7 /data/arxiv_text_document
    # YAML (.yaml/.yml): corpora: [{name, prefixes, weight}, ...]

`open_mixture` validates every file from O(1) bytes each (missing or truncated files, bad
magic, mixed dtypes or tokenizers, empty corpora) before any training step, and
`mixture_table` is what `scifm data inspect` prints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from scifm.config import Config
from scifm.core.errors import ScifmError
from scifm.core.io import sha256_bytes
from scifm.data.files import TokenFileMeta, read_file_meta


class CorpusSource(Config):
    name: str = Field(min_length=1)
    """Corpus name, used in metrics and reports."""
    prefixes: list[str] = Field(min_length=1)
    """Token file prefixes (path without .bin/.idx) whose concatenation is this corpus."""
    weight: float = Field(gt=0)
    """Relative sampling weight; the mixture normalises weights to sum to one."""


class DataConfig(Config):
    corpora: list[CorpusSource] = Field(default_factory=list)
    """The corpora of the mixture (or give `mixture`, a mixture file, instead)."""
    mixture: str | None = None
    """A mixture file: AuroraGPT `weight prefix corpus` lines, Megatron `w1 p1 ...` or YAML."""
    seq_len: int = Field(default=256, gt=0)
    """Tokens per training sample (each sample reads seq_len + 1 tokens: inputs and labels)."""
    seed: int = Field(default=1234, ge=0, lt=2**63)
    """Seed of every shuffle; the same seed gives the same samples on every rank and run."""
    shuffle_window_docs: int = Field(default=256, gt=0)
    """Documents shuffled together (a power of two; 1 keeps the file order)."""
    valid_fraction: float = Field(default=0.0, ge=0.0, lt=0.5)
    """Share of each corpus's tokens (its last documents) held out for validation."""
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

    @field_validator("shuffle_window_docs")
    @classmethod
    def _power_of_two(cls, window: int) -> int:
        if window & (window - 1):
            raise ValueError(f"must be a power of two (1, 2, 4, ... 256 ...), got {window}")
        return window

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.corpora and self.mixture:
            raise ValueError("give either data.corpora or data.mixture, not both")
        return self

    def sources(self) -> list[CorpusSource]:
        """The corpora, read from `mixture` when it is set."""
        if self.mixture:
            return read_mixture_file(self.mixture)
        if not self.corpora:
            raise ScifmError("no data: set data.mixture (a mixture file) or list data.corpora")
        return list(self.corpora)


def _resolve(prefix: str, base: Path) -> str:
    path = Path(prefix).expanduser()
    return str(path if path.is_absolute() else base / path)


def _weight(text: str, where: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise ScifmError(f"{where}: weight {text!r} is not a number") from None
    if not math.isfinite(weight) or weight <= 0:
        raise ScifmError(f"{where}: weight {text} must be positive (drop the line instead)")
    return weight


def _aurora_list(lines: list[tuple[int, list[str]]], path: Path) -> list[CorpusSource]:
    corpora: dict[str, dict[str, Any]] = {}
    for number, (weight, prefix, corpus) in ((n, f) for n, f in lines):
        entry = corpora.setdefault(corpus, {"name": corpus, "prefixes": [], "weight": 0.0})
        entry["prefixes"].append(_resolve(prefix, path.parent))
        entry["weight"] += _weight(weight, f"{path}:{number}")
    return [CorpusSource(**entry) for entry in corpora.values()]


def _megatron_list(tokens: list[str], path: Path) -> list[CorpusSource]:
    if len(tokens) == 1:
        tokens = ["1", tokens[0]]
    if len(tokens) % 2:
        raise ScifmError(
            f"{path}: Megatron form needs `weight prefix` pairs, got {len(tokens)} items"
        )
    corpora, names = [], set()
    for i in range(0, len(tokens), 2):
        prefix = _resolve(tokens[i + 1], path.parent)
        name, k = Path(prefix).name, 2
        while name in names:
            name, k = f"{Path(prefix).name}-{k}", k + 1
        names.add(name)
        weight = _weight(tokens[i], f"{path}: item {i + 1}")
        corpora.append(CorpusSource(name=name, prefixes=[prefix], weight=weight))
    return corpora


def _yaml_mixture(path: Path) -> list[CorpusSource]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ScifmError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    items = data.get("corpora") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ScifmError(f"{path}: expected `corpora:` with a list of {{name, prefixes, weight}}")
    sources = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ScifmError(f"{path}: corpora[{i}] must be a mapping {{name, prefixes, weight}}")
        source = CorpusSource.from_dict(item, source=f"{path}: corpora[{i}]")
        prefixes = [_resolve(p, path.parent) for p in source.prefixes]
        sources.append(source.model_copy(update={"prefixes": prefixes}))
    return sources


def read_mixture_file(path: str | Path) -> list[CorpusSource]:
    """Parse a mixture file in any of the three forms (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ScifmError(f"{path}: mixture file not found")
    if path.suffix in (".yaml", ".yml"):
        return _yaml_mixture(path)
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if fields:
            lines.append((number, fields))
    if not lines:
        raise ScifmError(f"{path}: the mixture lists no files")
    if all(len(fields) == 3 for _, fields in lines):
        return _aurora_list(lines, path)
    return _megatron_list([t for _, fields in lines for t in fields], path)


@dataclass(frozen=True)
class CorpusFiles:
    name: str
    weight: float
    files: list[TokenFileMeta]

    @property
    def num_tokens(self) -> int:
        return sum(f.num_tokens for f in self.files)

    @property
    def num_docs(self) -> int:
        return sum(f.num_docs for f in self.files)


@dataclass(frozen=True)
class Mixture:
    """A validated mixture: every file's metadata, one dtype, one tokenizer."""

    corpora: list[CorpusFiles]
    dtype: np.dtype
    tokenizer_sha256: str | None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.corpora]

    @property
    def weights(self) -> np.ndarray:
        raw = np.asarray([c.weight for c in self.corpora], dtype=np.float64)
        return raw / raw.sum()


def _single(values: dict[Any, list[str]], what: str) -> Any:
    if len(values) > 1:
        listing = "; ".join(f"{v}: {', '.join(files[:2])}" for v, files in values.items())
        raise ScifmError(f"the mixture mixes {what} ({listing}); re-tokenize to one tokenizer")
    return next(iter(values), None)


def open_mixture(sources: list[CorpusSource], vocab_size: int | None = None) -> Mixture:
    """Read and validate every file of the mixture; `vocab_size` is the model's, if known."""
    if not sources:
        raise ScifmError("the mixture has no corpora")
    corpora = []
    for source in sources:
        files = [read_file_meta(p) for p in source.prefixes]
        corpus = CorpusFiles(source.name, source.weight, files)
        if corpus.num_tokens == 0:
            raise ScifmError(
                f"corpus {source.name!r} is empty: its {len(files)} file(s) hold 0 tokens"
            )
        corpora.append(corpus)
    every = [f for c in corpora for f in c.files]
    dtypes: dict[Any, list[str]] = {}
    tokenizers: dict[Any, list[str]] = {}
    for meta in every:
        dtypes.setdefault(meta.dtype, []).append(meta.prefix)
        if meta.tokenizer_sha256:
            tokenizers.setdefault(meta.tokenizer_sha256[:12], []).append(meta.prefix)
    dtype = _single(dtypes, "token dtypes")
    tokenizer = _single(tokenizers, "tokenizers")
    if vocab_size is not None:
        for meta in every:
            if meta.vocab_size is not None and meta.vocab_size > vocab_size:
                raise ScifmError(
                    f"{meta.prefix}: tokenized with a vocabulary of {meta.vocab_size}, larger "
                    f"than the model's {vocab_size}; raise model.vocab_size"
                )
    full_sha = next((m.tokenizer_sha256 for m in every if m.tokenizer_sha256), None)
    assert tokenizer is None or (full_sha or "").startswith(tokenizer)
    return Mixture(corpora=corpora, dtype=dtype, tokenizer_sha256=full_sha)


def mixture_table(mixture: Mixture, token_budget: int | None = None) -> list[dict[str, Any]]:
    """One row per corpus: files, documents, tokens, weight and the epochs a budget implies."""
    rows = []
    for corpus, weight in zip(mixture.corpora, mixture.weights, strict=True):
        row: dict[str, Any] = {
            "corpus": corpus.name,
            "files": len(corpus.files),
            "documents": corpus.num_docs,
            "tokens": corpus.num_tokens,
            "weight": round(float(weight), 6),
        }
        if token_budget is not None:
            row["epochs"] = round(token_budget * float(weight) / corpus.num_tokens, 4)
        rows.append(row)
    return rows


def mixture_fingerprint(mixture: Mixture) -> str:
    """sha256 of what decides the samples: corpora, weights, files and their sizes."""
    spec = [
        [c.name, c.weight, [[f.prefix, f.num_docs, f.num_tokens, str(f.dtype)] for f in c.files]]
        for c in mixture.corpora
    ]
    return sha256_bytes(json.dumps(spec, sort_keys=True).encode())
