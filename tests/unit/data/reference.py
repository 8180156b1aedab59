"""A straightforward, fully materialised model of the blended sampler, for the tests.

Everything the sampler computes on demand is built here as whole arrays, the way a
Megatron-style pipeline does: the blending index by walking every sample, each corpus's
shuffled document stream per epoch, each epoch's full sample permutation. The tokens are
read with the plain .bin/.idx reader of `scifm.tokens.format`, not the sampler's maps.
Only the keyed primitives (permutations, window orders, the blend's choice of corpus) are
shared; their own properties are tested separately.
"""

from __future__ import annotations

import numpy as np

from scifm.data.permute import WindowShuffle, derive_key, keyed_permutation
from scifm.data.sampler import SAMPLE_TAG, WINDOW_TAG, BlendedSampler
from scifm.tokens.format import IndexedTokens


def _train_docs(files: list[IndexedTokens], valid_fraction: float) -> list[int]:
    sizes = np.concatenate([np.asarray(f.sizes, np.int64) for f in files])
    keep = len(sizes)
    if valid_fraction > 0:
        starts = np.cumsum(sizes) - sizes
        cut = int(sizes.sum() * (1 - valid_fraction))
        keep = min(int(np.searchsorted(starts, cut, side="left")), len(sizes) - 1)
    out, before = [], 0
    for f in files:
        out.append(int(np.clip(keep - before, 0, len(f))))
        before += len(f)
    return out


class ReferenceSampler:
    def __init__(self, prefixes: list[list[str]], weights, seq_len: int, seed: int,
                 window: int, valid_fraction: float = 0.0) -> None:  # fmt: skip
        self.files = [[IndexedTokens(p) for p in corpus] for corpus in prefixes]
        self.train = [_train_docs(files, valid_fraction) for files in self.files]
        self.seq_len, self.seed, self.window = seq_len, seed, window
        self.shuffle = WindowShuffle(window, seed)
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.epoch_size = [(len(self.stream(c, 0)) - 1) // seq_len for c in range(len(prefixes))]

    def stream(self, c: int, epoch: int) -> np.ndarray:
        """Corpus c's training documents, shuffled within windows for `epoch`, concatenated."""
        parts = []
        for f, (tokens, docs) in enumerate(zip(self.files[c], self.train[c], strict=True)):
            for w in range(-(-docs // self.window)):
                key = derive_key(self.seed, WINDOW_TAG, c, epoch, f, w)
                for slot in self.shuffle.orders(np.array([key], np.uint64))[0]:
                    doc = w * self.window + int(slot)
                    if doc < docs:
                        parts.append(np.asarray(tokens[doc], dtype=np.int64))
        return np.concatenate(parts)

    def samples(self, sampler: BlendedSampler, count: int) -> np.ndarray:
        """Samples 0 .. count-1: blend index by walking, full permutations, sliced streams."""
        corpus = sampler.blend.corpus_of(np.arange(count))
        seen = np.zeros(len(self.files), dtype=np.int64)
        out = []
        for n in range(count):
            c = int(corpus[n])
            epoch, j = divmod(int(seen[c]), self.epoch_size[c])
            seen[c] += 1
            key = derive_key(self.seed, SAMPLE_TAG, c, epoch)
            order = keyed_permutation(np.arange(self.epoch_size[c]), self.epoch_size[c], key)
            k = int(order[j])
            out.append(self.stream(c, epoch)[k * self.seq_len : (k + 1) * self.seq_len + 1])
        return np.stack(out)
