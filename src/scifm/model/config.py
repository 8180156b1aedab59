"""Shape of a Llama-style decoder: one validated config plus a registry of named sizes.

The config is the single source of truth for every size the model, the parameter formula
(`scifm.model.flops`) and later the Hugging Face export read. Derived sizes (`head_dim`, the
padded `embedding_size`, the resolved FFN `hidden_dim`) are properties, so a YAML file only
holds what a person chose and reloads to an equal object.

RoPE conventions (`rope_convention`), both rotating pairs of head dimensions by the same
angles `pos * theta ** (-2i / head_dim)` for pair index `i = 0 .. head_dim/2 - 1`:

- "half": pair `i` is `(i, i + head_dim/2)` ("rotate half"), as in Hugging Face
  `LlamaForCausalLM`; checkpoints load into `transformers` without permuting `wq`/`wk`.
- "interleaved": pair `i` is `(2i, 2i + 1)`, as in Meta's original implementation that views
  adjacent values as one complex number. Going to "half" permutes the rows of `wq` and `wk`
  within each head: new row `j` is old row `2j` for `j < head_dim/2`, else `2(j - head_dim/2) + 1`.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from scifm.config import Config
from scifm.core.errors import ScifmError

RopeConvention = Literal["half", "interleaved"]

MODEL_SIZES: dict[str, dict[str, Any]] = {
    # ~1.4M parameters: a test-sized model that still has GQA and two layers.
    "debug": dict(dim=128, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=4096,
                  multiple_of=32),
    # ~5.0M parameters with a 4096-token vocabulary: the CPU demo model.
    "demo5m": dict(dim=256, num_layers=4, num_heads=8, num_kv_heads=4, vocab_size=4096,
                   multiple_of=64),
    # GPT-3 small shape (~134M untied with a 32k vocabulary).
    "125m": dict(dim=768, num_layers=12, num_heads=12, vocab_size=32000),
    # Llama-3.2-1B-like (~1.24B).
    "1b": dict(dim=2048, num_layers=16, num_heads=32, num_kv_heads=8, ffn_hidden_dim=8192,
               vocab_size=128256, rope_theta=500000.0, tie_embeddings=True, max_seq_len=8192),
    # Llama-2-7B (~6.74B).
    "7b": dict(dim=4096, num_layers=32, num_heads=32, ffn_hidden_dim=11008, vocab_size=32000,
               max_seq_len=4096),
    # Llama-3-70B shape (~70.6B).
    "70b": dict(dim=8192, num_layers=80, num_heads=64, num_kv_heads=8, ffn_hidden_dim=28672,
                vocab_size=128256, rope_theta=500000.0, max_seq_len=8192),
}  # fmt: skip


class ModelConfig(Config):
    """Llama-style decoder shape: sizes, RoPE, normalisation and initialisation."""

    dim: int = Field(gt=0)
    """Model (residual stream) width."""
    num_layers: int = Field(gt=0)
    """Number of transformer blocks."""
    num_heads: int = Field(gt=0)
    """Number of query heads; `dim` must be divisible by it."""
    num_kv_heads: int | None = Field(default=None, gt=0, validate_default=True)
    """Number of key/value heads (grouped-query attention); null means `num_heads` (MHA)."""
    vocab_size: int = Field(gt=0)
    """The tokenizer's vocabulary size."""
    pad_vocab_to_multiple_of: int = Field(default=64, gt=0)
    """Embedding rows are `vocab_size` rounded up to a multiple of this (faster matmuls)."""
    ffn_hidden_dim: int | None = Field(default=None, gt=0)
    """SwiGLU hidden size; null means the Llama rule from `dim`, `ffn_dim_multiplier`,
    `multiple_of`."""
    ffn_dim_multiplier: float | None = Field(default=None, gt=0)
    """Optional factor applied to `int(8 * dim / 3)` by the Llama rule."""
    multiple_of: int = Field(default=256, gt=0)
    """The Llama rule rounds the FFN hidden size up to a multiple of this."""
    max_seq_len: int = Field(default=2048, gt=0)
    """Longest sequence the model accepts (length of the precomputed RoPE tables)."""
    rope_theta: float = Field(default=10000.0, gt=0)
    """RoPE base period."""
    rope_convention: RopeConvention = "half"
    """How RoPE pairs head dimensions: "half" (Hugging Face) or "interleaved" (Meta)."""
    norm_eps: float = Field(default=1e-5, gt=0)
    """Epsilon of RMSNorm."""
    tie_embeddings: bool = False
    """Use the token embedding matrix as the output projection too."""
    init_std: float = Field(default=0.02, gt=0)
    """Standard deviation of the normal initialisation of embeddings and linear layers."""

    @field_validator("num_kv_heads", mode="after")
    @classmethod
    def _default_kv_heads(cls, value: int | None, info: ValidationInfo) -> int | None:
        return info.data.get("num_heads") if value is None else value

    @model_validator(mode="after")
    def _check_shapes(self) -> Self:
        if self.dim % self.num_heads:
            raise ValueError(
                f"dim={self.dim} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads that divides dim"
            )
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not divisible by "
                f"num_kv_heads={self.num_kv_heads}; choose num_kv_heads that divides num_heads"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = dim / num_heads = {self.head_dim} is odd; RoPE needs an even head_dim"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def kv_heads(self) -> int:
        """`num_kv_heads` as an int (it is resolved by validation; this is for type checkers)."""
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

    @property
    def embedding_size(self) -> int:
        """Rows of the embedding and output matrices: `vocab_size` padded up."""
        multiple = self.pad_vocab_to_multiple_of
        return -(-self.vocab_size // multiple) * multiple

    @property
    def hidden_dim(self) -> int:
        """The SwiGLU hidden size: `ffn_hidden_dim`, or the Llama rule."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Self:
        """The registered size `name` (see `MODEL_SIZES`), with fields replaced by `overrides`."""
        if name not in MODEL_SIZES:
            known = ", ".join(MODEL_SIZES)
            raise ScifmError(f"unknown model size {name!r}; known sizes: {known}")
        return cls.from_dict({**MODEL_SIZES[name], **overrides}, source=f"model size {name!r}")
