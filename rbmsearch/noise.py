"""Cheap uniform noise for Gibbs chains: a keyed integer hash of a counter instead of Philox.

`tf.random.stateless_uniform` (Philox) costs about 7 ns a number on one CPU core: more than
half of a CD-15 chain's time at the paper's size (docs/results.md, 10.3). Here each 32-bit
word is two rounds of MurmurHash3's 32-bit finaliser over its index, keyed by the 128-bit
seed, and gives two 16-bit uniforms: about a third of Philox's cost, in plain TensorFlow
integer ops that have kernels on the CPU and the GPU. Every round is a bijection of the
word, so the words of one draw never repeat within 2^32 of them.

The uniforms are the midpoints (k + 1/2) / 2^16, k = 0 .. 2^16 - 1: a unit sampled as
`noise < p` is on with p rounded to the nearest multiple of 2^-16 (never for p = 0, always
for p = 1). That is ample for a Gibbs chain's Bernoulli units; AIS keeps Philox.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["uniform16"]

_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio, odd: index * _GOLDEN spreads counters over the word


def _fmix32(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
    x = x * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def uniform16(shape, seed) -> tf.Tensor:
    """float32 uniforms in (0, 1) of `shape` (a 1-D int tensor or list) at 16-bit resolution,
    a pure function of `seed` ((2,) int64, as `tf.random.stateless_uniform` takes)."""
    shape = tf.cast(shape, tf.int32)  # shape arithmetic in int32: host memory on a GPU
    count = tf.reduce_prod(shape)
    keys = tf.reshape(tf.bitcast(tf.cast(seed, tf.int64), tf.uint32), [4])  # the seed's 128 bits
    index = tf.cast(tf.range(tf.cast((count + 1) // 2, tf.int64), dtype=tf.int64), tf.uint32)  # int64: the GPU has that Range kernel
    words = _fmix32(index * tf.constant(_GOLDEN, tf.uint32) + tf.bitwise.bitwise_xor(keys[0], keys[2]))
    words = _fmix32(tf.bitwise.bitwise_xor(words, tf.bitwise.bitwise_xor(keys[1], keys[3])))
    halves = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:count]  # two 16-bit draws per word
    return tf.reshape(tf.cast(halves, tf.float32) * (1.0 / 65536.0) + (0.5 / 65536.0), shape)
