"""rbmsearch.noise: the hashed 16-bit uniforms the Gibbs chains use are uniform, independent
across positions and seeds, reproducible, and sample Bernoulli units at the right rate; their
logistic transform samples the same units without a sigmoid; the pool's tables depend on the
step's seed alone, and a step never reads a row twice."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from rbmsearch.noise import NoisePool, logistic16, uniform16

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


def test_slices_of_a_draw_concatenate_to_the_whole_draw():
    seed = tf.constant([3, 4], tf.int64)
    whole = uniform16(tf.constant([10, 7]), seed).numpy()  # an odd width: slices start at even rows
    for cuts in ((0, 4, 6, 10), (0, 3, 5, 10)):  # even starts, and odd ones (21, 35) in the middle of a word
        parts = [uniform16(tf.constant([hi - lo, 7]), seed, lo * 7).numpy() for lo, hi in zip(cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    # The logarithms of a slice may round a last bit apart from the whole's (vector and scalar code paths).
    np.testing.assert_allclose(logistic16(tf.constant([6, 7]), seed, 28).numpy(), logistic16(tf.constant([10, 7]), seed).numpy()[4:], rtol=1e-6)


def test_the_compiled_hash_draws_the_same_numbers():
    """The pool hashes with XLA (`compiled=True`): the same numbers bit for bit, at any shape and
    start (odd starts skip half a word), eagerly and inside a compiled graph with dynamic shapes."""
    seed = tf.constant([-7, 2**40 + 3], tf.int64)
    in_graph = tf.function(lambda rows, width, start: logistic16(tf.stack([rows, width]), seed, start, compiled=True))
    for rows, width, start in ((1, 1, 0), (15, 7, 1), (64, 150, 12345), (1000, 88, 2**31 + 1)):
        plain = logistic16(tf.constant([rows, width]), seed, start).numpy()
        assert np.array_equal(logistic16(tf.constant([rows, width]), seed, start, compiled=True).numpy(), plain)
        assert np.array_equal(in_graph(tf.constant(rows), tf.constant(width), tf.constant(start, tf.int64)).numpy(), plain)


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


def test_logistic_noise_samples_exactly_the_units_the_uniforms_do():
    shape, seed = tf.constant([N]), tf.constant([3, 4], tf.int64)
    u, noise = uniform16(shape, seed).numpy(), logistic16(shape, seed).numpy()
    assert noise.dtype == np.float32 and np.isfinite(noise).all() and np.abs(noise).max() < 11.8
    np.testing.assert_allclose(noise, np.log(u / (1 - u.astype(np.float64))), rtol=1e-5, atol=1e-5)
    for x in (-4.0, -0.3, 0.0, 1.7):  # a pre-activation above the noise is a uniform below its sigmoid
        p = 1 / (1 + np.exp(-x))
        assert np.mean((x > noise) != (u < p)) < 1e-4, x  # they can differ only where float rounding decides
    assert abs(noise.mean()) < 0.02 and abs(noise.var() - np.pi**2 / 3) < 0.05  # the logistic distribution


def _windows(pool: NoisePool, seed, count: int, k: int) -> list[np.ndarray]:
    """The rows a step's chain of k steps on `count` rows reads, hidden and visible, in the chain's order."""
    hidden, visible, starts = pool.tables(tf.constant(seed, tf.int64), count, k)
    starts = starts.numpy()
    assert starts.shape == (2, k) and starts.min() >= 0 and starts.max() + count <= hidden.shape[0] == visible.shape[0]
    return [np.concatenate([table.numpy()[s : s + count] for s in row]) for table, row in zip((hidden, visible), starts)]


def test_a_steps_pool_noise_depends_on_its_seed_and_shape_alone():
    straight, resumed = NoisePool(3, 5, rows=64, steps=4), NoisePool(3, 5, rows=64, steps=4)
    counts = (10, 25, 5, 45, 15, 15)  # CD-2: 2 x 2 x 25 > 64 rows, and 2 x 2 x 45: the table grows
    history = [_windows(straight, [7, i], count, 2) for i, count in enumerate(counts)]
    for i, count in enumerate(counts):  # a fresh pool (a resumed run) draws each step's rows again
        if i in (0, 3, 5):
            resumed = NoisePool(3, 5, rows=64, steps=4)
        for got, want in zip(_windows(resumed, [7, i], count, 2), history[i]):
            np.testing.assert_array_equal(got, want)
    compiled = tf.function(lambda seed, count: straight.tables(seed, count, 2))
    hidden, _, starts = compiled(tf.constant([7, 4], tf.int64), tf.constant(15))
    got = np.concatenate([hidden.numpy()[s : s + 15] for s in starts.numpy()[0]])
    np.testing.assert_array_equal(got, history[4][0])
    # Steps 0-3 share one table (key [7, 0]), in different places; steps 4 and 5 another.
    assert not np.array_equal(history[0][0][:5], history[2][0][:5])  # their first chain steps' windows
    key_1, key_0 = straight.hidden.numpy(), NoisePool(3, 5, rows=64, steps=4)  # the pool now holds key [7, 1]
    _windows(key_0, [7, 1], 25, 2)
    assert np.isin(history[2][0][:, 0], key_0.hidden.numpy()[:, 0]).all()  # step 2 read the table step 1 read
    assert not np.isin(key_1[:, 0], key_0.hidden.numpy()[:, 0]).any()  # steps 4 and 5 read another


def test_the_pool_spreads_its_steps_over_the_table():
    k, count, pool = 15, 90, NoisePool(2, 4, rows=3000, steps=16)  # 30 slots of 100 rows
    starts = np.array([pool.tables(tf.constant([1, i], tf.int64), count, k)[2].numpy() for i in range(16)])  # (16, 2, k)
    slots, inside = starts // 100, starts % 100
    assert inside.max() + count <= 100 and len(np.unique(inside)) > 5  # a window inside its slot, at a varying row
    assert all(len(set(row)) == k for row in slots.reshape(-1, k))  # within a step no slot, so no row, serves twice
    assert np.mean(starts[:, 0] != starts[:, 1]) > 0.9 and len(np.unique(starts[:, 0])) > 100  # the layers' own windows, spread
    # Two steps rarely read the same slots for two consecutive chain steps (chains with the same
    # noise for several steps would fall into the same states): about 1 in 50 places, by chance.
    pairs = [set(zip(row[:-1], row[1:])) for row in slots[:, 0]]
    shared = [len(pairs[i] & pairs[j]) / (k - 1) for i in range(16) for j in range(i)]
    assert np.mean(shared) < 0.05
    with pytest.raises(ValueError, match="rows must be a positive int, but got 0"):
        NoisePool(2, 4, rows=0)
