"""The Hugging Face mapping against the real `transformers.LlamaForCausalLM`: same logits.

Random scifm weights are mapped and loaded (strictly) into a `LlamaForCausalLM` built from
`hf_config_dict`; fp32 logits agree within 1e-5 for tied and untied embeddings, GQA and MHA,
and both RoPE conventions (an "interleaved" model's q/k rows are permuted on the way out).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from scifm.convert.hf_llama import (
    from_hf_state_dict,
    half_to_interleaved,
    hf_config_dict,
    interleaved_to_half,
    to_hf_state_dict,
)
from scifm.core.errors import ScifmError
from scifm.model import ModelConfig, build_model

SHAPES = {
    "gqa-untied": dict(num_heads=4, num_kv_heads=2, tie_embeddings=False),
    "mha-tied": dict(num_heads=4, num_kv_heads=4, tie_embeddings=True),
}


def _config(shape: str, rope: str) -> ModelConfig:
    return ModelConfig(dim=64, num_layers=2, vocab_size=300, multiple_of=32, max_seq_len=32,
                       rope_convention=rope, **SHAPES[shape])  # fmt: skip


def _hf_model(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    hf_cfg = transformers.LlamaConfig(**hf_config_dict(cfg))
    model = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf_state = to_hf_state_dict(state, cfg)
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    if cfg.tie_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    assert not missing and not unexpected, (missing, unexpected)
    return model


@pytest.mark.parametrize("rope", ["half", "interleaved"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_logits_match_transformers(shape: str, rope: str) -> None:
    cfg = _config(shape, rope)
    ours = build_model(cfg, device="cpu", seed=3).eval()
    theirs = _hf_model(cfg, ours.state_dict())
    tokens = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ours(tokens), theirs(tokens).logits
    assert (expected - got).abs().max() < 1e-5
    if cfg.tie_embeddings:
        assert theirs.lm_head.weight.data_ptr() == theirs.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("rope", ["half", "interleaved"])
def test_round_trip_is_bit_identical(rope: str) -> None:
    cfg = _config("gqa-untied", rope)
    state = build_model(cfg, device="cpu", seed=1).state_dict()
    back = from_hf_state_dict(to_hf_state_dict(state, cfg), cfg)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_rope_permutations_are_inverse_and_move_pairs_apart() -> None:
    weight = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(16, 3)
    half = interleaved_to_half(weight, num_heads=2)
    assert torch.equal(half_to_interleaved(half, num_heads=2), weight)
    assert torch.equal(half[:4], weight[0:8:2]) and torch.equal(half[4:8], weight[1:8:2])


def test_a_wrong_rope_convention_changes_the_logits() -> None:
    cfg = _config("gqa-untied", "interleaved")
    ours = build_model(cfg, device="cpu", seed=3).eval()
    with torch.no_grad():  # sharper attention than at initialisation, so positions matter
        for name, param in ours.named_parameters():
            if name.endswith(("wq.weight", "wk.weight")):
                param.mul_(20)
    wrong = cfg.model_copy(update={"rope_convention": "half"})  # the mistake export guards
    theirs = _hf_model(wrong, ours.state_dict())
    right = _hf_model(cfg, ours.state_dict())
    tokens = torch.randint(0, cfg.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(tokens)
        assert (expected - right(tokens).logits).abs().max() < 1e-5
        assert (expected - theirs(tokens).logits).abs().max() > 1e-2


def test_missing_or_unexpected_weights_are_errors() -> None:
    cfg = _config("gqa-untied", "half")
    state = build_model(cfg, device="cpu", seed=1).state_dict()
    hf_state = to_hf_state_dict(state, cfg)
    del hf_state["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ScifmError, match="missing"):
        from_hf_state_dict(hf_state, cfg)
    with_bias = {**to_hf_state_dict(state, cfg),
                 "model.layers.0.self_attn.q_proj.bias": torch.zeros(1)}  # fmt: skip
    with pytest.raises(ScifmError, match=r"unexpected \['layers.0.attention.wq.bias'\]"):
        from_hf_state_dict(with_bias, cfg)
    with pytest.raises(ScifmError, match="unexpected weight 'model.layers.0.self_attn.q_norm"):
        from_hf_state_dict({"model.layers.0.self_attn.q_norm.weight": torch.zeros(1)}, cfg)
