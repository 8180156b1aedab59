"""A trained model and its tokenizer from whatever a user points at.

Generation, verification and evaluation accept the same MODEL argument:

- a run directory (its newest complete checkpoint) or one `step-*` checkpoint, in any
  parallel layout (DCP reshards on load); the tokenizer is `--tokenizer`, else the run's
  `data.tokenizer` from the checkpoint metadata, else `RUN/tokenizer.json` (where
  `scifm import hf` puts it);
- a Hugging Face Llama directory (`config.json` + safetensors), such as `scifm export hf`
  writes, with its `tokenizer.json`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scifm.checkpoint import latest_checkpoint, load_checkpoint
from scifm.checkpoint.layout import CheckpointInfo, inspect_checkpoint
from scifm.core.errors import ScifmError
from scifm.model import ModelConfig, build_model
from scifm.model.llama import Llama
from scifm.tokens.tokenizer import Tokenizer


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
    """The checkpoint's model config; refuses one whose RoPE convention is not recorded."""
    meta = found.metadata
    if "model" not in meta or not meta.get("rope_convention"):
        raise ScifmError(f"{found.path}: metadata does not record the model config and RoPE "
                         "convention; refusing to guess")  # fmt: skip
    cfg = ModelConfig.from_dict(meta["model"])
    if cfg.rope_convention != meta["rope_convention"]:
        raise ScifmError(f"{found.path}: metadata disagrees on the RoPE convention")
    return cfg


def load_weights(found: CheckpointInfo, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The model's full weights on CPU, read from the (any-layout) DCP checkpoint."""
    state = {"model": build_model(cfg, device="cpu", seed=None).state_dict()}
    load_checkpoint(found.path, state)
    return state["model"]


def checkpoint_model(found: CheckpointInfo) -> Llama:
    """scifm's Llama with a checkpoint's weights, on CPU, in eval mode."""
    cfg = model_config_of(found)
    model = build_model(cfg, device="cpu", seed=None)
    model.load_state_dict(load_weights(found, cfg))
    return model.eval()


def checkpoint_tokenizer(found: CheckpointInfo, override: Path | None = None) -> Tokenizer:
    """The tokenizer a checkpoint was trained with (see the module docstring)."""
    beside = found.path.parent.parent / "tokenizer.json"
    source = (override or found.metadata.get("data", {}).get("tokenizer")
              or (beside if beside.is_file() else None))  # fmt: skip
    if not source:
        raise ScifmError(f"{found.path}: the run names no tokenizer; pass --tokenizer "
                         "tokenizer.json")  # fmt: skip
    return Tokenizer.load(source)


def is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def load_model(path: Path, tokenizer: Path | None = None) -> tuple[Llama, Tokenizer]:
    """The model (CPU, fp32 for an HF directory) and tokenizer of MODEL (see the docstring)."""
    if is_hf_dir(path):
        from scifm.convert.import_ import load_hf_model

        return load_hf_model(path), Tokenizer.load(tokenizer or path)
    found = find_checkpoint(path)
    return checkpoint_model(found), checkpoint_tokenizer(found, tokenizer)
