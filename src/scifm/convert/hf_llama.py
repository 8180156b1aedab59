"""The contract between scifm's Llama and Hugging Face `LlamaForCausalLM`: config fields,
weight names, and the RoPE convention, in both directions.

The failures users meet most with converted checkpoints are a wrong q/k RoPE permutation,
weights under the wrong names, and weights silently re-initialised. Here every mapping is
explicit and total: every scifm key has exactly one Hugging Face key and back; a state dict
with a key left over, or missing one, is an error, not a warning.

RoPE: Hugging Face rotates "half" pairs `(i, i + head_dim/2)`, as scifm's default
`rope_convention="half"` does, so those weights map unchanged. A model trained with
"interleaved" pairs `(2i, 2i + 1)` (Meta's layout) gets the rows of `wq` and `wk` permuted
within each head on the way out (`interleaved_to_half`), and the inverse on the way in; the
permutation applied is recorded by the caller with the export.
"""

from __future__ import annotations

from typing import Any

import torch

from scifm.core.errors import ScifmError
from scifm.model.config import ModelConfig

_BLOCK_NAMES = {
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
}
_TOP_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_FROM_HF_BLOCK = {hf: ours for ours, hf in _BLOCK_NAMES.items()}
_FROM_HF_TOP = {hf: ours for ours, hf in _TOP_NAMES.items()}


def hf_config_dict(cfg: ModelConfig, torch_dtype: str = "float32",
                   vocab_size: int | None = None) -> dict[str, Any]:  # fmt: skip
    """`config.json` of the equivalent `LlamaForCausalLM` (as `LlamaConfig.to_dict` reads);
    `vocab_size` defaults to the padded embedding rows (see `trim_padded_vocab`)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": vocab_size or cfg.embedding_size,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": cfg.init_std,
        "torch_dtype": torch_dtype,
    }


def interleaved_to_half(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows of a q/k projection from (2i, 2i+1) RoPE pairs to (i, i + head_dim/2) pairs."""
    rows, cols = weight.shape
    head_dim = rows // num_heads
    per_head = weight.reshape(num_heads, head_dim // 2, 2, cols)
    return per_head.transpose(1, 2).reshape(rows, cols)


def half_to_interleaved(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The inverse of `interleaved_to_half`."""
    rows, cols = weight.shape
    head_dim = rows // num_heads
    per_head = weight.reshape(num_heads, 2, head_dim // 2, cols)
    return per_head.transpose(1, 2).reshape(rows, cols)


def _hf_key(key: str) -> str:
    if key in _TOP_NAMES:
        return _TOP_NAMES[key]
    prefix, layer, rest = key.split(".", 2)
    module, leaf = rest.rsplit(".", 1)
    if prefix != "layers" or module not in _BLOCK_NAMES:
        raise ScifmError(f"no Hugging Face name for weight {key!r}")
    return f"model.layers.{layer}.{_BLOCK_NAMES[module]}.{leaf}"


def _our_key(key: str) -> str:
    if key in _FROM_HF_TOP:
        return _FROM_HF_TOP[key]
    parts = key.split(".")
    module, leaf = ".".join(parts[3:-1]), parts[-1]
    if parts[:2] != ["model", "layers"] or module not in _FROM_HF_BLOCK:
        raise ScifmError(f"unexpected weight {key!r} in a Llama checkpoint")
    return f"layers.{parts[2]}.{_FROM_HF_BLOCK[module]}.{leaf}"


def _rope_fix(key: str, cfg: ModelConfig) -> int | None:
    """Heads to permute for a q/k weight of an interleaved-convention model, else None."""
    if cfg.rope_convention != "interleaved":
        return None
    if key.endswith("attention.wq.weight"):
        return cfg.num_heads
    if key.endswith("attention.wk.weight"):
        return cfg.kv_heads
    return None


def to_hf_tensor(key: str, value: torch.Tensor, cfg: ModelConfig) -> tuple[str, torch.Tensor]:
    """One scifm weight -> its Hugging Face name and value (q/k rows in the "half" layout)."""
    heads = _rope_fix(key, cfg)
    return _hf_key(key), interleaved_to_half(value, heads) if heads else value


def to_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """scifm weights under Hugging Face names, q/k rows in the "half" RoPE layout.

    A tied model has no `output.weight`; Hugging Face ties `lm_head` to the embedding.
    """
    _check_complete(set(state), cfg)
    return dict(to_hf_tensor(key, value, cfg) for key, value in state.items())


def from_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face Llama weights under scifm names, in `cfg.rope_convention`'s layout."""
    out = {}
    for key, value in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue  # a buffer older exports carry; recomputed from rope_theta
        if key == "lm_head.weight" and cfg.tie_embeddings:
            continue
        ours = _our_key(key)
        heads = _rope_fix(ours, cfg)
        out[ours] = half_to_interleaved(value, heads) if heads else value
    _check_complete(set(out), cfg)
    return out


def trim_padded_vocab(hf_state: dict[str, torch.Tensor],
                      cfg: ModelConfig) -> dict[str, torch.Tensor]:  # fmt: skip
    """Drop the embedding and output rows past the tokenizer's vocabulary.

    scifm pads the vocabulary for faster matmuls and never samples a padded id; Hugging Face
    samples from every row it has, so an export keeps exactly `cfg.vocab_size` rows.
    """
    return {key: trim_rows(key, value, cfg) for key, value in hf_state.items()}


def trim_rows(hf_key: str, value: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """`value` without padded vocabulary rows when `hf_key` is the embedding or the head."""
    vocab_rows = hf_key in ("model.embed_tokens.weight", "lm_head.weight")
    return value[: cfg.vocab_size] if vocab_rows else value


def expected_keys(cfg: ModelConfig) -> set[str]:
    keys = {"tok_embeddings.weight", "norm.weight"} | set(
        f"layers.{i}.{module}.weight" for i in range(cfg.num_layers) for module in _BLOCK_NAMES
    )
    return keys if cfg.tie_embeddings else keys | {"output.weight"}


def _check_complete(keys: set[str], cfg: ModelConfig) -> None:
    expected = expected_keys(cfg)
    missing, extra = sorted(expected - keys), sorted(keys - expected)
    if missing or extra:
        raise ScifmError(f"the weights do not match the model config: missing {missing[:3]}"
                         f", unexpected {extra[:3]}")  # fmt: skip
