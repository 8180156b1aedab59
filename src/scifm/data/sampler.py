"""The implicit blended sampler: global sample n -> its tokens, computed on demand.

Nothing is built at start-up and nothing is written: every index Megatron stores on disk
(blending index, per-corpus shuffle and sample index) is a pure function of n here.

    n --WeightTree--> (corpus c, i-th sample of c)          closed-form interleave by weight
      --epoch e = i // S_c, j = i % S_c--> k = P_{c,e}(j)   keyed permutation of the epoch
      --token k * seq_len of the corpus stream-->            Megatron packing
      --file, window, position in the shuffled window-->    tokens [seq_len + 1]

Packing follows Megatron's GPT dataset: a corpus is one stream of documents (each ending with
EOD), its k-th sample is tokens [k*seq_len, k*seq_len + seq_len + 1), so samples overlap by
one token and an epoch has S_c = (tokens - 1) // seq_len samples. Documents are shuffled
within windows of `window_docs` consecutive documents of a file, afresh every epoch; a
window's order and prefix sums are materialised when a sample first touches it (in bulk for
a batch) and kept in an LRU cache. More epochs than data are allowed and counted.

`valid_fraction` holds out each corpus's last documents (whole documents, O(log n) to find)
for validation; training never reads them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from scifm.core.errors import ScifmError
from scifm.data.blend import WeightTree
from scifm.data.files import TokenFile
from scifm.data.mixture import DataConfig, Mixture, open_mixture
from scifm.data.permute import WindowShuffle, derive_key, keyed_permutation

SAMPLE_TAG = 0x53414D50  # key domains, so sample and window shuffles never share keys
WINDOW_TAG = 0x57494E44
WindowKey = tuple[int, int, int, int]  # corpus, epoch, file, window


@dataclass(frozen=True)
class _Window:
    """One shuffled window: per slot, the document's size and first token in its file."""

    sizes: np.ndarray  # int64 [W], 0 for padding slots
    sources: np.ndarray  # int64 [W]
    ends: np.ndarray  # int64 [W]: cumulative sizes, the window-relative end of each slot


