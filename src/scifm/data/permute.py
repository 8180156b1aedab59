"""Keyed pseudorandom permutations: shuffles that are computed, never stored.

A Megatron-style pipeline shuffles with `np.random.permutation` and writes the result to
disk, which costs seconds per 1e8 items and gigabytes of index files. Here every shuffle is
a pure function of (key, position):

- `keyed_permutation(x, n, key)`: position x in [0, n) -> its shuffled position, a bijection
  on [0, n) built from a 4-round Feistel network on the smallest even-bit power of two
  >= n, with cycle walking back into [0, n). O(1) per element, vectorised over arrays.
- `WindowShuffle`: the order of the documents inside one window of `W` (a power of two)
  documents, chosen by key among compositions of a few hundred random permutations drawn
  once from the seed; a whole batch of windows is one fancy-indexing operation.

Keys come from `derive_key(*parts)` (splitmix64 over integers), so the shuffle of corpus c
in epoch e is the same on every rank, process and run.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
FEISTEL_ROUNDS = 4
_U_GOLDEN, _U_MIX1, _U_MIX2 = np.uint64(_GOLDEN), np.uint64(_MIX1), np.uint64(_MIX2)
_U27, _U30, _U31 = np.uint64(27), np.uint64(30), np.uint64(31)


def _mix_int(x: int) -> int:
    """splitmix64's finaliser on one Python integer (mod 2**64)."""
    x = (x + _GOLDEN) & MASK64
    x = ((x ^ (x >> 30)) * _MIX1) & MASK64
    x = ((x ^ (x >> 27)) * _MIX2) & MASK64
    return x ^ (x >> 31)


def derive_key(*parts: int) -> int:
    """A 64-bit key from integers (seed, corpus, epoch, ...): order matters, all bits mix."""
    key = 0
    for part in parts:
        key = _mix_int(key ^ (int(part) & MASK64))
    return key


def derive_keys(*parts: np.ndarray | int) -> np.ndarray:
    """`derive_key` element-wise over arrays of parts (broadcast), as uint64."""
    key = np.zeros(np.broadcast(*[np.asarray(p) for p in parts]).shape, dtype=np.uint64)
    for part in parts:
        key = mix64(key ^ np.asarray(part).astype(np.uint64))
    return key


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 arrays (wrapping arithmetic).

    Arrays wrap silently; a 0-d input is promoted to 1-d so numpy never takes the scalar
    path, which warns on overflow.
    """
    x = np.atleast_1d(x) + _U_GOLDEN
    x = (x ^ (x >> _U30)) * _U_MIX1
    x = (x ^ (x >> _U27)) * _U_MIX2
    return x ^ (x >> _U31)


def _half_bits(n: np.ndarray) -> np.ndarray:
    """Bits of each Feistel half: the smallest k with 4**k >= n (at least 1), element-wise."""
    bits = np.ceil(np.log2(np.maximum(n, 2))).astype(np.int64)
    bits += (np.left_shift(1, bits) < n).astype(np.int64)  # guard float rounding of log2
    return np.maximum(1, (bits + 1) // 2)


def _feistel(x: np.ndarray, half: np.ndarray, round_keys: list[np.ndarray]) -> np.ndarray:
    mask = (np.uint64(1) << half) - np.uint64(1)
    left, right = x >> half, x & mask
    for key in round_keys:
        left, right = right, left ^ (mix64(right ^ key) & mask)
    return (left << half) | right


def keyed_permutation(
    x: np.ndarray | int, n: np.ndarray | int, key: np.ndarray | int
) -> np.ndarray:
    """The image of positions `x` (each in [0, n)) under the permutation of [0, n) for `key`.

    `n` and `key` may be arrays (one per element of x): many permutations in one pass.
    """
    values = np.atleast_1d(np.asarray(x, dtype=np.int64))
    sizes = np.broadcast_to(np.asarray(n, dtype=np.int64), values.shape)
    if values.size == 0:
        return values.copy()
    if sizes.min() <= 0:
        raise ValueError("permutation domains must be positive")
    if values.min() < 0 or np.any(values >= sizes):
        raise ValueError("positions must lie in [0, n)")
    keys = np.broadcast_to(np.asarray(key, dtype=np.uint64), values.shape)
    half = _half_bits(sizes).astype(np.uint64)
    round_keys = [derive_keys(keys, r) for r in range(FEISTEL_ROUNDS)]
    limit = sizes.astype(np.uint64)
    out = _feistel(values.astype(np.uint64), half, round_keys)
    outside = np.flatnonzero(out >= limit)
    while outside.size:  # cycle walking: a few rounds at most, since 4**half < 4n
        out[outside] = _feistel(out[outside], half[outside], [k[outside] for k in round_keys])
        outside = outside[out[outside] >= limit[outside]]
    return out.astype(np.int64)


class WindowShuffle:
    """Orders of `window` documents (a power of two) keyed per window, computed in bulk.

    The order of a window with key k is T[a][T[b][i] ^ x] for table rows a, b and mask x
    drawn from k: `tables` random permutations give tables**2 * window distinct orders.
    `window == 1` means no shuffling.
    """

    def __init__(self, window: int, seed: int, tables: int = 256) -> None:
        if window < 1 or window & (window - 1):
            raise ValueError(f"shuffle window must be a power of two, got {window}")
        self.window = window
        self._num_tables = tables
        rng = np.random.default_rng([derive_key(seed, 0x77696E), window])
        keys = rng.random((tables, window))
        self._tables = np.argsort(keys, axis=1, kind="stable").astype(np.int32)

    def orders(self, keys: np.ndarray) -> np.ndarray:
        """int32 [len(keys), window]: row r is the document order of the window keyed keys[r]."""
        keys = np.asarray(keys, dtype=np.uint64)
        if self.window == 1:
            return np.zeros((len(keys), 1), dtype=np.int32)
        mixed = mix64(keys)
        tables = np.uint64(self._num_tables)
        first = (mixed % tables).astype(np.int64)
        second = ((mixed >> np.uint64(20)) % tables).astype(np.int64)
        flip = ((mixed >> np.uint64(40)) % np.uint64(self.window)).astype(np.int32)
        inner = self._tables[second] ^ flip[:, None]
        return np.take_along_axis(self._tables[first], inner, axis=1)
