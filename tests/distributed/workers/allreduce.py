"""Worker: join the job through scifm.core.dist, all-reduce ranks, write what it saw."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from scifm.core.dist import init_distributed, shutdown_distributed

out = Path(sys.argv[1])
info = init_distributed(timeout_s=60)
value = torch.tensor([float(info.rank + 1)])
dist.all_reduce(value)
record = {
    "launcher": info.launcher,
    "rank": info.rank,
    "world_size": info.world_size,
    "backend": dist.get_backend(),
    "sum": value.item(),
}
(out / f"rank{info.rank}.json").write_text(json.dumps(record))
shutdown_distributed()
