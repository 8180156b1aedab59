"""Closed-form interleave of corpora by weight: global sample n -> (corpus, index in corpus).

Megatron builds a `blending_indices` array (one entry per training sample, 490M entries for
AuroraGPT's 2T run) with a greedy loop. Here the assignment is a function of n alone, in two
pieces:

`BatchBlend` (what the sampler uses) apportions each global batch of B samples exactly:
unit u gets T_u(b+1) - T_u(b) samples of batch b, where T_u(b), the unit's share of the
first b*B samples, is the largest-remainder rounding of b*B*w_u (or, with rare corpora,
floor(b*B*S_u + 1/2) - floor(b*B*S_{u-1} + 1/2) over the cumulative weights S). Every
T_u(b) is within one sample of b*B*w_u, so every global batch is within two samples of
B*w_u by construction; inside a batch, samples go by largest deficit (Megatron's greedy,
bounded to the batch's quotas). Corpora with fewer than one sample per batch share one
unit, split by a `WeightTree`.

`WeightTree`: two corpora with shares p and 1 - p: of the first m samples, L(m) =
floor(m * p + 1/2) go to the first, so sample m goes there when L(m + 1) > L(m), as its
L(m)-th sample; the count never strays more than 1/2 from m * p. Many corpora: a binary
tree over the weights, each internal node splitting its arrivals that way. A sample walks
from the root to a leaf in O(depth) vectorised steps; its index at the leaf is its index
within the corpus.

The error of a corpus after any prefix is at most 1/2 * sum over its path of W_leaf / W_node
(each split rounds by at most 1/2, and a parent's error reaches a child scaled by the
child's share), so the error of any run of samples, such as a global batch, is at most that
sum. The tree shape is chosen to minimise the largest such bound over the corpora: the
Huffman tree and top-down splits (balanced halves, lightest or heaviest corpus alone) are
compared and the best kept. `WeightTree.bound` reports it. The bound assumes every rounding
goes the worst way at once; measured, a Dolma-like 14-corpus mixture stays within 1.1 samples
in every prefix and 1.4 in every global batch of 768, but contrived mixtures reach ~2.2,
which is why the sampler apportions whole batches with `BatchBlend` first.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np

Tree: TypeAlias = "int | tuple[Tree, Tree]"
"""A leaf is a corpus index; an internal node is (heavier-or-equal side, other side)."""


def _weight(tree: Tree, w: np.ndarray) -> float:
    return float(w[tree]) if isinstance(tree, int) else _weight(tree[0], w) + _weight(tree[1], w)


def tree_bound(tree: Tree, w: np.ndarray) -> float:
    """max over corpora of sum over the path (leaf included, root excluded) of W_leaf / W_node."""
    worst = 0.0

    def walk(node: Tree, inverse_weights: float) -> None:
        nonlocal worst
        if isinstance(node, int):
            worst = max(worst, 1.0 + float(w[node]) * inverse_weights)
            return
        for child in node:
            below = 0.0 if isinstance(child, int) else 1.0 / _weight(child, w)
            walk(child, inverse_weights + below)

    walk(tree, 0.0)
    return worst


def huffman_tree(leaves: Sequence[int], w: np.ndarray) -> Tree:
    """Merge the two lightest subtrees until one remains (ties broken by creation order)."""
    heap: list[tuple[float, int, Tree]] = [(float(w[i]), i, i) for i in leaves]
    heapq.heapify(heap)
    order = len(w)
    while len(heap) > 1:
        w_a, _, a = heapq.heappop(heap)
        w_b, _, b = heapq.heappop(heap)
        heapq.heappush(heap, (w_a + w_b, order, (b, a)))
        order += 1
    return heap[0][2]


def _candidate_splits(leaves: list[int], w: np.ndarray) -> list[tuple[list[int], list[int]]]:
    ranked = sorted(leaves, key=lambda i: (-w[i], i))
    halves: tuple[list[int], list[int]] = ([], [])
    for i in ranked:  # greedy number partition: each corpus into the lighter half
        lighter = 0 if sum(w[j] for j in halves[0]) <= sum(w[j] for j in halves[1]) else 1
        halves[lighter].append(i)
    splits = [([ranked[0]], ranked[1:]), ([ranked[-1]], ranked[:-1])]
    if halves[0] and halves[1]:
        splits.append((sorted(halves[0]), sorted(halves[1])))
    return splits


def split_tree(leaves: list[int], w: np.ndarray) -> Tree:
    """Top-down: at each node keep the split whose Huffman-completed subtrees bound best."""
    if len(leaves) == 1:
        return leaves[0]

    def score(split: tuple[list[int], list[int]]) -> float:
        return tree_bound((huffman_tree(split[0], w), huffman_tree(split[1], w)), w)

    left, right = min(_candidate_splits(leaves, w), key=score)
    return (split_tree(left, w), split_tree(right, w))


def best_tree(w: np.ndarray) -> Tree:
    leaves = list(range(len(w)))
    candidates = [huffman_tree(leaves, w), split_tree(leaves, w)]
    return min(candidates, key=lambda tree: tree_bound(tree, w))


MAX_SAMPLE = 1 << 53
"""Routing uses float64 arithmetic, exact for sample numbers below 2**53."""


class WeightTree:
    """Routes global sample numbers to (corpus, index within corpus), in closed form."""

    def __init__(self, weights: Sequence[float]) -> None:
        shares = np.asarray(weights, dtype=np.float64)
        if shares.ndim != 1 or len(shares) == 0 or not np.all(shares > 0):
            raise ValueError("weights must be a non-empty list of positive numbers")
        shares = shares / shares.sum()
        self.weights = shares
        self.tree = best_tree(shares)
        self.bound = tree_bound(self.tree, shares)
        """Largest error of any corpus over any run of samples (half of it for prefixes)."""
        self.left: list[int] = [-1] * len(shares)
        self.right: list[int] = [-1] * len(shares)
        self.share_left: list[float] = [0.0] * len(shares)
        self.root = self._flatten(self.tree)
        self._left = np.asarray(self.left, dtype=np.int64)
        self._right = np.asarray(self.right, dtype=np.int64)
        self._share = np.asarray(self.share_left, dtype=np.float64)

    def _flatten(self, tree: Tree) -> int:
        """Leaves are nodes 0..K-1 (the corpora); internal nodes are numbered after them."""
        if isinstance(tree, int):
            return tree
        left, right = self._flatten(tree[0]), self._flatten(tree[1])
        w_left, w_right = _weight(tree[0], self.weights), _weight(tree[1], self.weights)
        self.left.append(left)
        self.right.append(right)
        self.share_left.append(w_left / (w_left + w_right))
        return len(self.left) - 1

    @property
    def num_corpora(self) -> int:
        return len(self.weights)

    def route(self, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Global sample numbers -> (corpus of each, its index among that corpus's samples)."""
        index = np.atleast_1d(np.asarray(n, dtype=np.int64)).copy()
        if index.size and (index.min() < 0 or index.max() >= MAX_SAMPLE):
            raise ValueError(
                f"sample numbers must lie in [0, 2**53), got {index.min()}..{index.max()}"
            )
        node = np.full(index.shape, self.root, dtype=np.int64)
        internal = self._left[node] >= 0
        while internal.any():
            at, m = node[internal], index[internal]
            share = self._share[at]
            before = np.floor(m * share + 0.5).astype(np.int64)
            goes_left = np.floor((m + 1) * share + 0.5).astype(np.int64) > before
            index[internal] = np.where(goes_left, before, m - before)
            node[internal] = np.where(goes_left, self._left[at], self._right[at])
            internal = self._left[node] >= 0
        return node, index

    def corpus_of(self, n: np.ndarray | int) -> np.ndarray:
        return self.route(n)[0]

    def counts(self, stop: int) -> np.ndarray:
        """Samples of each corpus among global samples [0, stop), without visiting them."""
        counts = np.zeros(self.num_corpora, dtype=np.int64)
        self._count(self.root, stop, counts)
        return counts

    def _count(self, node: int, arrivals: int, counts: np.ndarray) -> None:
        if self.left[node] < 0:
            counts[node] = arrivals
            return
        to_left = int(np.floor(arrivals * self.share_left[node] + 0.5))
        self._count(self.left[node], to_left, counts)
        self._count(self.right[node], arrivals - to_left, counts)


