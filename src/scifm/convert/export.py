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
and renamed when complete. Weights are streamed file by file, never the whole model in one
process; under a launcher (`torchrun ... scifm export hf`) the ranks share the files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from scifm.checkpoint import load_checkpoint
from scifm.checkpoint.layout import CheckpointInfo
from scifm.convert.hf_llama import hf_config_dict, to_hf_tensor, trim_rows
from scifm.convert.load import checkpoint_tokenizer, find_checkpoint, model_config_of
from scifm.core.errors import ScifmError
from scifm.core.io import atomic_dir, write_json
from scifm.core.progress import track
from scifm.core.version import code_version
from scifm.model import ModelConfig
from scifm.model.llama import Llama
from scifm.tokens.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class ExportedWeight:
    """One weight of the export: its scifm and Hugging Face names, and sizes."""

    ours: str
    hf: str
    stored_shape: tuple[int, ...]
    """Its shape in the checkpoint (padded vocabulary rows included)."""
    nbytes: int
    """Its size in the export (padded rows dropped, in the export's dtype)."""


def plan_shards(cfg: ModelConfig, dtype: torch.dtype, max_bytes: int) -> list[list[ExportedWeight]]:
    """The export's weights in consecutive files of at most `max_bytes` (a larger tensor alone).

    Computed from the config on the meta device: no weight is read to plan.
    """
    with torch.device("meta"):
        state = Llama(cfg).state_dict()
    groups: list[list[ExportedWeight]] = [[]]
    size = 0
    for ours, value in state.items():
        hf, mapped = to_hf_tensor(ours, value, cfg)
        nbytes = trim_rows(hf, mapped, cfg).numel() * dtype.itemsize
        if groups[-1] and size + nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(ExportedWeight(ours, hf, tuple(value.shape), nbytes))
        size += nbytes
    return groups


def shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_shard(found: CheckpointInfo, cfg: ModelConfig, weights: list[ExportedWeight],
                dtype: torch.dtype, file: Path) -> None:  # fmt: skip
    """Read just these weights from the checkpoint and write them as one safetensors file."""
    state = {w.ours: torch.empty(w.stored_shape) for w in weights}
    load_checkpoint(found.path, {"model": state}, local=True)
    tensors = {}
    for weight in weights:
        hf, value = to_hf_tensor(weight.ours, state.pop(weight.ours), cfg)
        tensors[hf] = trim_rows(hf, value, cfg).to(dtype).contiguous()
    save_file(tensors, str(file), metadata={"format": "pt"})


def _write_index(out: Path, plan: list[list[ExportedWeight]], names: list[str]) -> None:
    if len(names) == 1:
        return
    weight_map = {w.hf: name for group, name in zip(plan, names, strict=True) for w in group}
    total = sum(w.nbytes for group in plan for w in group)
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
    """Write the Hugging Face directory `out` from a checkpoint (or a run's newest one).

    Weights are streamed: each output file's tensors are read from the checkpoint, written,
    and released before the next, so no process holds the whole model. Under a launcher
    (every rank calls this), the files are dealt out over the ranks, and rank 0 writes the
    rest and renames the directory when every rank has finished.
    """
    if dtype not in DTYPES:
        raise ScifmError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    found = find_checkpoint(checkpoint)
    cfg = model_config_of(found)
    tokenizer = checkpoint_tokenizer(found, tokenizer_path)
    plan = plan_shards(cfg, DTYPES[dtype], max_shard_bytes)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if rank != 0:
        tmp = Path(_share(None))
        _write_weights(found, cfg, plan, DTYPES[dtype], tmp, rank, world)
        _barrier()  # every rank's files are written
        _barrier()  # rank 0 has renamed the directory
        return out
    with atomic_dir(out) as tmp:
        _share(str(tmp))
        _write_weights(found, cfg, plan, DTYPES[dtype], tmp, rank, world)
        _barrier()
        _write_index(tmp, plan, shard_names(len(plan)))
        ids = _write_tokenizer(tmp, tokenizer, cfg)
        write_json(tmp / "config.json", {**hf_config_dict(cfg, dtype, cfg.vocab_size), **ids})
        write_json(tmp / "generation_config.json", {**ids, "do_sample": False})
        write_json(tmp / "scifm_export.json", {
            "checkpoint": str(found.path), "step": found.step, "code_version": code_version(),
            "rope_convention": cfg.rope_convention,
            "rope_permutation": "interleaved->half on q/k rows"
            if cfg.rope_convention == "interleaved" else "none",
            "tokenizer_sha256": tokenizer.sha256, "written_by_ranks": world,
        })  # fmt: skip
    _barrier()
    return out


def _write_weights(found: CheckpointInfo, cfg: ModelConfig, plan: list[list[ExportedWeight]],
                   dtype: torch.dtype, out: Path, rank: int, world: int) -> None:  # fmt: skip
    names = shard_names(len(plan))
    mine = range(rank, len(plan), world)
    with track(len(mine), "export") as bar:
        for i in mine:
            write_shard(found, cfg, plan[i], dtype, out / names[i])
            bar.advance(1)


def _share(path: str | None) -> str:
    """Rank 0's temporary directory, told to every rank."""
    if not dist.is_initialized():
        return path or ""
    box = [path]
    dist.broadcast_object_list(box, src=0)
    return box[0] or ""


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def read_export(out: Path) -> dict[str, Any]:
    return json.loads((out / "scifm_export.json").read_text())
