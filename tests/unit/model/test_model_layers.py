"""Layers against explicit references: RMSNorm, SwiGLU, and GQA head grouping in attention.

The attention reference pins which key/value head serves which query head (query head h uses
kv head h // (num_heads / num_kv_heads), as Hugging Face's `repeat_kv` does), which a weight
export depends on and which a shape test cannot see.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scifm.model import ModelConfig
from scifm.model.layers import (
    Attention,
    FeedForward,
    RMSNorm,
    TransformerBlock,
    apply_rope,
    precompute_rope,
)

CFG = ModelConfig.from_dict(
    dict(dim=32, num_layers=1, num_heads=4, num_kv_heads=2, vocab_size=10, max_seq_len=8)
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Loop over query heads with an explicit causal softmax."""
    seq_len, d = x.shape[1], CFG.head_dim
    cos, sin = precompute_rope(d, seq_len, CFG.rope_theta)
    q = apply_rope(attn.wq(x).view(1, seq_len, -1, d), cos, sin)[0]
    k = apply_rope(attn.wk(x).view(1, seq_len, -1, d), cos, sin)[0]
    v = attn.wv(x).view(seq_len, -1, d)
    mask = torch.ones(seq_len, seq_len).tril().bool()
    heads = []
    for h in range(CFG.num_heads):
        kv = h // (CFG.num_heads // CFG.num_kv_heads)
        scores = (q[:, h] @ k[:, kv].T) / math.sqrt(d)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        heads.append(weights @ v[:, kv])
    return attn.wo(torch.cat(heads, dim=-1))[None]


def test_attention_matches_explicit_grouped_query_reference() -> None:
    torch.manual_seed(0)
    attn = Attention(CFG)
    x = randn(1, 6, 32)
    cos, sin = precompute_rope(CFG.head_dim, 6, CFG.rope_theta)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, cos, sin), reference_attention(attn, x))


def test_rmsnorm_and_swiglu_match_their_formulas() -> None:
    torch.manual_seed(0)
    x = randn(2, 3, 32)
    norm = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(randn(32, seed=1))
        expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * norm.weight
        torch.testing.assert_close(norm(x), expected)
        ffn = FeedForward(32, 48)
        gated = F.silu(x @ ffn.w1.weight.T) * (x @ ffn.w3.weight.T)
        torch.testing.assert_close(ffn(x), gated @ ffn.w2.weight.T)


def test_block_is_pre_norm_residual() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(CFG)
    x = randn(1, 5, 32)
    cos, sin = precompute_rope(CFG.head_dim, 5, CFG.rope_theta)
    with torch.no_grad():
        h = x + block.attention(block.attention_norm(x), cos, sin)
        torch.testing.assert_close(block(x, cos, sin), h + block.feed_forward(block.ffn_norm(h)))


def test_grouped_query_attention_matches_explicit_repeated_heads() -> None:
    """Each key/value head serves consecutive query heads, as an explicit softmax computes."""
    cfg = ModelConfig.from_dict({"dim": 32, "num_layers": 1, "num_heads": 4, "num_kv_heads": 2,
                                 "vocab_size": 64, "max_seq_len": 8})  # fmt: skip
    torch.manual_seed(0)
    attention = Attention(cfg)
    attention.init_weights(0.2, 0.2)
    x = torch.randn(2, 8, 32)
    cos, sin = precompute_rope(cfg.head_dim, 8, cfg.rope_theta)
    q = apply_rope(attention.wq(x).view(2, 8, 4, 8), cos, sin, "half").transpose(1, 2)
    k = apply_rope(attention.wk(x).view(2, 8, 2, 8), cos, sin, "half").transpose(1, 2)
    v = attention.wv(x).view(2, 8, 2, 8).transpose(1, 2)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = q @ k.transpose(-1, -2) / 8**0.5
    scores = scores.masked_fill(torch.ones(8, 8, dtype=torch.bool).triu(1), float("-inf"))
    expected = attention.wo((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 8, 32))
    assert torch.allclose(attention(x, cos, sin), expected, atol=1e-6)
