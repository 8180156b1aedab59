"""Closed-form parameter and FLOP counts, checked against built modules and written-out sums."""

from __future__ import annotations

import pytest
import torch

from scifm.model import Llama, ModelConfig, count_params, flops_per_token, num_params

SHAPES = {
    "mha_untied_padded": dict(dim=32, num_layers=2, num_heads=4, vocab_size=100),
    "gqa_tied": dict(dim=48, num_layers=3, num_heads=6, num_kv_heads=2, vocab_size=64,
                     tie_embeddings=True),
    "mqa_explicit_ffn": dict(dim=64, num_layers=1, num_heads=8, num_kv_heads=1,
                             ffn_hidden_dim=100, vocab_size=1000, pad_vocab_to_multiple_of=128),
    "ffn_multiplier": dict(dim=64, num_layers=2, num_heads=4, ffn_dim_multiplier=1.3,
                           multiple_of=32, vocab_size=50, pad_vocab_to_multiple_of=1),
}  # fmt: skip


def written_out(dim, layers, heads, kv_heads, ffn, vocab_rows, tied) -> int:
    """Sum of every weight matrix and norm vector of the architecture, spelled out."""
    head_dim = dim // heads
    wq, wk, wv, wo = dim * dim, dim * kv_heads * head_dim, dim * kv_heads * head_dim, dim * dim
    w1, w2, w3 = dim * ffn, ffn * dim, dim * ffn
    block = wq + wk + wv + wo + w1 + w2 + w3 + dim + dim
    embedding = vocab_rows * dim
    return embedding + layers * block + dim + (0 if tied else vocab_rows * dim)


def meta_model(cfg: ModelConfig) -> Llama:
    with torch.device("meta"):
        return Llama(cfg)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_formula_matches_module_and_written_out_sum(name: str) -> None:
    cfg = ModelConfig.from_dict(SHAPES[name])
    by_hand = written_out(cfg.dim, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
                          cfg.hidden_dim, cfg.embedding_size, cfg.tie_embeddings)  # fmt: skip
    assert count_params(cfg) == by_hand == num_params(meta_model(cfg))


def test_padded_vocab_and_resolved_ffn_enter_the_count() -> None:
    cfg = ModelConfig.from_dict(SHAPES["mha_untied_padded"])  # vocab 100 -> 128 rows, ffn 256
    assert count_params(cfg) == 2 * 128 * 32 + 2 * (4 * 32 * 32 + 3 * 32 * 256 + 64) + 32
    cfg = ModelConfig.from_dict(SHAPES["ffn_multiplier"])  # int(int(170.67) * 1.3) = 221 -> 224
    assert cfg.hidden_dim == 224


@pytest.mark.parametrize(
    ("name", "expected"),
    [("demo5m", 5_048_576), ("1b", 1_235_814_400), ("7b", 6_738_415_616)],
)
def test_named_sizes_have_their_known_counts(name: str, expected: int) -> None:
    cfg = ModelConfig.named(name)
    assert count_params(cfg) == expected == num_params(meta_model(cfg))


def test_non_embedding_count_excludes_embedding_and_output() -> None:
    cfg = ModelConfig.from_dict(SHAPES["mha_untied_padded"])
    model = meta_model(cfg)
    body = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("layers", "norm")))
    assert count_params(cfg, include_embeddings=False) == body


def test_flops_per_token_formula() -> None:
    untied = ModelConfig.from_dict(SHAPES["mha_untied_padded"])
    body = count_params(untied, include_embeddings=False)
    expected = 6 * (body + 128 * 32) + 12 * 2 * 32 * 64
    assert flops_per_token(untied, 64) == pytest.approx(expected, rel=0, abs=0)
    tied = ModelConfig.from_dict({**SHAPES["mha_untied_padded"], "tie_embeddings": True})
    assert flops_per_token(tied, 64) == flops_per_token(untied, 64)  # the matmul still runs
    assert flops_per_token(untied, 128) - flops_per_token(untied, 64) == 12 * 2 * 32 * 64
    with pytest.raises(ValueError):
        flops_per_token(untied, 0)
