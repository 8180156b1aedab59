"""An export does not depend on the layout its checkpoint was saved in, nor on how many
ranks write it: a checkpoint of FSDP2 shards from two ranks, exported by two ranks (through
the API and through `torchrun ... scifm export hf`), gives the same files, tensor for tensor,
as the same seeded weights saved and exported by one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader

from scifm.checkpoint import save_checkpoint
from scifm.convert.export import export_hf
from scifm.model import build_model
from scifm.tokens.tokenizer import TokenizerConfig, train_tokenizer
from tests.distributed.conftest import _clean_env, run_torchrun
from tests.distributed.workers.export_fsdp import CFG, SEED

SHARD_BYTES = 60_000  # several files, so both ranks write some


def _tensors(hf_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {f.name: load_file(str(f)) for f in sorted(hf_dir.glob("*.safetensors"))}


def _assert_same_export(a: Path, b: Path) -> None:
    ours, theirs = _tensors(a), _tensors(b)
    assert list(ours) == list(theirs) and len(ours) > 2
    for name in ours:
        assert list(ours[name]) == list(theirs[name])
        for key, tensor in ours[name].items():
            assert torch.equal(tensor, theirs[name][key]), f"{name}: {key} differs"
    for name in ("model.safetensors.index.json", "config.json", "tokenizer_config.json"):
        assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name


def test_export_of_fsdp2_world_2_checkpoint_equals_world_1(tmp_path: Path) -> None:
    tokenizer = tmp_path / "tokenizer.json"
    train_tokenizer(TokenizerConfig(vocab_size=400, min_frequency=1),
                    [json.__doc__ or "", json.dumps.__doc__ or ""], tokenizer)  # fmt: skip
    run_torchrun("export_fsdp.py", 2, str(tmp_path / "run2"), str(tmp_path / "hf2"),
                 str(tokenizer), str(SHARD_BYTES))  # fmt: skip
    (saved,) = (tmp_path / "run2" / "checkpoints").glob("step-*")
    stored = FileSystemReader(str(saved)).read_metadata().state_dict_metadata
    assert len(stored["model.layers.0.attention.wq.weight"].chunks) == 2  # FSDP2 shards
    meta = {"model": CFG.to_dict(), "rope_convention": CFG.rope_convention, "world_size": 1}
    model = build_model(CFG, seed=SEED)
    save_checkpoint(tmp_path / "run1", 3, {"model": model.state_dict()}, meta)
    export_hf(tmp_path / "run1", tmp_path / "hf1", tokenizer, max_shard_bytes=SHARD_BYTES)
    _assert_same_export(tmp_path / "hf1", tmp_path / "hf2")
    record = json.loads((tmp_path / "hf2" / "scifm_export.json").read_text())
    assert record["written_by_ranks"] == 2

    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
               "localhost:0", "-m", "scifm.cli", "export", "hf", str(tmp_path / "run2"),
               str(tmp_path / "hf2-cli"), "--tokenizer", str(tokenizer),
               "--max-shard-gb", str(SHARD_BYTES / 2**30)]  # fmt: skip
    done = subprocess.run(command, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1  # rank 0 reports
    _assert_same_export(tmp_path / "hf1", tmp_path / "hf2-cli")
    assert not list(tmp_path.glob(".hf2-cli*"))  # no temporary directory left
