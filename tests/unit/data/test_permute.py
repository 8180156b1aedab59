"""Keyed permutations and window orders: bijections, key-dependent, reproducible."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scifm.data.permute import WindowShuffle, derive_key, keyed_permutation


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), key=st.integers(0, 2**64 - 1))
def test_keyed_permutation_is_a_bijection_of_the_domain(n: int, key: int) -> None:
    image = keyed_permutation(np.arange(n), n, key)
    assert np.array_equal(np.sort(image), np.arange(n))


def test_permutation_depends_on_the_key_and_is_reproducible() -> None:
    n = 10_000
    a = keyed_permutation(np.arange(n), n, 1)
    assert np.array_equal(a, keyed_permutation(np.arange(n), n, 1))
    b = keyed_permutation(np.arange(n), n, 2)
    assert np.mean(a == b) < 0.01
    assert np.mean(a == np.arange(n)) < 0.01  # not the identity
    # a shuffle, not a shift: neighbours are scattered
    assert np.median(np.abs(np.diff(a))) > n / 10


def test_single_positions_agree_with_the_whole_permutation() -> None:
    whole = keyed_permutation(np.arange(777), 777, 99)
    for x in (0, 1, 500, 776):
        assert int(keyed_permutation(x, 777, 99)[0]) == whole[x]


def test_derive_key_mixes_every_part_in_order() -> None:
    assert derive_key(1, 2, 3) == derive_key(1, 2, 3)
    assert (
        len({derive_key(1, 2, 3), derive_key(1, 3, 2), derive_key(2, 1, 3), derive_key(1, 2)}) == 4
    )


def test_window_orders_are_permutations_varying_with_the_key() -> None:
    shuffle = WindowShuffle(64, seed=5)
    keys = np.array([derive_key(5, k) for k in range(200)], dtype=np.uint64)
    orders = shuffle.orders(keys)
    assert orders.shape == (200, 64)
    assert all(np.array_equal(np.sort(row), np.arange(64)) for row in orders)
    assert len({row.tobytes() for row in orders}) == 200
    assert np.array_equal(orders, WindowShuffle(64, seed=5).orders(keys))
    assert not np.array_equal(orders, WindowShuffle(64, seed=6).orders(keys))


def test_window_of_one_keeps_the_order() -> None:
    assert np.array_equal(
        WindowShuffle(1, 0).orders(np.arange(3, dtype=np.uint64)), np.zeros((3, 1))
    )
