"""Blended packed samples against a straightforward materialised reference."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from scifm.core.errors import ScifmError
from scifm.data import BlendedSamples, CorpusSource, DataConfig
from scifm.tokens.writer import IndexedWriter


def _write(prefix: Path, docs: list[list[int]]) -> str:
    with IndexedWriter(prefix, np.uint16) as writer:
        for doc in docs:
            writer.add_document(doc)
    return str(prefix)


@pytest.fixture
def corpora(tmp_path) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    out = {}
    for c, name in enumerate(("a", "b", "c")):
        files = []
        for f in range(2):
            docs = [list(rng.integers(3, 500, rng.integers(1, 40)) + 1000 * c) for _ in range(30)]
            files.append(_write(tmp_path / f"{name}{f}", docs))
        out[name] = files
    return out


def _config(corpora, weights=(0.5, 0.3, 0.2), seq_len=16, seed=7) -> DataConfig:
    sources = [CorpusSource(name=n, prefixes=p, weight=w)
               for (n, p), w in zip(corpora.items(), weights, strict=True)]  # fmt: skip
    return DataConfig(corpora=sources, seq_len=seq_len, seed=seed)


def _stream(prefixes: list[str]) -> np.ndarray:
    parts = [np.fromfile(p + ".bin", dtype=np.uint16) for p in prefixes]
    return np.concatenate(parts).astype(np.int64)


def test_samples_are_packed_windows_of_the_corpus_stream(corpora) -> None:
    samples = BlendedSamples(_config(corpora))
    streams = [_stream(p) for p in corpora.values()]
    for n in range(200):
        corpus, _, k = samples.locate(n)
        expected = streams[corpus][k * 16 : k * 16 + 17]
        assert np.array_equal(samples.sample(n), expected)


def test_every_prefix_stays_within_one_sample_of_its_weight(corpora) -> None:
    weights = np.array([0.5, 0.3, 0.2])
    samples = BlendedSamples(_config(corpora, tuple(weights)))
    counts = np.zeros(3)
    for n in range(1, 500):
        counts[samples.locate(n - 1)[0]] += 1
        assert np.all(np.abs(counts - weights * n) <= 1.0), (n, counts)


def test_no_repeat_within_a_corpus_epoch_and_full_coverage(corpora) -> None:
    samples = BlendedSamples(_config(corpora))
    seen: dict[tuple[int, int], list[int]] = {}
    for n in range(2000):
        corpus, epoch, k = samples.locate(n)
        seen.setdefault((corpus, epoch), []).append(k)
    for (corpus, _), ks in seen.items():
        assert len(ks) == len(set(ks))
        if len(ks) == samples.samples_per_epoch[corpus]:
            assert sorted(ks) == list(range(samples.samples_per_epoch[corpus]))
    assert max(epoch for _, epoch in seen) >= 1


def test_epochs_are_shuffled_differently_and_runs_are_identical(corpora) -> None:
    one, two = BlendedSamples(_config(corpora)), BlendedSamples(_config(corpora))
    assert np.array_equal(one.batch(0, 64), two.batch(0, 64))
    assert not np.array_equal(one._order(0, 0), one._order(0, 1))
    other_seed = BlendedSamples(_config(corpora, seed=8))
    assert not np.array_equal(one.batch(0, 64), other_seed.batch(0, 64))


def test_resume_is_asking_for_the_next_sample(corpora) -> None:
    full = BlendedSamples(_config(corpora)).batch(0, 96)
    resumed = BlendedSamples(_config(corpora)).batch(40, 56)
    assert np.array_equal(full[40:], resumed)


def test_counts_follow_weights_over_a_long_stream(corpora) -> None:
    samples = BlendedSamples(_config(corpora, (2.0, 1.0, 1.0)))
    counts = Counter(samples.locate(n)[0] for n in range(400))
    assert counts == {0: 200, 1: 100, 2: 100}


def test_bad_mixtures_are_clear_errors(corpora, tmp_path) -> None:
    with pytest.raises(ScifmError, match="data.corpora is empty"):
        BlendedSamples(DataConfig())
    tiny = _write(tmp_path / "tiny", [[1, 2, 3]])
    cfg = DataConfig(corpora=[CorpusSource(name="t", prefixes=[tiny], weight=1)], seq_len=16)
    with pytest.raises(ScifmError, match="fewer than one sample"):
        BlendedSamples(cfg)
    with pytest.raises(ScifmError, match="corpus names must be unique"):
        DataConfig.from_dict({"corpora": [{"name": "x", "prefixes": ["p"], "weight": 1}] * 2})
    with pytest.raises(ScifmError, match="weight"):
        DataConfig.from_dict({"corpora": [{"name": "x", "prefixes": ["p"], "weight": 0}]})
    missing = DataConfig(corpora=[CorpusSource(name="m", prefixes=[str(tmp_path / "no")],
                                               weight=1)])  # fmt: skip
    with pytest.raises(ScifmError, match="no"):
        BlendedSamples(missing)
