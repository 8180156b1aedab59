"""The Llama decoder as a plain single-device `nn.Module`, built on meta and initialised in place.

`Llama(cfg)` only creates modules, so it can be constructed under `torch.device("meta")`
without memory (a 70B shape on a laptop); parallelism is applied afterwards by
`scifm.parallel`, then `to_empty()` + `init_weights()` materialise the weights where they
will live. `build_model` does meta -> to_empty -> init_weights for a single device.

Submodule names follow torchtitan's Llama (`tok_embeddings`, `layers` as a ModuleDict keyed
"0", "1", ..., `norm`, `output`) so pipeline splitting can delete layers by key and set
`tok_embeddings`, `norm` or `output` to None; `forward` skips whichever is None.
With `tie_embeddings` there is no `output` module: logits use `tok_embeddings.weight`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from scifm.model.config import ModelConfig
from scifm.model.kv_cache import KVCache
from scifm.model.layers import RMSNorm, TransformerBlock, precompute_rope, rope_tables


class Llama(nn.Module):
    """Token ids [B, T] -> logits [B, T, embedding_size]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(cfg.embedding_size, cfg.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(cfg) for i in range(cfg.num_layers)})
        self.norm: RMSNorm | None = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output: nn.Linear | None = None
        if not cfg.tie_embeddings:
            self.output = nn.Linear(cfg.dim, cfg.embedding_size, bias=False)
        cos, sin = precompute_rope(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None,
                num_logits: int | None = None) -> torch.Tensor:  # fmt: skip
        """Logits for every position; the dtype is that of the computation (no upcast).

        With a `cache` (decoding), `tokens` are the next positions after those it holds, and
        `num_logits` limits the output projection to the last positions (scoring and
        prefill need one or a few; the projection onto the vocabulary is costly)."""
        if cache is not None:
            return self._decode(tokens, cache, num_logits)
        seq_len = tokens.shape[1]
        if seq_len > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_seq_len={self.cfg.max_seq_len}; "
                "truncate the input or raise model.max_seq_len"
            )
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        # token ids are whole sequences; the hidden states a later pipeline stage receives may
        # be split along the sequence (sequence parallelism), so it passes the whole tables
        # and attention takes the rows of its (gathered) sequence
        rows = seq_len if self.tok_embeddings is not None else self.cfg.max_seq_len
        cos, sin = self.rope_cos[:rows], self.rope_sin[:rows]
        if self.cfg.rope_convention == "half":
            cos, sin = rope_tables(cos, sin)  # whole-head tables, built once for all layers
        for layer in self.layers.values():
            h = layer(h, cos, sin)
        if self.norm is not None:
            h = self.norm(h)
        return self._project(h)

    def _decode(self, tokens: torch.Tensor, cache: KVCache,
                num_logits: int | None = None) -> torch.Tensor:  # fmt: skip
        if self.tok_embeddings is None or self.norm is None:
            raise ValueError("decoding with a cache needs the whole model, not a pipeline stage")
        positions = cache.begin(tokens.shape[1])
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # [B, T, head_dim/2]
        if self.cfg.rope_convention == "half":
            cos, sin = rope_tables(cos, sin)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # broadcast over heads
        h = self.tok_embeddings(tokens)
        for name, layer in self.layers.items():
            h = layer(h, cos, sin, cache=cache.layer(int(name)))
        cache.end(tokens.shape[1])
        if num_logits is not None:
            h = h[:, -num_logits:]
        return self._project(self.norm(h))

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        if self.output is not None:
            return self.output(h)
        if self.cfg.tie_embeddings and self.tok_embeddings is not None:
            return F.linear(h, self.tok_embeddings.weight)
        return h  # a pipeline stage without the output projection

    def init_weights(self, seed: int | None = None) -> None:
        """(Re)initialise every parameter and recompute the RoPE buffers, in place.

        Normal(0, init_std) for embeddings and linears, scaled by 1/sqrt(2 * num_layers) for
        the residual output projections (wo, w2), ones for norms. With a `seed` the result
        depends only on the seed and the device type, and the global RNG state is left as it
        was; with None it draws from the current global RNG.
        """
        with torch.no_grad(), _seeded(self.rope_cos.device, seed):
            self._recompute_rope()
            if self.tok_embeddings is not None:
                nn.init.normal_(self.tok_embeddings.weight, mean=0.0, std=self.cfg.init_std)
            for layer in self.layers.values():
                cast(TransformerBlock, layer).init_weights(self.cfg.init_std, self.cfg.num_layers)
            if self.norm is not None:
                self.norm.init_weights()
            if self.output is not None:
                nn.init.normal_(self.output.weight, mean=0.0, std=self.cfg.init_std)

    def cast_weights(self, dtype: torch.dtype) -> Llama:
        """Parameters to `dtype` (bf16 inference, say); the RoPE tables stay float32."""
        for param in self.parameters():
            param.data = param.data.to(dtype)
        return self

    def _recompute_rope(self) -> None:
        cos, sin = precompute_rope(
            self.cfg.head_dim, self.cfg.max_seq_len, self.cfg.rope_theta, self.rope_cos.device
        )
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)


@contextmanager
def _seeded(device: torch.device, seed: int | None) -> Iterator[None]:
    """Seed torch's RNG (CPU and `device`) inside; restore the previous state after."""
    if seed is None:
        yield
        return
    accelerated = device.type not in ("cpu", "meta")
    devices = [device] if accelerated else []
    device_type = device.type if accelerated else "cuda"
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.manual_seed(seed)
        yield


def build_model(
    cfg: ModelConfig, device: torch.device | str = "cpu", seed: int | None = 0
) -> Llama:
    """Create on meta, materialise on `device` with `to_empty`, then `init_weights(seed)`."""
    with torch.device("meta"):
        model = Llama(cfg)
    model.to_empty(device=device)
    model.init_weights(seed)
    return model


def num_params(model: nn.Module) -> int:
    """Unique parameters of `model` (a tied weight counts once); works on the meta device."""
    unique = {id(p): p.numel() for p in model.parameters()}
    return sum(unique.values())
