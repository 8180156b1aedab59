"""Closed-form interleave of corpora by weight: global sample n -> (corpus, index in corpus).

Megatron builds a `blending_indices` array (one entry per training sample, 490M entries for
AuroraGPT's 2T run) with a greedy loop. Here the assignment is a function of n alone.

Two corpora with shares p and 1 - p: of the first m samples, L(m) = floor(m * p + 1/2) go
to the first, so sample m goes there when L(m + 1) > L(m), as its L(m)-th sample; the
count never strays more than 1/2 from m * p. Many corpora: a Huffman tree over the weights
(the two lightest subtrees merged first), each internal node splitting its arrivals that
way. A sample walks from the root to a leaf in O(depth) vectorised steps; its index at the
leaf is its index within the corpus.

The error of a corpus after any prefix is at most 1/2 * sum over its path of W_leaf / W_node
(each split rounds by at most 1/2, and a parent's error reaches a child scaled by the
child's share), so the error of any run of samples, such as a global batch, is at most that
sum. The tree shape is chosen to minimise the largest such bound over the corpora: the
Huffman tree and top-down splits (balanced halves, lightest or heaviest corpus alone) are
compared and the best kept. `WeightTree.bound` reports it. The bound assumes every rounding
goes the worst way at once; measured, a Dolma-like 14-corpus mixture stays within 1.1 samples
in every prefix and 1.4 in every global batch of 768 (Megatron's greedy: ~1.3). A search over
2,000 generated mixtures in which every corpus has at least one sample per global batch found
at most 1.86; corpora rarer than that can reach ~2.2 in a batch, because the roundings of
the splits above a corpus add up along its path (Megatron's sequential greedy stays below 1).
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
