"""Worker: save a seeded model sharded by FSDP2 over the launcher's ranks, then export it.

argv: RUN_DIR HF_DIR TOKENIZER MAX_SHARD_BYTES. Every rank builds the same seeded model
(`tests/distributed/test_export_ranks.py` builds it in one process too), shards it with
FSDP2 over all ranks, saves a checkpoint of the DTensor shards, and takes part in the
export, whose safetensors files are dealt out over the ranks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scifm.checkpoint import save_checkpoint
from scifm.convert.export import export_hf
from scifm.core.dist import init_distributed, shutdown_distributed
from scifm.model import ModelConfig, build_model
from scifm.parallel import ParallelConfig
from scifm.parallel.parallelize import build_mesh, parallelize

CFG = ModelConfig(dim=64, num_layers=3, num_heads=4, num_kv_heads=2, multiple_of=32,
                  vocab_size=400, rope_convention="interleaved")  # fmt: skip
SEED = 11


def main(run_dir: str, hf_dir: str, tokenizer: str, max_shard_bytes: str) -> None:
    info = init_distributed(device="cpu")
    parallel = ParallelConfig()
    model = parallelize(build_model(CFG, seed=SEED), parallel,
                        build_mesh(parallel, info.world_size, "cpu"))  # fmt: skip
    meta = {"model": CFG.to_dict(), "rope_convention": CFG.rope_convention,
            "world_size": info.world_size}  # fmt: skip
    save_checkpoint(Path(run_dir), 3, {"model": model.state_dict()}, meta)
    export_hf(Path(run_dir), Path(hf_dir), Path(tokenizer), max_shard_bytes=int(max_shard_bytes))
    shutdown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:5])
