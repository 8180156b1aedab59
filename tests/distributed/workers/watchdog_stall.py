"""Worker: steps of one small all-reduce under the watchdog; rank 1 stalls in step 4.

argv: OUT DEADLINE_S. Rank 1 sleeps 60 s in step 4 before it arrives at the all-reduce,
after writing the time the stall began to OUT/stalled_at; the watchdogs must end the job.
"""

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from scifm.core.dist import init_distributed, shutdown_distributed
from scifm.core.logging import setup_logging
from scifm.train.watchdog import StepWatchdog

out, deadline_s = Path(sys.argv[1]), float(sys.argv[2])
info = init_distributed(timeout_s=120)
setup_logging()
watchdog = StepWatchdog(deadline_s, dump_dir=out)
watchdog.start()


def stall_before_arriving(seconds: float) -> None:
    (out / "stalled_at").write_text(repr(time.time()))
    time.sleep(seconds)


for step in range(1, 9):
    watchdog.step_started(step)
    value = torch.full((64,), float(step * (info.rank + 1)))
    if step == 4 and info.rank == 1:
        stall_before_arriving(60)
    watchdog.arrived(step)
    dist.all_reduce(value)
    watchdog.step_finished(step)
watchdog.stop()
(out / f"finished-rank{info.rank}").write_text("")
shutdown_distributed()
