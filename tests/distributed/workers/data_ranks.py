"""Worker: each rank reads its slices of 3 global batches; rank 0 checks them against the
single-process sampler's global batches and writes `ok` to the result file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from scifm.core.dist import init_distributed, shutdown_distributed
from scifm.data import DataConfig
from scifm.data.loader import TokenLoader
from scifm.data.sampler import BlendedSampler


def main(config_path: str, result: str) -> None:
    info = init_distributed(device="cpu")
    cfg = DataConfig.from_yaml(config_path)
    loader = TokenLoader(cfg, global_batch=8, micro_batch=2, rank=info.rank,
                         world=info.world_size, consumed_samples=8)  # fmt: skip
    mine = torch.cat([next(loader)["tokens"] for _ in range(3 * 8 // info.world_size // 2)])
    gathered = [torch.empty_like(mine) for _ in range(info.world_size)]
    dist.all_gather(gathered, mine)
    if info.rank == 0:
        per_rank = 8 // info.world_size
        rows = [
            torch.cat([g[b * per_rank : (b + 1) * per_rank] for g in gathered]) for b in range(3)
        ]
        expected = BlendedSampler.from_config(cfg, blend_batch=8).batch(8, 24)
        same = np.array_equal(torch.cat(rows).numpy(), expected)
        Path(result).write_text("ok" if same else "mismatch")
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
