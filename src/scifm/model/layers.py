"""Building blocks of the Llama decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Plain single-device modules with no parallelism inside: tensor parallelism, FSDP and
activation checkpointing are applied from outside (`scifm.parallel`) by module name, so the
names here (`wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3`, `attention_norm`, `ffn_norm`) are part
of the contract. Attention infers the number of local heads from tensor shapes, so it keeps
working when tensor parallelism shards the projections.

Speed (fp32 results unchanged): RMSNorm's backward is one hand-written autograd node, and
RoPE rotates with whole-head tables (`rope_tables`, built once per model forward) and one
swap of the halves instead of splitting, rotating and concatenating them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scifm.model.config import ModelConfig, RopeConvention
from scifm.model.kv_cache import LayerCache


class _RMSNormFunction(torch.autograd.Function):
    """fp32 RMSNorm as one autograd node, with the same arithmetic as autograd's backward.

    The forward is the module's formula. The backward performs, value for value, the
    operations autograd runs through the formula's graph (mul, rsqrt, add, mean, pow), in
    fewer kernels and without the six intermediate nodes, so the gradients are bit-identical.
    `x` comes in twice (as `x * rstd` and as `x.pow(2)`): its two gradient terms are then
    accumulated separately, in the order autograd's graph accumulates them.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, x_squared_input: torch.Tensor, weight: torch.Tensor,
                eps: float) -> torch.Tensor:  # fmt: skip
        rstd = torch.rsqrt(x_squared_input.pow(2).mean(-1, keepdim=True) + eps)
        normed = x * rstd
        ctx.save_for_backward(x, rstd, normed, weight)
        return normed * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, rstd, normed, weight = ctx.saved_tensors
        grad_x = grad_squared_input = grad_weight = None
        if ctx.needs_input_grad[2]:  # normed * weight, weight broadcast over the leading dims
            grad_weight = (grad * normed).sum(dim=tuple(range(grad.dim() - 1)))
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_normed = grad * weight
            # x * rstd: the direct term, and rstd's gradient summed over the broadcast dim
            grad_x = grad_normed * rstd
            grad_rstd = (grad_normed * x).sum(-1, keepdim=True)
            # rsqrt: -0.5 * g * rstd^3; mean: / dim; pow(2): g * (2 * x), where the doubling
            # is exact, so it is applied to the per-row factor instead of to x
            grad_mean = (-0.5 * grad_rstd * rstd.pow(3)) / x.shape[-1]
            grad_squared_input = (grad_mean * 2) * x
        return grad_x, grad_squared_input, grad_weight, None


def _eager_plain_fp32(*tensors: torch.Tensor) -> bool:
    """fp32 single-device tensors in eager mode: where the hand-written RMSNorm node applies.

    Tensor subclasses (DTensor under FSDP2 / tensor parallelism) and torch.compile (which
    traces the plain formula into its own fused kernel) take the formula instead. Checked by
    type, so the model package needs no torch.distributed import.
    """
    if torch.compiler.is_compiling():
        return False
    return all(type(t) in (torch.Tensor, nn.Parameter) and t.dtype == torch.float32
               for t in tensors)  # fmt: skip


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 and cast back."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if _eager_plain_fp32(x, weight):
            return _RMSNormFunction.apply(x, x, weight, self.eps)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * weight

    def init_weights(self) -> None:
        nn.init.ones_(self.weight)


