"""`scifm export hf`: a scifm checkpoint -> a Hugging Face Llama directory.

The output loads with `AutoModelForCausalLM.from_pretrained(OUT, local_files_only=True)`
and `AutoTokenizer.from_pretrained(OUT, local_files_only=True)`:

- `model.safetensors`, or `model-0000i-of-0000n.safetensors` shards with
  `model.safetensors.index.json` when the weights exceed `max_shard_bytes`;
- `config.json` (`LlamaConfig`: sizes, rope_theta, tie_word_embeddings, torch_dtype, the
  special token ids) and `generation_config.json`; the vocabulary is the tokenizer's, without
  scifm's padding rows (which `transformers` would otherwise sample from);
- `tokenizer.json`, `tokenizer_config.json` (fast tokenizer, special tokens, a plain chat
  template) and `special_tokens_map.json`;
- `scifm_export.json`: the source checkpoint and step, the code version, and the RoPE
  permutation applied (none for "half"; q/k rows permuted for "interleaved").

The RoPE convention is read from the checkpoint's metadata; a checkpoint that does not
record it is refused rather than guessed. The directory is written under a temporary name
and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from scifm.checkpoint import latest_checkpoint, load_checkpoint
from scifm.checkpoint.layout import CheckpointInfo, inspect_checkpoint
from scifm.convert.hf_llama import hf_config_dict, to_hf_state_dict, trim_padded_vocab
from scifm.core.errors import ScifmError
from scifm.core.io import atomic_dir, write_json
from scifm.core.version import code_version
from scifm.model import ModelConfig, build_model
from scifm.tokens.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def find_checkpoint(path: Path) -> CheckpointInfo:
    """A step-* directory, or a run directory (its newest complete checkpoint)."""
    if not path.exists():
        raise ScifmError(f"{path}: no such checkpoint or run directory")
    found = inspect_checkpoint(path) if path.name.startswith("step-") else latest_checkpoint(path)
    if not isinstance(found, CheckpointInfo):
        reason = f" ({found.reason})" if found is not None else ""
        raise ScifmError(f"{path}: no complete checkpoint{reason}; train first or pass a step-* "
                         "directory")  # fmt: skip
    return found


def model_config_of(found: CheckpointInfo) -> ModelConfig:
    meta = found.metadata
    if "model" not in meta or not meta.get("rope_convention"):
        raise ScifmError(f"{found.path}: metadata does not record the model config and RoPE "
                         "convention; export refuses to guess")  # fmt: skip
    cfg = ModelConfig.from_dict(meta["model"])
    if cfg.rope_convention != meta["rope_convention"]:
        raise ScifmError(f"{found.path}: metadata disagrees on the RoPE convention")
    return cfg


def load_weights(found: CheckpointInfo, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The model's full weights on CPU, read from the (any-layout) DCP checkpoint."""
    state = {"model": build_model(cfg, device="cpu", seed=None).state_dict()}
    load_checkpoint(found.path, state)
    return state["model"]


def shard(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive groups of tensors, each under `max_bytes` (a larger tensor alone)."""
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = tensor
        size += nbytes
    return groups


def _write_weights(out: Path, tensors: dict[str, torch.Tensor], max_bytes: int) -> None:
    groups = shard(tensors, max_bytes)
    if len(groups) == 1:
        save_file(groups[0], str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    write_json(out / "model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": weight_map})  # fmt: skip


def _special_tokens(tokenizer: Tokenizer) -> dict[str, Any]:
    ids = {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id}
    return {role: (i, tokenizer.backend.id_to_token(i)) for role, i in ids.items() if i is not None}


def _write_tokenizer(out: Path, tokenizer: Tokenizer, cfg: ModelConfig) -> dict[str, int]:
    shutil.copyfile(tokenizer.path, out / "tokenizer.json")
    specials = _special_tokens(tokenizer)
    tokens = {f"{role}_token": token for role, (_, token) in specials.items()}
    write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", **tokens,
        "model_max_length": cfg.max_seq_len, "clean_up_tokenization_spaces": False,
        "add_bos_token": False, "add_eos_token": False, "chat_template": CHAT_TEMPLATE,
    })  # fmt: skip
    write_json(out / "special_tokens_map.json", tokens)
    return {f"{role}_token_id": i for role, (i, _) in specials.items()}


def export_hf(checkpoint: Path, out: Path, tokenizer_path: Path | None = None,
              dtype: str = "float32", max_shard_bytes: int = 2 * 2**30) -> Path:  # fmt: skip
    """Write the Hugging Face directory `out` from a checkpoint (or a run's newest one)."""
    if dtype not in DTYPES:
        raise ScifmError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    found = find_checkpoint(checkpoint)
    cfg = model_config_of(found)
    beside = found.path.parent.parent / "tokenizer.json"  # where `scifm import hf` puts it
    source = (tokenizer_path or found.metadata.get("data", {}).get("tokenizer")
              or (beside if beside.is_file() else None))  # fmt: skip
    if not source:
        raise ScifmError(f"{found.path}: the run names no tokenizer; pass --tokenizer "
                         "tokenizer.json")  # fmt: skip
    tokenizer = Tokenizer.load(source)
    weights = trim_padded_vocab(to_hf_state_dict(load_weights(found, cfg), cfg), cfg)
    if cfg.tie_embeddings:
        weights.pop("lm_head.weight", None)
    weights = {k: v.to(DTYPES[dtype]).contiguous() for k, v in weights.items()}
    with atomic_dir(out) as tmp:
        _write_weights(tmp, weights, max_shard_bytes)
        ids = _write_tokenizer(tmp, tokenizer, cfg)
        write_json(tmp / "config.json", {**hf_config_dict(cfg, dtype, cfg.vocab_size), **ids})
        write_json(tmp / "generation_config.json", {**ids, "do_sample": False})
        write_json(tmp / "scifm_export.json", {
            "checkpoint": str(found.path), "step": found.step, "code_version": code_version(),
            "rope_convention": cfg.rope_convention,
            "rope_permutation": "interleaved->half on q/k rows"
            if cfg.rope_convention == "interleaved" else "none",
            "tokenizer_sha256": tokenizer.sha256,
        })  # fmt: skip
    return out


def read_export(out: Path) -> dict[str, Any]:
    return json.loads((out / "scifm_export.json").read_text())