class BlendedSampler:
    """Samples of one mixture: `batch(first, count)` is identical on every rank and run."""

    def __init__(
        self,
        mixture: Mixture,
        seq_len: int,
        seed: int = 1234,
        window_docs: int = 256,
        valid_fraction: float = 0.0,
        vocab_size: int | None = None,
        cache_windows: int = 4096,
    ) -> None:
        if seq_len <= 0:
            raise ScifmError(f"seq_len must be positive, got {seq_len}")
        self.mixture = mixture
        self.seq_len = seq_len
        self.seed = seed
        self.vocab_size = vocab_size
        self.window_docs = window_docs
        self.tree = WeightTree(mixture.weights)
        self._shuffle = WindowShuffle(window_docs, seed)
        self._files = [[TokenFile(meta) for meta in c.files] for c in mixture.corpora]
        self._train_docs = [self._split(c, valid_fraction) for c in range(len(self._files))]
        self._starts = [self._stream_starts(c) for c in range(len(self._files))]
        self.samples_per_epoch = np.asarray([self._epoch_size(c) for c in range(len(self._files))])
        self._cache: OrderedDict[WindowKey, _Window] = OrderedDict()
        self._cache_size = cache_windows

    @classmethod
    def from_config(cls, cfg: DataConfig, vocab_size: int | None = None) -> BlendedSampler:
        mixture = open_mixture(cfg.sources(), vocab_size)
        return cls(mixture, cfg.seq_len, cfg.seed, cfg.shuffle_window_docs,
                   cfg.valid_fraction, vocab_size)  # fmt: skip

    # ---- layout of each corpus's training stream ------------------------------------------

    def _split(self, corpus: int, valid_fraction: float) -> list[int]:
        """Training documents per file: all but the held-out tail of the corpus."""
        files = self._files[corpus]
        train = [f.meta.num_docs for f in files]
        if valid_fraction <= 0:
            return train
        total = sum(f.meta.num_tokens for f in files)
        cut = int(total * (1.0 - valid_fraction))
        start = 0
        for i, token_file in enumerate(files):
            if start + token_file.meta.num_tokens > cut:
                doc = token_file.doc_at(cut - start)
                if token_file.token_start(doc) < cut - start:
                    doc += 1
                train[i] = min(doc, token_file.meta.num_docs - 1) if i == len(files) - 1 else doc
                train[i + 1 :] = [0] * (len(files) - i - 1)
                break
            start += token_file.meta.num_tokens
        return train

    def _stream_starts(self, corpus: int) -> np.ndarray:
        files, train = self._files[corpus], self._train_docs[corpus]
        lengths = [f.token_start(d) for f, d in zip(files, train, strict=True)]
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def _epoch_size(self, corpus: int) -> int:
        tokens = int(self._starts[corpus][-1])
        size = (tokens - 1) // self.seq_len
        if size < 1:
            name = self.mixture.corpora[corpus].name
            raise ScifmError(
                f"corpus {name!r} has {tokens} training tokens, fewer than one sample of "
                f"seq_len + 1 = {self.seq_len + 1}; add data or lower data.seq_len"
            )
        return size

    @property
    def names(self) -> list[str]:
        return self.mixture.names

    # ---- global sample -> corpus position ---------------------------------------------------

    def corpus_of(self, n: np.ndarray | int) -> np.ndarray:
        return self.tree.corpus_of(n)

    def locate(self, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global samples -> (corpus, epoch, sample of the corpus stream) of each."""
        corpus, index = self.tree.route(n)
        per_epoch = self.samples_per_epoch[corpus]
        epoch, within = np.divmod(index, per_epoch)
        sample = np.empty_like(within)
        groups = corpus * (1 << 32) + epoch
        for group in np.unique(groups):
            rows = groups == group
            c, e = divmod(int(group), 1 << 32)
            key = derive_key(self.seed, SAMPLE_TAG, c, e)
            sample[rows] = keyed_permutation(within[rows], int(self.samples_per_epoch[c]), key)
        return corpus, epoch, sample

    # ---- shuffled windows ---------------------------------------------------------------------

    def _windows(self, keys: list[WindowKey]) -> list[_Window]:
        """The windows for `keys`, materialising the missing ones in one vectorised pass."""
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            self._materialise(missing)
        found = []
        for key in keys:
            self._cache.move_to_end(key)
            found.append(self._cache[key])
        while len(self._cache) > max(self._cache_size, len(keys)):
            self._cache.popitem(last=False)
        return found

    def _materialise(self, keys: list[WindowKey]) -> None:
        width = self.window_docs
        sizes = np.zeros((len(keys), width), dtype=np.int64)
        bases = np.empty(len(keys), dtype=np.int64)
        shuffle_keys = np.empty(len(keys), dtype=np.uint64)
        for row, (c, e, f, w) in enumerate(keys):
            token_file = self._files[c][f]
            lo = w * width
            hi = min(lo + width, self._train_docs[c][f])
            sizes[row, : hi - lo] = token_file.sizes[lo:hi]
            bases[row] = token_file.token_start(lo)
            shuffle_keys[row] = derive_key(self.seed, WINDOW_TAG, c, e, f, w)
        offsets = np.cumsum(sizes, axis=1) - sizes + bases[:, None]  # file token of each doc
        orders = self._shuffle.orders(shuffle_keys)
        shuffled = np.take_along_axis(sizes, orders, axis=1)
        sources = np.take_along_axis(offsets, orders, axis=1)
        ends = np.cumsum(shuffled, axis=1)
        for row, key in enumerate(keys):
            self._cache[key] = _Window(shuffled[row], sources[row], ends[row])

    def _next_window(self, c: int, f: int, w: int) -> tuple[int, int]:
        """The window after (file f, window w) in corpus c's stream."""
        if (w + 1) * self.window_docs < self._train_docs[c][f]:
            return f, w + 1
        f += 1
        while self._train_docs[c][f] == 0:
            f += 1
        return f, 0

    # ---- tokens ---------------------------------------------------------------------------------

    def batch(self, first: int, count: int, doc_starts: bool = False):
        """Samples first .. first + count - 1 as int64 [count, seq_len + 1].

        With `doc_starts=True` also a bool array marking the positions where a document
        begins (for intra-document attention masks).
        """
        numbers = np.arange(first, first + count, dtype=np.int64)
        return self.samples(numbers, doc_starts)

    def samples(self, numbers: np.ndarray, doc_starts: bool = False):
        corpus, epoch, sample = self.locate(numbers)
        length = self.seq_len + 1
        out = np.empty((len(numbers), length), dtype=np.int64)
        starts = np.zeros((len(numbers), length), dtype=bool) if doc_starts else None
        positions = sample * self.seq_len
        places = self._places(corpus, epoch, positions)
        windows = self._windows([key for key, _ in places])
        for row, ((key, offset), window) in enumerate(zip(places, windows, strict=True)):
            self._fill(out[row], None if starts is None else starts[row], key, window, offset)
        self._check_vocab(out, numbers, corpus)
        return (out, starts) if doc_starts else out

    def _places(self, corpus, epoch, positions) -> list[tuple[WindowKey, int]]:
        """(window key, token offset inside the window's stream) of each sample's start."""
        places = []
        for c, e, position in zip(corpus.tolist(), epoch.tolist(), positions.tolist(), strict=True):
            starts = self._starts[c]
            f = int(np.searchsorted(starts, position, side="right")) - 1
            token_file = self._files[c][f]
            within = position - int(starts[f])
            w = token_file.doc_at(within) // self.window_docs
            base = token_file.token_start(w * self.window_docs)
            places.append(((c, e, f, w), within - base))
        return places

    def _fill(self, row, starts, key: WindowKey, window: _Window, offset: int) -> None:
        c, e, f, w = key
        slot = int(np.searchsorted(window.ends, offset, side="right"))
        skip = offset - (int(window.ends[slot]) - int(window.sizes[slot]))
        filled, length = 0, len(row)
        tokens = self._files[c][f].tokens
        while filled < length:
            if slot == len(window.sizes):
                f, w = self._next_window(c, f, w)
                window = self._windows([(c, e, f, w)])[0]
                tokens = self._files[c][f].tokens
                slot = 0
                continue
            size = int(window.sizes[slot])
            take = min(size - skip, length - filled)
            if take > 0:
                source = int(window.sources[slot]) + skip
                row[filled : filled + take] = tokens[source : source + take]
                if starts is not None and skip == 0:
                    starts[filled] = True
                filled += take
            slot, skip = slot + 1, 0

    def _check_vocab(self, out: np.ndarray, numbers: np.ndarray, corpus: np.ndarray) -> None:
        if self.vocab_size is None or out.size == 0 or int(out.max()) < self.vocab_size:
            return
        row = int(np.argmax(out.max(axis=1) >= self.vocab_size))
        name = self.mixture.corpora[int(corpus[row])].name
        raise ScifmError(
            f"sample {int(numbers[row])} of corpus {name!r} holds token id {int(out[row].max())}"
            f" >= the model's vocabulary {self.vocab_size}: the corpus was tokenized with "
            "another tokenizer; re-tokenize it or fix model.vocab_size"
        )

    # ---- accounting and validation data ---------------------------------------------------------

    def epochs_seen(self, consumed_samples: int) -> np.ndarray:
        """Fractional epochs of each corpus consumed by the first `consumed_samples` samples."""
        return self.tree.counts(consumed_samples) / self.samples_per_epoch

    def heldout_tokens(self, corpus: int) -> np.ndarray:
        """The held-out documents of a corpus, concatenated (empty without valid_fraction)."""
        parts = []
        for token_file, train in zip(self._files[corpus], self._train_docs[corpus], strict=True):
            start = token_file.token_start(train)
            parts.append(np.asarray(token_file.tokens[start : token_file.meta.num_tokens]))
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