def precompute_rope(
    head_dim: int, max_seq_len: int, theta: float, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of `pos * theta ** (-2i / head_dim)`: float32 [max_seq_len, head_dim/2] each."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    positions = torch.arange(max_seq_len, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    return angles.cos(), angles.sin()


def rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-head tables for the "half" convention: `cat(cos, cos)` and `cat(-sin, sin)`.

    [T, head_dim] each, from the [T, head_dim/2] tables of `precompute_rope`; `apply_rope`
    takes either form for "half" (the model builds these once per forward).
    """
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, convention: RopeConvention = "half"
) -> torch.Tensor:
    """Rotate x [B, T, H, head_dim] by position; cos/sin are [T, head_dim/2].

    "half" pairs dimension i with i + head_dim/2; "interleaved" pairs 2i with 2i + 1.
    Pair i at position t is rotated by the angle whose cos/sin are `cos[t, i]`, `sin[t, i]`.
    For "half", cos/sin may also be the [T, head_dim] tables of `rope_tables`. Tables of
    shape [B, T, 1, *] give each row its own positions (left-padded decoding).
    """
    half = x.shape[-1] // 2
    if convention == "half" and x.dtype == torch.float32:
        if cos.shape[-1] == half:
            cos, sin = rope_tables(cos, sin)
        if cos.dim() == 2:
            cos, sin = cos[:, None, :], sin[:, None, :]
        # (first, second) -> (first * cos - second * sin, second * cos + first * sin): the
        # same products and sums as the two-half formula below, so the same fp32 values
        swapped = x.unflatten(-1, (2, half)).flip(-2).flatten(-2)
        return x * cos + swapped * sin
    if cos.shape[-1] != half:  # whole-head tables: their first / second halves
        cos, sin = cos[..., :half], sin[..., half:]
    if cos.dim() == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x32 = x.float()
    if convention == "half":
        first, second = x32.chunk(2, dim=-1)
        rotated = torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
    elif convention == "interleaved":
        even, odd = x32[..., 0::2], x32[..., 1::2]
        pairs = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        rotated = pairs.flatten(-2)
    else:
        raise ValueError(f"unknown RoPE convention {convention!r}; use 'half' or 'interleaved'")
    return rotated.type_as(x)


class Attention(nn.Module):
    """Causal grouped-query self-attention with RoPE, via scaled_dot_product_attention."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.rope_convention = cfg.rope_convention
        kv_dim = cfg.kv_heads * cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.num_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, kv_dim, bias=False)
        self.wo = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None) -> torch.Tensor:  # fmt: skip
        """x [B, T, dim]; cos/sin: RoPE tables with at least T rows (the first T are used),
        or per-row tables [B, T, 1, *]. With a `cache`, x holds only the new positions."""
        batch, seq_len, _ = x.shape
        if cos.dim() == 2:
            cos, sin = cos[:seq_len], sin[:seq_len]
        q = self.wq(x).view(batch, seq_len, -1, self.head_dim)
        k = self.wk(x).view(batch, seq_len, -1, self.head_dim)
        v = self.wv(x).view(batch, seq_len, -1, self.head_dim)
        q = apply_rope(q, cos, sin, self.rope_convention)
        k = apply_rope(k, cos, sin, self.rope_convention)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, head_dim]
        mask, causal = None, True
        if cache is not None:
            k, v = cache.append(k, v)
            mask, causal = cache.mask, cache.causal
        # GQA: each key/value head serves `heads / kv_heads` consecutive query heads; SDPA
        # broadcasts them itself (no repeated copies of k and v)
        grouped = q.shape[1] != k.shape[1]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             enable_gqa=grouped)  # fmt: skip
        return self.wo(out.transpose(1, 2).reshape(batch, seq_len, -1))

    def init_weights(self, std: float, out_std: float) -> None:
        for linear in (self.wq, self.wk, self.wv):
            nn.init.normal_(linear.weight, mean=0.0, std=std)
        nn.init.normal_(self.wo.weight, mean=0.0, std=out_std)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 is the gate, w3 the up and w2 the down projection."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.w1.weight, mean=0.0, std=std)
        nn.init.normal_(self.w3.weight, mean=0.0, std=std)
        nn.init.normal_(self.w2.weight, mean=0.0, std=out_std)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None) -> torch.Tensor:  # fmt: skip
        # the cache goes by keyword: tensor parallelism's input hooks see positional inputs only
        h = x + self.attention(self.attention_norm(x), cos, sin, cache=cache)
        return h + self.feed_forward(self.ffn_norm(h))

    def init_weights(self, std: float, num_layers: int) -> None:
        """Normal(0, std); output projections (wo, w2) scaled by 1/sqrt(2 * num_layers)."""
        out_std = std / math.sqrt(2 * num_layers)
        self.attention_norm.init_weights()
        self.ffn_norm.init_weights()
        self.attention.init_weights(std, out_std)
        self.feed_forward.init_weights(std, out_std)
