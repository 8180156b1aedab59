"""The watchdog and the straggler detector on real gloo jobs, and the store reads they use.

- 2 ranks step through small all-reduces under a 3 s watchdog; rank 1 sleeps 60 s in step 4
  before it arrives. The job must end within seconds of the deadline, with exit code 3,
  a line naming rank 1 as the rank that did not arrive, and rank 1's stack in the dump.
- 3 ranks, rank 2 burning 0.3 s of CPU per step inside its local timer: every comparison
  (every 3 steps, factor 2) reports rank 2 and only rank 2, on every rank.
- `stalled_ranks` against a store: present, missing and unanswered keys.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch.distributed as dist

from scifm.train.watchdog import StalledRank, describe_arrivals, stalled_ranks
from tests.distributed.conftest import torchrun_result

DEADLINE_S = 3.0
HOST = socket.gethostname()


@pytest.mark.distributed
def test_a_rank_that_stalls_before_arriving_is_named_and_the_job_ends(tmp_path) -> None:
    start = time.time()
    done = torchrun_result("watchdog_stall.py", 2, str(tmp_path), str(DEADLINE_S), timeout=90)
    end = time.time()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-4000:]
    assert "exitcode  : 3" in output, output[-4000:]  # torchrun's summary: our exit code
    line = next(x for x in output.splitlines() if x.startswith("watchdog: step 4 exceeded"))
    print(f"\n{line}\nthe job ended {end - start:.1f}s after it began")
    assert "exceeded its 3s deadline" in line
    assert f"ranks that did not arrive: 1 (host {HOST}, last arrived at step 3);" in line
    assert f"stalled ranks: 1 (host {HOST}, step 4" in line and "0 (host" not in line
    assert "exiting with code 3" in line
    assert "in stall_before_arriving" in output
    assert "in stall_before_arriving" in (tmp_path / "stacks-rank1.txt").read_text()
    stalled_at = float((tmp_path / "stalled_at").read_text())
    assert end - stalled_at < DEADLINE_S + 10, end - stalled_at  # the stall alone: 60 s
    assert end - start < 40, end - start
    assert not list(tmp_path.glob("finished-rank*"))


@pytest.mark.distributed
def test_a_rank_burning_cpu_in_its_local_time_is_the_only_straggler(tmp_path) -> None:
    done = torchrun_result("stragglers.py", 3, str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in range(3):
        reports = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert sorted(reports) == ["3", "6"], reports
        for found in reports.values():
            assert [(s["rank"], s["host"]) for s in found] == [(2, HOST)], found
            assert found[0]["seconds"] > 0.25 and found[0]["ratio"] > 2, found
    lines = [x for x in done.stderr.splitlines() if "stragglers at step" in x]
    assert len(lines) == 2 and all(f"rank 2 (host {HOST}) " in x for x in lines), lines


def _store(arrived: dict[int, int], hosts: dict[int, str]) -> dist.Store:
    store = dist.HashStore()
    for rank, step in arrived.items():
        store.set(f"scifm/watchdog/arrived/{rank}", str(step))
    for rank, host in hosts.items():
        store.set(f"scifm/watchdog/host/{rank}", host)
    return store


def test_stalled_ranks_are_those_behind_the_step_or_never_seen() -> None:
    store = _store({0: 7, 1: 6, 2: 7, 4: 8}, {0: "a", 1: "b", 2: "c", 3: "d"})
    late = stalled_ranks(store, world_size=5, step=7, timeout_s=2)
    assert late == [StalledRank(1, "b", 6), StalledRank(3, "d", -1)]
    assert describe_arrivals(late, 5, 7) == (
        "ranks that did not arrive: 1 (host b, last arrived at step 6), "
        "3 (host d, arrived at no step yet)"
    )
    assert stalled_ranks(store, world_size=5, step=6, timeout_s=2) == [StalledRank(3, "d", -1)]
    assert describe_arrivals([], 5, 6).startswith("every rank arrived at step 6's reductions")


def test_many_stalled_ranks_are_summed_up() -> None:
    store = _store({r: 2 for r in range(20)}, {r: f"h{r}" for r in range(20)})
    late = stalled_ranks(store, world_size=20, step=3, timeout_s=2)
    assert len(late) == 20 and describe_arrivals(late, 20, 3) == (
        "no rank arrived at step 3's reductions"
    )
    text = describe_arrivals(late[:12], 20, 3)
    assert text.count("(host") == 8 and text.endswith("and 4 more")


class _FrozenStore:
    """A store whose server stopped answering: every request blocks."""

    def check(self, keys: list[str]) -> bool:
        time.sleep(60)
        return True


def test_a_store_that_does_not_answer_times_out_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer within 0.5s"):
        stalled_ranks(_FrozenStore(), world_size=2, step=1, timeout_s=0.5)
    assert time.monotonic() - start < 2
