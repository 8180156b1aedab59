"""Blended, packed samples: global sample number n -> seq_len + 1 tokens, deterministically.

Packing follows Megatron's GPT dataset: a corpus is one token stream (documents separated by
EOD); its k-th sample is tokens [k*seq_len, k*seq_len + seq_len + 1), so consecutive samples
overlap by one token and a corpus epoch has (tokens - 1) // seq_len samples. Samples within a
corpus epoch are visited in a seeded random order, a fresh order per epoch; more epochs than
data are allowed.

Blending picks, for each global sample, the corpus whose count lags its weight the most
(argmax of w_c * (n + 1) - count_c), which keeps every prefix of the stream within one sample
of each weight. Positions are computed once and extended on demand; resume is a matter of
asking for sample `consumed_samples` next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scifm.core.errors import ScifmError
from scifm.data.mixture import DataConfig
from scifm.tokens.format import IndexedTokens, prefix_paths


@dataclass
class _CorpusStream:
    """One corpus: its files' token streams back to back."""

    name: str
    files: list[np.ndarray]
    starts: np.ndarray  # first global token of each file, plus the total at the end

    @property
    def num_tokens(self) -> int:
        return int(self.starts[-1])

    def tokens(self, start: int, stop: int) -> np.ndarray:
        out = []
        index = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            offset = start - int(self.starts[index])
            take = min(stop - start, len(self.files[index]) - offset)
            out.append(self.files[index][offset : offset + take])
            start += take
            index += 1
        return np.concatenate(out) if len(out) > 1 else out[0]


def _open_corpus(name: str, prefixes: list[str]) -> _CorpusStream:
    streams = [_token_stream(prefix) for prefix in prefixes]
    dtypes = {s.dtype for s in streams}
    if len(dtypes) > 1:
        raise ScifmError(f"corpus {name!r}: files mix token dtypes {sorted(map(str, dtypes))}")
    starts = np.concatenate([[0], np.cumsum([len(s) for s in streams])]).astype(np.int64)
    return _CorpusStream(name, streams, starts)


def _token_stream(prefix: str) -> np.ndarray:
    """A file's tokens as one memory-mapped array: the .bin stores sequences back to back."""
    indexed = IndexedTokens(prefix)  # validates the .idx and the .bin size
    if indexed.num_tokens == 0:
        return np.zeros(0, dtype=indexed.dtype)
    bin_path, _ = prefix_paths(prefix)
    return np.memmap(bin_path, dtype=indexed.dtype, mode="r", shape=(indexed.num_tokens,))


class BlendedSamples:
    """The training stream of one mixture: `sample(n)` is the same on every rank and run."""

    def __init__(self, cfg: DataConfig) -> None:
        if not cfg.corpora:
            raise ScifmError("data.corpora is empty: list at least one corpus with its prefixes")
        self.cfg = cfg
        self.seq_len = cfg.seq_len
        self.weights = np.asarray(cfg.normalized_weights(), dtype=np.float64)
        self.corpora = [_open_corpus(c.name, c.prefixes) for c in cfg.corpora]
        self.samples_per_epoch = [self._epoch_size(c) for c in self.corpora]
        self._corpus_of = np.zeros(0, dtype=np.int64)
        self._index_in_corpus = np.zeros(0, dtype=np.int64)
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _epoch_size(self, corpus: _CorpusStream) -> int:
        size = (corpus.num_tokens - 1) // self.seq_len
        if size < 1:
            raise ScifmError(
                f"corpus {corpus.name!r} has {corpus.num_tokens} tokens, fewer than one sample "
                f"of seq_len + 1 = {self.seq_len + 1}; lower data.seq_len or add data"
            )
        return size

    def _extend_blend(self, count: int) -> None:
        """Compute the corpus of every global sample below `count` (greedy weight tracking)."""
        done = len(self._corpus_of)
        if count <= done:
            return
        counts = np.bincount(self._corpus_of, minlength=len(self.weights)).astype(np.int64)
        new_corpus = np.empty(count - done, dtype=np.int64)
        new_index = np.empty(count - done, dtype=np.int64)
        for i, n in enumerate(range(done, count)):
            choice = int(np.argmax(self.weights * (n + 1) - counts))
            new_corpus[i], new_index[i] = choice, counts[choice]
            counts[choice] += 1
        self._corpus_of = np.concatenate([self._corpus_of, new_corpus])
        self._index_in_corpus = np.concatenate([self._index_in_corpus, new_index])

    def _order(self, corpus: int, epoch: int) -> np.ndarray:
        key = (corpus, epoch)
        if key not in self._orders:
            rng = np.random.default_rng([self.cfg.seed, corpus, epoch])
            self._orders[key] = rng.permutation(self.samples_per_epoch[corpus])
        return self._orders[key]

    def locate(self, n: int) -> tuple[int, int, int]:
        """Global sample n -> (corpus, epoch, sample within the corpus stream)."""
        self._extend_blend(n + 1)
        corpus = int(self._corpus_of[n])
        epoch, position = divmod(int(self._index_in_corpus[n]), self.samples_per_epoch[corpus])
        return corpus, epoch, int(self._order(corpus, epoch)[position])

    def sample(self, n: int) -> np.ndarray:
        corpus, _, k = self.locate(n)
        start = k * self.seq_len
        return self.corpora[corpus].tokens(start, start + self.seq_len + 1)

    def batch(self, first: int, count: int) -> np.ndarray:
        """Samples first .. first + count - 1 stacked as int64 [count, seq_len + 1]."""
        return np.stack([self.sample(n).astype(np.int64) for n in range(first, first + count)])

    def max_token_id(self) -> int:
        """The largest token id of any corpus (one pass over the memory-mapped files)."""
        return max(int(f.max()) for c in self.corpora for f in c.files if len(f))

    def corpus_names(self) -> list[str]:
        return [c.name for c in self.corpora]
