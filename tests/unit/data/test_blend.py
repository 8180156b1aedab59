"""The closed-form interleave: consistent indices, and every corpus close to its weight."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scifm.data.blend import BatchBlend, WeightTree

DOLMA_LIKE = [0.254, 0.198, 0.146, 0.081, 0.062, 0.052, 0.049, 0.044, 0.034, 0.031, 0.023,
              0.0125, 0.0085, 0.004]  # fmt: skip


def _cumulative(tree: WeightTree, count: int) -> np.ndarray:
    corpus, _ = tree.route(np.arange(count))
    steps = np.zeros((count + 1, tree.num_corpora), dtype=np.int64)
    steps[np.arange(1, count + 1), corpus] = 1
    return np.cumsum(steps, axis=0)


def _max_deviations(weights, count: int, batch: int, blend=None) -> tuple[float, float]:
    tree = blend or WeightTree(weights)
    cum = _cumulative(tree, count)
    ideal = np.outer(np.arange(count + 1), tree.weights)
    prefix = np.abs(cum - ideal).max()
    starts = np.arange(0, count - batch + 1, batch)
    per_batch = np.abs(cum[starts + batch] - cum[starts] - batch * tree.weights).max()
    return float(prefix), float(per_batch)


def test_index_within_corpus_counts_the_corpus_samples_before_it() -> None:
    tree = WeightTree([0.5, 0.3, 0.2])
    corpus, index = tree.route(np.arange(5000))
    for c in range(3):
        assert np.array_equal(index[corpus == c], np.arange(np.sum(corpus == c)))
    assert np.array_equal(tree.counts(5000), np.bincount(corpus, minlength=3))


def test_routing_far_into_the_run_matches_counts() -> None:
    tree = WeightTree(DOLMA_LIKE)
    n = 488_281_250  # AuroraGPT's 2T-token run at seq 4096
    corpus, index = tree.route(np.arange(n, n + 768))
    counts = tree.counts(n)
    for c in np.unique(corpus):
        assert index[corpus == c][0] == counts[c]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    raw=st.lists(st.integers(1, 1000), min_size=1, max_size=16),
    batch=st.sampled_from([32, 64, 256, 768]),
)
def test_every_prefix_and_global_batch_within_two_samples(raw: list[int], batch: int) -> None:
    """Mixtures where every corpus has at least one sample per global batch on average
    (a 2,000-example search found at most 1.86); rarer corpora can reach ~2.2."""
    assume(min(raw) * batch >= sum(raw))
    prefix, per_batch = _max_deviations(raw, 12_000, batch)
    assert prefix <= 2.0
    assert per_batch <= 2.0


def test_error_bound_holds_and_dolma_mixture_stays_near_one_sample() -> None:
    tree = WeightTree(DOLMA_LIKE)
    prefix, per_batch = _max_deviations(DOLMA_LIKE, 100_000, 768)
    assert prefix <= tree.bound / 2 + 1e-9
    assert per_batch <= tree.bound + 1e-9
    assert per_batch < 1.5


def test_one_corpus_takes_every_sample() -> None:
    corpus, index = WeightTree([3.0]).route(np.arange(10))
    assert np.all(corpus == 0) and np.array_equal(index, np.arange(10))


@settings(max_examples=60, deadline=None)
@given(
    raw=st.lists(st.integers(1, 1000), min_size=1, max_size=16),
    batch=st.sampled_from([1, 7, 32, 64, 256, 768]),
)
def test_batch_blend_keeps_every_prefix_and_global_batch_within_two(raw, batch) -> None:
    """Exact per-batch apportionment: no precondition, rare corpora included (a 1,500-example
    search found at most 1.99, as the construction bounds it below 2)."""
    blend = BatchBlend(raw, batch)
    prefix, per_batch = _max_deviations(raw, 6_000, batch, blend)
    assert prefix <= 2.0 and per_batch <= 2.0
    corpus, index = blend.route(np.arange(6_000))
    for c in range(len(raw)):
        assert np.array_equal(index[corpus == c], np.arange(np.sum(corpus == c)))
    assert np.array_equal(blend.counts(6_000), np.bincount(corpus, minlength=len(raw)))
    assert np.array_equal(blend.counts(1_001), np.bincount(corpus[:1_001], minlength=len(raw)))


def test_batch_blend_of_one_is_the_tree_and_far_batches_agree_with_counts() -> None:
    tree, blend = WeightTree(DOLMA_LIKE), BatchBlend(DOLMA_LIKE, 1)
    numbers = np.arange(0, 3000)
    (tree_c, tree_i), (blend_c, blend_i) = tree.route(numbers), blend.route(numbers)
    assert np.array_equal(tree_c, blend_c) and np.array_equal(tree_i, blend_i)
    blend = BatchBlend(DOLMA_LIKE, 768)
    far = 488_281_250 // 768 * 768
    corpus, index = blend.route(np.arange(far, far + 768))
    counts = blend.counts(far)
    for c in np.unique(corpus):
        assert index[corpus == c][0] == counts[c]
    assert np.all(np.abs(np.bincount(corpus, minlength=14) - 768 * blend.weights) < 2)
