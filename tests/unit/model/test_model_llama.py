"""Llama module: shapes, exact causality, meta-device build, init determinism, weight tying."""

from __future__ import annotations

import pytest
import torch

from scifm.model import Llama, ModelConfig, build_model, num_params
from scifm.model.layers import precompute_rope


def tiny(**fields) -> ModelConfig:
    base = dict(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=100,
                multiple_of=16, max_seq_len=16)  # fmt: skip
    return ModelConfig.from_dict({**base, **fields})


def tokens(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 100, (batch, seq_len), generator=generator)


def test_forward_shape_and_module_names() -> None:
    model = build_model(tiny())
    logits = model(tokens(3, 7))
    assert logits.shape == (3, 7, 128) and logits.dtype == torch.float32
    assert list(model.layers.keys()) == ["0", "1"]
    names = set(model.state_dict())
    for part in ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3",
                 "attention_norm", "ffn_norm"):  # fmt: skip
        assert f"layers.1.{part}.weight" in names
    assert {"tok_embeddings.weight", "norm.weight", "output.weight"} <= names
    assert not any("rope" in name for name in names)  # RoPE tables are not checkpointed


@pytest.mark.parametrize("position", [0, 5, 11])
def test_changing_a_token_never_changes_earlier_logits(position: int) -> None:
    model = build_model(tiny())
    before = tokens(2, 12)
    after = before.clone()
    after[:, position] = (after[:, position] + 1) % 100
    with torch.no_grad():
        a, b = model(before), model(after)
    assert torch.equal(a[:, :position], b[:, :position])
    assert not torch.allclose(a[:, position:], b[:, position:])


def test_too_long_input_is_a_clear_error() -> None:
    model = build_model(tiny())
    model(tokens(1, 16))
    with pytest.raises(ValueError, match="sequence length 17 exceeds max_seq_len=16"):
        model(tokens(1, 17))


def test_meta_build_allocates_nothing_and_70b_has_its_size() -> None:
    with torch.device("meta"):
        model = Llama(ModelConfig.named("70b"))
    assert all(p.is_meta for p in model.parameters())
    assert num_params(model) == 70_553_706_496  # Llama-3-70B's published count


def test_init_is_deterministic_per_seed_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = build_model(tiny(), seed=7).state_dict()
    assert torch.equal(torch.rand(3), expected)
    second = build_model(tiny(), seed=7).state_dict()
    other = build_model(tiny(), seed=8).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(
        first["layers.0.attention.wq.weight"], other["layers.0.attention.wq.weight"]
    )


def test_init_weights_sets_statistics_and_rope_tables_after_to_empty() -> None:
    cfg = tiny(dim=64, num_heads=4, num_layers=8, init_std=0.05)
    model = build_model(cfg)
    std = model.layers["0"].feed_forward.w1.weight.std().item()
    out_std = model.layers["0"].feed_forward.w2.weight.std().item()
    assert abs(std - 0.05) < 0.005 and abs(out_std - 0.05 / 4) < 0.002  # 1/sqrt(2*8) = 1/4
    assert torch.equal(model.norm.weight, torch.ones(64))
    assert torch.equal(model.layers["3"].attention_norm.weight, torch.ones(64))
    cos, sin = precompute_rope(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
    assert torch.equal(model.rope_cos, cos) and torch.equal(model.rope_sin, sin)


def test_tied_embeddings_have_no_output_module_and_count_once() -> None:
    untied, tied = build_model(tiny()), build_model(tiny(tie_embeddings=True))
    assert tied.output is None and "output.weight" not in tied.state_dict()
    assert num_params(untied) - num_params(tied) == 128 * 32
    with torch.no_grad():
        tied.tok_embeddings.weight[42] = 0.0
    assert torch.all(tied(tokens(1, 4))[..., 42] == 0)
