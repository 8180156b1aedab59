"""The implicit blended sampler: global sample n -> its tokens, computed on demand.

Nothing is built at start-up and nothing is written: every index Megatron stores on disk
(blending index, per-corpus shuffle and sample index) is a pure function of n here.

    n --BatchBlend--> (corpus c, i-th sample of c)          weights apportioned per global batch
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

import bisect
from collections import OrderedDict

import numpy as np

from scifm.core.errors import ScifmError
from scifm.data.blend import BatchBlend
from scifm.data.files import TokenFile
from scifm.data.mixture import DataConfig, Mixture, open_mixture
from scifm.data.permute import WindowShuffle, derive_keys, keyed_permutation

SAMPLE_TAG = 0x53414D50  # key domains, so sample and window shuffles never share keys
WINDOW_TAG = 0x57494E44
WindowKey = tuple[int, int, int, int]  # corpus, epoch, file, window
RELEASE_SAMPLES = 2048


class _WindowSlab:
    """LRU cache of materialised windows, one row per window in three [capacity, W] arrays.

    Row r holds, per slot of the shuffled window: the document's size, its first token in
    its file, and the cumulative size (the window-relative end of the slot). Padding slots
    (past a file's last document) have size 0. Rows are reused least-recently-used first.
    """

    def __init__(self, capacity: int, width: int) -> None:
        self.sizes = np.zeros((capacity, width), dtype=np.int64)
        self.sources = np.zeros((capacity, width), dtype=np.int64)
        self.ends = np.zeros((capacity, width), dtype=np.int64)
        self.rows: OrderedDict[WindowKey, int] = OrderedDict()
        self.capacity = capacity
        self._never_used = list(range(capacity - 1, -1, -1))

    def lookup(self, keys: list[WindowKey]) -> tuple[np.ndarray, list[WindowKey]]:
        """Rows of the cached keys (-1 where missing) and the distinct missing keys."""
        rows = np.full(len(keys), -1, dtype=np.int64)
        missing: dict[WindowKey, None] = {}
        for i, key in enumerate(keys):
            row = self.rows.get(key)
            if row is None:
                missing[key] = None
            else:
                self.rows.move_to_end(key)
                rows[i] = row
        return rows, list(missing)

    def allocate(self, count: int, keep: set[int]) -> list[int]:
        """`count` free rows, evicting least-recently-used windows not in `keep`."""
        free = [self._never_used.pop() for _ in range(min(count, len(self._never_used)))]
        if len(free) < count:
            for key in list(self.rows):
                if len(free) == count:
                    break
                if self.rows[key] not in keep:
                    free.append(self.rows.pop(key))
        if len(free) < count:
            raise RuntimeError("window cache smaller than one batch of windows")
        return free


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
        blend_batch: int = 1,
    ) -> None:
        if seq_len <= 0:
            raise ScifmError(f"seq_len must be positive, got {seq_len}")
        self.mixture = mixture
        self.seq_len = seq_len
        self.seed = seed
        self.vocab_size = vocab_size
        self.window_docs = window_docs
        self.blend = BatchBlend(mixture.weights, blend_batch)
        self._shuffle = WindowShuffle(window_docs, seed)
        self._files = [[TokenFile(meta) for meta in c.files] for c in mixture.corpora]
        self._train_docs = [self._split(c, valid_fraction) for c in range(len(self._files))]
        self._starts = [self._stream_starts(c) for c in range(len(self._files))]
        self.samples_per_epoch = np.asarray([self._epoch_size(c) for c in range(len(self._files))])
        self._slab = _WindowSlab(max(cache_windows, 1), window_docs)
        self._read_since_release = 0
        self._touched: set[tuple[int, int]] = set()

    @classmethod
    def from_config(cls, cfg: DataConfig, vocab_size: int | None = None,
                    blend_batch: int = 1) -> BlendedSampler:  # fmt: skip
        """`blend_batch`: the global batch in samples, which the blend apportions exactly."""
        mixture = open_mixture(cfg.sources(), vocab_size)
        return cls(mixture, cfg.seq_len, cfg.seed, cfg.shuffle_window_docs,
                   cfg.valid_fraction, vocab_size, blend_batch=blend_batch)  # fmt: skip

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
                train[i] = doc
                train[i + 1 :] = [0] * (len(files) - i - 1)
                break
            start += token_file.meta.num_tokens
        if sum(train) == sum(f.meta.num_docs for f in files):  # hold out at least one document
            last = max(i for i, f in enumerate(files) if f.meta.num_docs)
            train[last] = files[last].meta.num_docs - 1
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
            held = self.mixture.corpora[corpus].num_tokens - tokens
            fix = "lower data.valid_fraction, " if held else ""
            raise ScifmError(
                f"corpus {name!r} has {tokens} training tokens ({held} held out), fewer than "
                f"one sample of seq_len + 1 = {self.seq_len + 1}; {fix}add data or lower "
                "data.seq_len"
            )
        return size

    @property
    def names(self) -> list[str]:
        return self.mixture.names

    # ---- global sample -> corpus position ---------------------------------------------------

    def corpus_of(self, n: np.ndarray | int) -> np.ndarray:
        return self.blend.corpus_of(n)

    def locate(self, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global samples -> (corpus, epoch, sample of the corpus stream) of each."""
        corpus, index = self.blend.route(n)
        per_epoch = self.samples_per_epoch[corpus]
        epoch, within = np.divmod(index, per_epoch)
        keys = derive_keys(self.seed, SAMPLE_TAG, corpus, epoch)
        return corpus, epoch, keyed_permutation(within, per_epoch, keys)

    # ---- shuffled windows ---------------------------------------------------------------------

    def _window_rows(self, keys: list[WindowKey]) -> np.ndarray:
        """Slab rows holding the windows `keys`, materialising the missing ones in bulk."""
        rows, missing = self._slab.lookup(keys)
        if missing:
            needed = len(missing) + len(set(rows[rows >= 0].tolist()))
            if needed > self._slab.capacity:  # a huge batch: grow rather than thrash
                self._slab = _WindowSlab(2 * needed, self.window_docs)
                rows, missing = self._slab.lookup(keys)
            fresh = self._slab.allocate(len(missing), keep=set(rows[rows >= 0].tolist()))
            self._materialise(missing, fresh)
            self._slab.rows.update(zip(missing, fresh, strict=True))
            where = dict(zip(missing, fresh, strict=True))
            rows = np.asarray([where.get(k, r) for k, r in zip(keys, rows.tolist(), strict=True)])
        return rows

    def _materialise(self, keys: list[WindowKey], rows: list[int]) -> None:
        width = self.window_docs
        sizes = np.zeros((len(keys), width), dtype=np.int64)
        bases = np.empty(len(keys), dtype=np.int64)
        for i, (c, _, f, w) in enumerate(keys):
            token_file = self._files[c][f]
            lo = w * width
            hi = min(lo + width, self._train_docs[c][f])
            sizes[i, : hi - lo] = token_file.sizes[lo:hi]
            bases[i] = token_file.window_starts(width, self._train_docs[c][f])[w]
        parts = np.asarray(keys, dtype=np.int64).T
        keys_u64 = derive_keys(self.seed, WINDOW_TAG, *parts)
        offsets = np.cumsum(sizes, axis=1) - sizes + bases[:, None]  # file token of each doc
        orders = self._shuffle.orders(keys_u64)
        shuffled = np.take_along_axis(sizes, orders, axis=1)
        slab = self._slab
        slab.sizes[rows] = shuffled
        slab.sources[rows] = np.take_along_axis(offsets, orders, axis=1)
        slab.ends[rows] = np.cumsum(shuffled, axis=1)

    def _next_key(self, key: WindowKey) -> WindowKey:
        c, e, f, w = key
        return (c, e, *self._next_window(c, f, w))

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

    def index(
        self, numbers: np.ndarray
    ) -> tuple[np.ndarray, list[WindowKey], np.ndarray, np.ndarray]:
        """Everything about samples `numbers` but their tokens: (corpus, window key, offset in
        the window, cache row) of each. This is the work Megatron precomputes and stores."""
        self._bound_resident_pages(len(numbers))
        corpus, epoch, sample = self.locate(numbers)
        keys, offsets = self._places(corpus, epoch, sample * self.seq_len)
        self._touched.update((c, f) for c, _, f, _ in keys)
        return corpus, keys, offsets, self._window_rows(keys)

    def samples(self, numbers: np.ndarray, doc_starts: bool = False):
        length = self.seq_len + 1
        out = np.empty((len(numbers), length), dtype=np.int64)
        starts = np.zeros((len(numbers), length), dtype=bool)
        corpus, keys, offsets, rows = self.index(numbers)
        ends = self._slab.ends[rows]
        first_slot = (ends <= offsets[:, None]).sum(axis=1)
        last_slot = (ends < (offsets + length)[:, None]).sum(axis=1)
        inside = last_slot < self.window_docs  # the sample ends inside its first window
        self._copy_inside(out, starts, keys, rows, offsets, first_slot, last_slot, inside)
        crossing = np.flatnonzero(~inside).tolist()
        following = [self._next_key(keys[i]) for i in crossing]
        self._window_rows([keys[i] for i in crossing] + following)  # materialised in bulk
        for i in crossing:
            self._fill_across(out[i], starts[i], keys[i], int(offsets[i]))
        self._check_vocab(out, numbers, corpus)
        return (out, starts) if doc_starts else out

    def _bound_resident_pages(self, samples: int) -> None:
        """Every RELEASE_SAMPLES samples, unmap the pages read (they stay in the page cache).

        Mapped file pages count as the process's resident memory; without this, a long run
        over terabytes of tokens would show the page cache it touched as its own RSS.
        """
        self._read_since_release += samples
        if self._read_since_release >= RELEASE_SAMPLES:
            for c, f in self._touched:
                self._files[c][f].release()
            self._touched.clear()
            self._read_since_release = 0

    def _places(self, corpus, epoch, positions) -> tuple[list[WindowKey], np.ndarray]:
        """Window key and token offset inside that window's stream, of each sample's start."""
        keys, offsets = [], np.empty(len(positions), dtype=np.int64)
        files_of = np.empty(len(positions), dtype=np.int64)
        for c in np.unique(corpus).tolist():
            rows = corpus == c
            files_of[rows] = np.searchsorted(self._starts[c], positions[rows], side="right") - 1
        for i, (c, e, f, position) in enumerate(
            zip(corpus.tolist(), epoch.tolist(), files_of.tolist(), positions.tolist(), strict=True)
        ):
            within = position - int(self._starts[c][f])
            bounds = self._files[c][f].window_starts(self.window_docs, self._train_docs[c][f])
            w = bisect.bisect_right(bounds, within) - 1
            keys.append((c, e, f, w))
            offsets[i] = within - bounds[w]
        return keys, offsets

    def _copy_inside(self, out, starts, keys, rows, offsets, first_slot, last_slot, inside):
        """Copy the samples that lie in one window: segments planned for all at once."""
        slab, width, length = self._slab, self.window_docs, out.shape[1]
        slots = np.arange(width)
        used = (slots >= first_slot[:, None]) & (slots <= last_slot[:, None]) & inside[:, None]
        used &= slab.sizes[rows] > 0
        sample, slot = np.nonzero(used)
        size = slab.sizes[rows[sample], slot]
        source = slab.sources[rows[sample], slot]
        begins = np.ones(len(sample), dtype=bool)
        begins[1:] = sample[1:] != sample[:-1]
        skip = np.where(begins, offsets[sample] - (slab.ends[rows[sample], slot] - size), 0)
        take = size - skip
        before = np.cumsum(take) - take
        first_of = np.maximum.accumulate(np.where(begins, np.arange(len(sample)), 0))
        dest = before - before[first_of]
        take = np.minimum(take, length - dest)
        starts[sample[skip == 0], dest[skip == 0]] = True
        flat = out.reshape(-1)
        tokens = [self._files[k[0]][k[2]].tokens for k in keys]
        targets = (sample * length + dest).tolist()
        for i, src, dst, n in zip(sample.tolist(), (source + skip).tolist(), targets,
                                  take.tolist(), strict=True):  # fmt: skip
            flat[dst : dst + n] = tokens[i][src : src + n]

    def _fill_across(self, row, starts, key: WindowKey, offset: int) -> None:
        """Copy one sample that runs past the end of its window (the uncommon, slow path)."""
        c, e, f, w = key
        slab_row = int(self._window_rows([key])[0])
        slot = int(np.searchsorted(self._slab.ends[slab_row], offset, side="right"))
        skip = offset - int(self._slab.ends[slab_row, slot] - self._slab.sizes[slab_row, slot])
        filled, length = 0, len(row)
        tokens = self._files[c][f].tokens
        while filled < length:
            if slot == self.window_docs:
                f, w = self._next_window(c, f, w)
                self._touched.add((c, f))
                slab_row = int(self._window_rows([(c, e, f, w)])[0])
                tokens = self._files[c][f].tokens
                slot = 0
                continue
            size = int(self._slab.sizes[slab_row, slot])
            take = min(size - skip, length - filled)
            if take > 0:
                source = int(self._slab.sources[slab_row, slot]) + skip
                row[filled : filled + take] = tokens[source : source + take]
                starts[filled] = skip == 0
                filled += take
            slot, skip = slot + 1, 0

    def _check_vocab(self, out: np.ndarray, numbers: np.ndarray, corpus: np.ndarray) -> None:
        if out.size and int(out.min()) < 0:
            row = int(np.argmax(out.min(axis=1) < 0))
            name = self.mixture.corpora[int(corpus[row])].name
            raise ScifmError(
                f"sample {int(numbers[row])} of corpus {name!r} holds a negative token id "
                f"{int(out[row].min())}: the token files are corrupt; re-run `scifm tokenize`"
            )
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
        return self.blend.counts(consumed_samples) / self.samples_per_epoch

    def heldout_tokens(self, corpus: int) -> np.ndarray:
        """The held-out documents of a corpus, concatenated (empty without valid_fraction)."""
        parts = []
        for token_file, train in zip(self._files[corpus], self._train_docs[corpus], strict=True):
            start = token_file.token_start(train)
            parts.append(np.asarray(token_file.tokens[start : token_file.meta.num_tokens]))
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def heldout_samples(self, corpus: int, limit: int | None = None) -> np.ndarray:
        """Held-out documents packed like training samples, in order: int64 [k, seq_len + 1]."""
        tokens = self.heldout_tokens(corpus)
        count = max(0, (len(tokens) - 1) // self.seq_len)
        count = count if limit is None else min(count, limit)
        rows = np.arange(count)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        return tokens[rows]