REGULAR_SAMPLES = 1.01
"""Corpora with fewer samples than this per global batch share the rare unit (1 plus a
margin, so float rounding can never make a batch's quota negative)."""


class BatchBlend:
    """Global batches apportioned exactly, samples inside a batch ordered by deficit.

    Global batch b (samples [b*B, (b+1)*B)) gives unit u the count T_u(b+1) - T_u(b), where
    T_u(b) = floor(b*B*S_u + 1/2) - floor(b*B*S_{u-1} + 1/2) and S_u are the cumulative
    weights: the counts sum to B, and T_u(b) is within one sample of b*B*w_u at every batch
    boundary, so every global batch is within 2 samples of B*w_u (exactly, no tree rounding).
    The counts are non-negative when B*w_u >= 1; corpora rarer than one sample per batch
    form one unit placed first (where the count cannot go negative) and share its samples
    through a `WeightTree`. Inside a batch, each position goes to the unit with the largest
    deficit w_u*(n+1) - count_u among those with quota left (Megatron's greedy, bounded to
    the batch), computed when the batch is first asked for and cached.

    With B = 1 every corpus is "rare" and this is the `WeightTree` alone.
    """

    def __init__(self, weights: Sequence[float], batch: int, cache_batches: int = 64) -> None:
        shares = np.asarray(weights, dtype=np.float64)
        if shares.ndim != 1 or len(shares) == 0 or not np.all(shares > 0):
            raise ValueError("weights must be a non-empty list of positive numbers")
        if batch < 1:
            raise ValueError(f"global batch must be positive, got {batch}")
        self.weights = shares / shares.sum()
        self.batch = batch
        self.rare = [c for c, w in enumerate(self.weights) if w * batch < REGULAR_SAMPLES]
        regular = [c for c in range(len(self.weights)) if c not in self.rare]
        self.units: list[list[int]] = ([self.rare] if self.rare else []) + [[c] for c in regular]
        self.unit_weights = [float(self.weights[u].sum()) for u in self.units]
        self._cumulative = np.concatenate([[0.0], np.cumsum(self.unit_weights)])
        self._cumulative[-1] = 1.0
        self.rare_tree = WeightTree(self.weights[self.rare]) if self.rare else None
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_batches = cache_batches

    @property
    def num_corpora(self) -> int:
        return len(self.weights)

    def _boundary(self, b: int) -> np.ndarray:
        """Samples of each unit among the first b global batches, each within one of ideal.

        Without rare corpora: largest remainders (Hamilton), the closest rounding, which
        never decreases from one batch to the next when every unit has >= 1 sample per batch.
        With them: telescoped roundings of the cumulative weights, the rare unit first.
        """
        total = b * self.batch
        if self.rare:
            rounded = np.floor(total * self._cumulative + 0.5).astype(np.int64)
            return np.diff(rounded)
        quotas = total * np.asarray(self.unit_weights)
        counts = np.floor(quotas).astype(np.int64)
        remainder = total - int(counts.sum())
        by_fraction = np.argsort(-(quotas - counts), kind="stable")
        counts[by_fraction[:remainder]] += 1
        return counts

    def _order(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit of each position of global batch b, and its index among the unit's samples."""
        if b in self._cache:
            return self._cache[b]
        counts, end = self._boundary(b).tolist(), self._boundary(b + 1).tolist()
        if any(e < c for c, e in zip(counts, end, strict=True)):  # excluded by construction
            raise RuntimeError(f"negative quota in global batch {b}: {counts} -> {end}")
        weights, first = self.unit_weights, b * self.batch
        unit_of = np.empty(self.batch, dtype=np.int64)
        index = np.empty(self.batch, dtype=np.int64)
        for r in range(self.batch):
            ahead = first + r + 1
            best, best_deficit = -1, -np.inf
            for u, weight in enumerate(weights):
                if counts[u] < end[u] and weight * ahead - counts[u] > best_deficit:
                    best, best_deficit = u, weight * ahead - counts[u]
            unit_of[r], index[r] = best, counts[best]
            counts[best] += 1
        if len(self._cache) >= self._cache_batches:
            self._cache.pop(next(iter(self._cache)))
        self._cache[b] = (unit_of, index)
        return unit_of, index

    def route(self, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Global sample numbers -> (corpus of each, its index among that corpus's samples)."""
        numbers = np.atleast_1d(np.asarray(n, dtype=np.int64))
        if numbers.size and (numbers.min() < 0 or numbers.max() >= MAX_SAMPLE):
            raise ValueError("sample numbers must lie in [0, 2**53)")
        blocks, within = np.divmod(numbers, self.batch)
        unit = np.empty_like(numbers)
        index = np.empty_like(numbers)
        for b in np.unique(blocks).tolist():
            rows = blocks == b
            order_unit, order_index = self._order(b)
            unit[rows], index[rows] = order_unit[within[rows]], order_index[within[rows]]
        corpus = np.asarray([u[0] for u in self.units])[unit]
        if self.rare_tree is not None:
            rows = unit == 0
            local, index[rows] = self.rare_tree.route(index[rows])
            corpus[rows] = np.asarray(self.rare)[local]
        return corpus, index

    def corpus_of(self, n: np.ndarray | int) -> np.ndarray:
        return self.route(n)[0]

    def counts(self, stop: int) -> np.ndarray:
        """Samples of each corpus among global samples [0, stop)."""
        b, r = divmod(stop, self.batch)
        per_unit = self._boundary(b)
        if r:
            per_unit = per_unit + np.bincount(self._order(b)[0][:r], minlength=len(self.units))
        counts = np.zeros(self.num_corpora, dtype=np.int64)
        for u, members in enumerate(self.units):
            if self.rare_tree is not None and u == 0:
                counts[self.rare] = self.rare_tree.counts(int(per_unit[0]))
            else:
                counts[members[0]] = per_unit[u]
        return counts
