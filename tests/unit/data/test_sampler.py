"""The implicit sampler against the materialised reference, and its properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scifm.core.errors import ScifmError
from scifm.data import BlendedSampler, CorpusSource, open_mixture
from tests.unit.data.conftest import make_corpora, write_corpus_file
from tests.unit.data.reference import ReferenceSampler


def _sampler(corpora, weights=(5, 3, 2), seq_len=16, seed=7, window=8, valid=0.0, **kw):
    sources = [CorpusSource(name=n, prefixes=p, weight=w)
               for (n, p), w in zip(corpora.items(), weights, strict=True)]  # fmt: skip
    return BlendedSampler(open_mixture(sources), seq_len, seed, window, valid, **kw)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seq_len=st.sampled_from([4, 16, 61]),
    window=st.sampled_from([1, 4, 16, 64]),
    seed=st.integers(0, 2**32),
    valid=st.sampled_from([0.0, 0.1]),
    weights=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    blend_batch=st.sampled_from([1, 8, 24]),
)
def test_samples_equal_the_materialised_reference(tmp_path_factory, seq_len, window, seed,
                                                  valid, weights, blend_batch) -> None:  # fmt: skip
    corpora = make_corpora(tmp_path_factory.mktemp("c"), docs_per_file=25)
    sampler = _sampler(corpora, weights, seq_len, seed, window, valid, blend_batch=blend_batch)
    reference = ReferenceSampler(list(corpora.values()), weights, seq_len, seed, window, valid)
    assert list(sampler.samples_per_epoch) == reference.epoch_size
    count = 400  # enough for several epochs of the smaller corpora
    expected = reference.samples(sampler, count)
    assert np.array_equal(sampler.batch(0, count), expected)
    # any window of the stream, in any order of requests, gives the same samples
    assert np.array_equal(sampler.batch(123, 50), expected[123:173])


def test_no_sample_repeats_within_a_corpus_epoch(corpora) -> None:
    sampler = _sampler(corpora)
    corpus, epoch, sample = sampler.locate(np.arange(4000))
    for c in range(3):
        for e in np.unique(epoch[corpus == c]):
            chosen = sample[(corpus == c) & (epoch == e)]
            assert len(np.unique(chosen)) == len(chosen)
            if np.sum(epoch[corpus == c] > e):  # a completed epoch visits every sample
                assert np.array_equal(np.sort(chosen), np.arange(sampler.samples_per_epoch[c]))
    assert epoch.max() >= 2  # more epochs than data are allowed
    assert np.all(sampler.epochs_seen(4000) > 2)


def test_epochs_reshuffle_documents_and_samples(corpora) -> None:
    sampler = _sampler(corpora)
    reference = ReferenceSampler(list(corpora.values()), (5, 3, 2), 16, 7, 8)
    assert not np.array_equal(reference.stream(0, 0), reference.stream(0, 1))
    assert np.array_equal(np.sort(reference.stream(0, 0)), np.sort(reference.stream(0, 1)))
    corpus, epoch, sample = sampler.locate(np.arange(3000))
    firsts = [sample[(corpus == 0) & (epoch == e)][:20] for e in (0, 1)]
    assert not np.array_equal(*firsts)


def test_identical_across_instances_and_cache_sizes(corpora) -> None:
    a = _sampler(corpora).batch(1000, 64)
    b = _sampler(corpora, cache_windows=1).batch(1000, 64)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _sampler(corpora, seed=8).batch(1000, 64))


def test_doc_starts_mark_where_documents_begin(corpora) -> None:
    sampler = _sampler(corpora, window=1)
    tokens, starts = sampler.batch(0, 200, doc_starts=True)
    after_eod = np.zeros_like(starts)
    after_eod[:, 1:] = tokens[:, :-1] == 1  # EOD ends every document, so the next begins
    assert np.array_equal(starts[:, 1:], after_eod[:, 1:])


def test_heldout_documents_are_never_trained_on(tmp_path) -> None:
    corpora = make_corpora(tmp_path, files_per_corpus=(2,), docs_per_file=50)
    sampler = _sampler(corpora, weights=(1,), valid=0.2)
    heldout = sampler.heldout_tokens(0)
    total = sampler.mixture.corpora[0].num_tokens
    assert 0.15 * total < len(heldout) < 0.3 * total
    assert heldout[-1] == 1  # whole documents, ending with EOD
    trained = sampler.batch(0, int(sampler.samples_per_epoch[0]))
    reference = ReferenceSampler(list(corpora.values()), (1,), 16, 7, 8, 0.2)
    assert len(reference.stream(0, 0)) + len(heldout) == total
    assert trained.max() < 1000 and len(trained)
    packed = sampler.heldout_samples(0)
    assert packed.shape == ((len(heldout) - 1) // 16, 17)
    assert np.array_equal(packed[1], heldout[16:33])
    assert len(sampler.heldout_samples(0, limit=2)) == 2


def test_token_beyond_the_vocabulary_is_an_error_naming_the_corpus(corpora) -> None:
    with pytest.raises(ScifmError, match=r"corpus 'c'.*vocabulary 2000"):
        _sampler(corpora, vocab_size=2000).batch(0, 50)


def test_corpus_shorter_than_one_sample_is_an_error(corpora) -> None:
    with pytest.raises(ScifmError, match="fewer than one sample"):
        _sampler(corpora, seq_len=100_000)


def test_corpus_of_matches_located_corpus(corpora) -> None:
    sampler = _sampler(corpora)
    numbers = np.arange(5000, 6000)
    assert np.array_equal(sampler.corpus_of(numbers), sampler.locate(numbers)[0])


def test_requests_larger_than_the_window_cache_grow_it(corpora) -> None:
    small = _sampler(corpora, window=4, cache_windows=4)
    small.batch(0, 3)
    assert np.array_equal(small.batch(0, 60), _sampler(corpora, window=4).batch(0, 60))


def test_heldout_needs_no_documents_in_the_last_file(tmp_path) -> None:
    corpora = make_corpora(tmp_path, files_per_corpus=(1,), docs_per_file=10)
    empty = write_corpus_file(tmp_path / "empty", [])
    sampler = _sampler({"a": [*corpora["a"], empty]}, weights=(1,), seq_len=4, valid=0.05)
    assert len(sampler.heldout_tokens(0)) > 0


def test_negative_token_ids_are_an_error(tmp_path) -> None:
    prefix = write_corpus_file(tmp_path / "neg", [[5, 6, -3, 7, 1] * 10], dtype=np.int32)
    with pytest.raises(ScifmError, match="negative token id -3"):
        _sampler({"n": [prefix]}, weights=(1,), seq_len=8, vocab_size=100).batch(0, 5)


def test_sample_numbers_beyond_float_precision_are_refused(corpora) -> None:
    with pytest.raises(ValueError, match="2\\*\\*53"):
        _sampler(corpora).corpus_of(2**53)
