"""`scifm import hf`: a Hugging Face Llama-architecture directory -> a scifm checkpoint.

For continuing pretraining or fine-tuning an existing model with its own tokenizer. The
config maps field by field (`model_config_from_hf`); features scifm's Llama does not have
(biases, RoPE scaling, another activation, a head_dim other than hidden/heads) are refused
with one line rather than imported wrongly. Weights map through `hf_llama`, strictly: the
import fails on any missing or unexpected tensor. The checkpoint is an ordinary complete
scifm checkpoint (step 0) with `metadata.json`, next to a copy of the tokenizer files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from scifm.checkpoint import save_checkpoint
from scifm.convert.hf_llama import from_hf_state_dict
from scifm.core.errors import ScifmError
from scifm.core.version import code_version
from scifm.model import ModelConfig, build_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def read_hf_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ScifmError(f"{hf_dir}: no config.json; pass a Hugging Face model directory")
    return json.loads(path.read_text())


def _refuse(condition: bool, what: str) -> None:
    if condition:
        raise ScifmError(f"cannot import: {what}; scifm's Llama does not support it")


def model_config_from_hf(config: dict[str, Any]) -> ModelConfig:
    """The scifm ModelConfig of a `LlamaConfig` dict (RoPE convention "half", as HF's)."""
    _refuse(
        config.get("model_type") not in ("llama", None), f"model_type {config.get('model_type')!r}"
    )
    _refuse(config.get("hidden_act", "silu") != "silu", f"hidden_act {config.get('hidden_act')!r}")
    _refuse(bool(config.get("attention_bias")) or bool(config.get("mlp_bias")), "biases")
    scaling = config.get("rope_scaling")
    _refuse(scaling is not None, f"rope_scaling {scaling}")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    _refuse(config.get("head_dim", hidden // heads) != hidden // heads, "head_dim != hidden/heads")
    return ModelConfig(
        dim=hidden, num_layers=config["num_hidden_layers"], num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        vocab_size=config["vocab_size"], pad_vocab_to_multiple_of=1,
        ffn_hidden_dim=config["intermediate_size"],
        max_seq_len=config.get("max_position_embeddings", 2048),
        rope_theta=config.get("rope_theta", 10000.0), norm_eps=config.get("rms_norm_eps", 1e-5),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        init_std=config.get("initializer_range", 0.02), rope_convention="half",
    )  # fmt: skip


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of `model.safetensors` or of the shards its index names."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (hf_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ScifmError(f"{hf_dir}: no model.safetensors or index; only safetensors import")
    weights: dict[str, torch.Tensor] = {}
    for name in files:
        weights.update(load_file(str(hf_dir / name)))
    return weights


def load_hf_model(hf_dir: Path) -> torch.nn.Module:
    """A scifm Llama with the weights of a Hugging Face directory (fp32)."""
    cfg = model_config_from_hf(read_hf_config(hf_dir))
    weights = from_hf_state_dict(read_hf_weights(hf_dir), cfg)
    model = build_model(cfg, device="cpu", seed=None)
    model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=True)
    return model.eval()


def import_hf(hf_dir: Path, out: Path) -> Path:
    """Write OUT/checkpoints/step-00000000 (and OUT's tokenizer files); returns the checkpoint."""
    model = load_hf_model(hf_dir)
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(hf_dir / name, out / name)
    meta = {"model": model.cfg.to_dict(), "rope_convention": "half",
            "imported_from": str(hf_dir), "code_version": code_version()}  # fmt: skip
    return save_checkpoint(out, 0, {"model": model.state_dict()}, meta)
