"""The rank-sharded, stateful loader: disjoint covering slices, exact resume, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scifm.core.errors import ScifmError
from scifm.data import BlendedSampler, CorpusSource, DataConfig
from scifm.data.loader import RankBatches, TokenLoader


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
    with pytest.raises(ScifmError, match="not a multiple of the global batch"):
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
