"""rbmsearch.noise: the hashed 16-bit uniforms the Gibbs chains use are uniform, independent
across positions and seeds, reproducible, and sample Bernoulli units at the right rate."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rbmsearch.noise import uniform16

N = 400_000


def draw(shape, seed=(3, 4)) -> np.ndarray:
    return uniform16(tf.constant(shape), tf.constant(seed, tf.int64)).numpy()


def test_shape_range_resolution_and_reproducibility():
    u = draw([3, 5, 7])  # an odd count: the last word's second half is dropped
    assert u.shape == (3, 5, 7) and u.dtype == np.float32
    assert np.array_equal(u, draw([3, 5, 7])) and not np.array_equal(u, draw([3, 5, 7], seed=(3, 5)))
    big = draw([N]).astype(np.float64)
    assert big.min() > 0 and big.max() < 1
    levels = big * 65536 - 0.5
    assert np.array_equal(levels, np.round(levels))  # the midpoints (k + 1/2) / 2^16
    assert len(np.unique(levels)) > 0.99 * 65536 * (1 - np.exp(-N / 65536))  # nearly every level that N draws should reach


def test_uniform_in_distribution_and_in_every_bit():
    u = draw([N])
    counts = np.bincount((u * 64).astype(int), minlength=64)
    expected = N / 64
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 63 + 6 * np.sqrt(2 * 63), chi2  # df 63: mean 63, sd 11.2
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    k = (u * 65536).astype(np.int64)
    for bit in range(16):
        assert abs(((k >> bit) & 1).mean() - 0.5) < 0.005, bit


def test_no_correlation_between_neighbours_or_between_seeds():
    u = draw([N]).astype(np.float64) - 0.5
    for lag in (1, 2, 3, 64, 150):  # 1: the two halves of a word; 2: neighbouring words; rows of 64 and 150
        r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
        assert abs(r) < 0.01, (lag, r)
    for other in ((3, 5), (4, 4), (3 + 2**32, 4)):  # one bit of either word of the seed, and its high half
        r = np.corrcoef(u, draw([N], seed=other).astype(np.float64) - 0.5)[0, 1]
        assert abs(r) < 0.01, (other, r)


def test_bernoulli_units_are_on_at_their_probability():
    u = draw([N])
    for p in (0.003, 0.1, 0.5, 0.97):
        rate = (u < p).mean()
        assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / N) + 2**-17, (p, rate)
    assert not (u < 0.0).any() and (u < 1.0).all()
