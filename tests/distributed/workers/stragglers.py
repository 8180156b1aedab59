"""Worker: rank 2 burns 0.3 s of CPU per step inside its local timer; writes the reports.

argv: OUT. Each step: a little local compute under `LocalTimer`, one all-reduce (where the
fast ranks wait for rank 2), then the detector (every 3 steps, factor 2). Every rank
writes OUT/rank{r}.json: the stragglers `check` returned, by step.
"""

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from scifm.core.dist import init_distributed, shutdown_distributed
from scifm.core.logging import setup_logging
from scifm.train.stragglers import LocalTimer, StragglerDetector

out = Path(sys.argv[1])
info = init_distributed(timeout_s=60)
setup_logging()
torch.set_num_threads(1)
detector = StragglerDetector(every=3, factor=2.0)


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


reports = {}
for step in range(1, 7):
    timer = LocalTimer()
    with timer:
        weights = torch.randn(64, 64)
        loss = (weights @ weights).square().mean().reshape(1)
        if info.rank == 2:
            burn_cpu(0.3)
    detector.record(timer.seconds)
    dist.all_reduce(loss)
    found = detector.check(step)
    if found:
        reports[step] = [asdict(straggler) for straggler in found]
(out / f"rank{info.rank}.json").write_text(json.dumps(reports))
shutdown_distributed()
