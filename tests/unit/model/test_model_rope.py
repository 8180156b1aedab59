"""RoPE: both conventions against an independent reference, and their equivalence in a model.

The model-level test pins the permutation a Hugging Face export must apply to `wq`/`wk` when
going from the interleaved (Meta) convention to the rotate-half (HF) one.
"""

from __future__ import annotations

import torch

from scifm.model import ModelConfig, build_model
from scifm.model.layers import apply_rope, precompute_rope

HEAD_DIM = 8


def reference_interleaved(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Adjacent pairs as complex numbers times exp(i * t * theta^(-2k/d)) (Meta's formulation)."""
    seq_len = x.shape[1]
    freqs = theta ** (-torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), freqs)
    rotation = torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).float()


def half_order() -> torch.Tensor:
    """Row j of the rotate-half layout is row half_order()[j] of the interleaved layout."""
    return torch.cat((torch.arange(0, HEAD_DIM, 2), torch.arange(1, HEAD_DIM, 2)))


def test_interleaved_matches_complex_rotation() -> None:
    x = torch.randn(2, 6, 3, HEAD_DIM, generator=torch.Generator().manual_seed(0))
    cos, sin = precompute_rope(HEAD_DIM, 6, 10000.0)
    got = apply_rope(x, cos, sin, "interleaved")
    torch.testing.assert_close(got, reference_interleaved(x), rtol=1e-5, atol=1e-6)


def test_half_is_interleaved_in_permuted_coordinates() -> None:
    x = torch.randn(2, 6, 3, HEAD_DIM, generator=torch.Generator().manual_seed(1))
    cos, sin = precompute_rope(HEAD_DIM, 6, 10000.0)
    order = half_order()
    got = apply_rope(x[..., order], cos, sin, "half")
    torch.testing.assert_close(got, reference_interleaved(x)[..., order], rtol=1e-5, atol=1e-6)


def test_scores_depend_only_on_relative_position() -> None:
    generator = torch.Generator().manual_seed(2)
    q, k = torch.randn(HEAD_DIM, generator=generator), torch.randn(HEAD_DIM, generator=generator)
    cos, sin = precompute_rope(HEAD_DIM, 12, 10000.0)
    for convention in ("half", "interleaved"):
        rotated_q = apply_rope(q.expand(1, 12, 1, HEAD_DIM), cos, sin, convention)[0, :, 0]
        rotated_k = apply_rope(k.expand(1, 12, 1, HEAD_DIM), cos, sin, convention)[0, :, 0]
        torch.testing.assert_close(rotated_q[5] @ rotated_k[2], rotated_q[9] @ rotated_k[6])
        torch.testing.assert_close(rotated_q[3] @ rotated_k[3], q @ k)


def permute_heads(weight: torch.Tensor) -> torch.Tensor:
    """Reorder the output rows of a q/k projection within every head, interleaved -> half."""
    heads = weight.shape[0] // HEAD_DIM
    return weight.view(heads, HEAD_DIM, -1)[:, half_order()].reshape_as(weight)


def test_models_with_either_convention_agree_after_permuting_wq_wk() -> None:
    shape = dict(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=64,
                 multiple_of=16, max_seq_len=16)  # fmt: skip
    meta = build_model(ModelConfig.from_dict({**shape, "rope_convention": "interleaved"}))
    hf = build_model(ModelConfig.from_dict({**shape, "rope_convention": "half"}), seed=None)
    state = meta.state_dict()
    hf.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = meta(ids)
        assert not torch.allclose(hf(ids), reference, atol=1e-4)  # the test is not vacuous
        permuted = {k: permute_heads(v) if k.endswith(("wq.weight", "wk.weight")) else v
                    for k, v in state.items()}  # fmt: skip
        hf.load_state_dict(permuted)
        torch.testing.assert_close(hf(ids), reference, rtol=1e-5, atol=1e-5)
