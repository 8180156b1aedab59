"""The rank-sharded, stateful loader: disjoint covering slices, exact resume, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scifm.core.errors import ScifmError
from scifm.data import BlendedSampler, CorpusSource, DataConfig
from scifm.data.loader import BatchSchedule, RankBatches, TokenLoader


@pytest.fixture
def cfg(corpora) -> DataConfig:
    sources = [CorpusSource(name=n, prefixes=p, weight=w)
               for (n, p), w in zip(corpora.items(), (5, 3, 2), strict=True)]  # fmt: skip
    return DataConfig(corpora=sources, seq_len=16, seed=3, shuffle_window_docs=8)


def _take(loader: TokenLoader, count: int) -> list[torch.Tensor]:
    return [next(loader)["tokens"] for _ in range(count)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_rank_slices_are_disjoint_and_cover_each_global_batch(world: int) -> None:
    per_rank = [list(RankBatches(16, 2, r, world, total_samples=64)) for r in range(world)]
    for batch in range(4):
        seen = []
        for rank in range(world):
            micro_per_batch = 16 // world // 2
            chunk = per_rank[rank][batch * micro_per_batch : (batch + 1) * micro_per_batch]
            seen += [n for micro in chunk for n in micro]
        assert sorted(seen) == list(range(batch * 16, (batch + 1) * 16))


def test_loader_yields_the_global_stream_sliced_by_rank(cfg) -> None:
    sampler = BlendedSampler.from_config(cfg, blend_batch=8)
    expected = sampler.batch(0, 32)
    for rank in range(2):
        loader = TokenLoader(cfg, global_batch=8, micro_batch=2, rank=rank, world=2)
        got = torch.cat(_take(loader, 8)).numpy()  # 4 global batches, 4 samples each
        rows = [b * 8 + rank * 4 + i for b in range(4) for i in range(4)]
        assert np.array_equal(got, expected[rows])


def test_resume_from_state_dict_gives_the_uninterrupted_batches(cfg) -> None:
    straight = TokenLoader(cfg, global_batch=8, micro_batch=4)
    uninterrupted = _take(straight, 10)
    first = TokenLoader(cfg, global_batch=8, micro_batch=4)
    _take(first, 4)  # two global batches
    state = first.state_dict()
    assert state == {"consumed_samples": 16}
    resumed = TokenLoader(cfg, global_batch=8, micro_batch=4, **state)
    for a, b in zip(uninterrupted[4:], _take(resumed, 6), strict=True):
        assert torch.equal(a, b)


def test_resume_at_another_world_size_continues_the_same_stream(cfg) -> None:
    one = TokenLoader(cfg, global_batch=8, micro_batch=8, consumed_samples=16)
    whole = next(one)["tokens"]
    halves = [next(TokenLoader(cfg, 8, 4, rank=r, world=2, consumed_samples=16))["tokens"]
              for r in range(2)]  # fmt: skip
    assert torch.equal(torch.cat(halves), whole)


def test_worker_processes_give_the_same_batches(cfg) -> None:
    inline = _take(TokenLoader(cfg, 8, 4), 6)
    workers = _take(TokenLoader(cfg, 8, 4, num_workers=2), 6)
    assert all(torch.equal(a, b) for a, b in zip(inline, workers, strict=True))
    assert inline[0].dtype == torch.int64 and inline[0].shape == (4, 17)


def test_doc_starts_travel_with_the_tokens(cfg) -> None:
    batch = next(TokenLoader(cfg, 8, 4, doc_starts=True))
    assert batch["doc_starts"].dtype == torch.bool and batch["doc_starts"].shape == (4, 17)


def test_batch_that_does_not_split_into_ranks_is_an_error(cfg) -> None:
    with pytest.raises(ScifmError, match="must split into 3"):
        TokenLoader(cfg, global_batch=8, micro_batch=2, world=3)
    with pytest.raises(ScifmError, match="not at a step boundary"):
        TokenLoader(cfg, global_batch=8, micro_batch=2, consumed_samples=4)


def test_errors_in_worker_processes_stay_one_line(cfg) -> None:
    loader = TokenLoader(cfg, 8, 4, num_workers=2, vocab_size=2000)
    with pytest.raises(ScifmError) as caught:
        next(loader)
    assert "\n" not in str(caught.value) and "vocabulary 2000" in str(caught.value)


@pytest.mark.parametrize(("rank", "world", "micro"), [(2, 2, 2), (-1, 2, 2), (0, 2, 0)])
def test_rank_and_micro_batch_are_validated(rank: int, world: int, micro: int) -> None:
    with pytest.raises(ScifmError, match="0 <= rank < world"):
        RankBatches(8, micro, rank, world)


def test_batch_ramp_grows_by_increments_then_stays_final() -> None:
    ramp = BatchSchedule(final=16, start=4, increment=4, ramp_samples=48)  # 3 increments of 16
    sizes, position = [], 0
    for _ in range(10):
        sizes.append(ramp.size_at(position))
        position += sizes[-1]
    # steps start at 0, 4, 8, 12 | 16, 24 | 32, 44 | 56 (past the ramp), 72
    assert sizes == [4, 4, 4, 4, 8, 8, 12, 12, 16, 16]
    for steps in range(12):
        assert ramp.steps_before(ramp.position_after(steps)) == steps
    assert ramp.steps_before(6) is None and ramp.steps_before(ramp.position_after(9) + 3) is None


@pytest.mark.parametrize("world", [1, 2])
def test_ramped_loader_slices_each_step_and_resumes(cfg, world: int) -> None:
    ramp = BatchSchedule(final=8, start=4, increment=4, ramp_samples=16)
    whole = TokenLoader(cfg, ramp, micro_batch=2)
    steps = [whole.next_step() for _ in range(6)]
    assert [2 * len(step) for step in steps] == [4, 4, 4, 4, 8, 8]
    assert whole.consumed_samples == ramp.position_after(6) == 32
    position = ramp.position_after(3)
    for step_index in (3, 4):
        size = ramp.size_at(position)
        expected = torch.cat([m["tokens"] for m in steps[step_index]])
        ranks = [TokenLoader(cfg, ramp, 2, rank=r, world=world, consumed_samples=position)
                 for r in range(world)]  # fmt: skip
        got = torch.cat([m["tokens"] for loader in ranks for m in loader.next_step()])
        assert torch.equal(got, expected) and got.shape[0] == size
        position += size


def test_ramp_sizes_must_split_into_ranks_and_micro_batches(cfg) -> None:
    with pytest.raises(ScifmError, match="global batch 6 must split into 2"):
        TokenLoader(cfg, BatchSchedule(final=8, start=6, increment=2, ramp_samples=8), 2, world=2)
    with pytest.raises(ScifmError, match="not a multiple of the increment"):
        BatchSchedule(final=8, start=2, increment=4, ramp_samples=8)
