"""Cheap noise for Gibbs chains: a keyed integer hash of a counter instead of Philox, and a pool
of logistic noise that consecutive training steps share.

`tf.random.stateless_uniform` (Philox) costs about 7 ns a number on one CPU core: more than
half of a CD-15 chain's time at the paper's size (docs/results.md, 10.3). Here each 32-bit
word is two rounds of MurmurHash3's 32-bit finaliser over its index, keyed by the 128-bit
seed, and gives two 16-bit uniforms: about a third of Philox's cost, in plain TensorFlow
integer ops that have kernels on the CPU and the GPU. Every round is a bijection of the
word, so the words of one draw never repeat within 2^32 of them.

The uniforms are the midpoints (k + 1/2) / 2^16, k = 0 .. 2^16 - 1: a unit sampled as
`noise < p` is on with p rounded to the nearest multiple of 2^-16 (never for p = 0, always
for p = 1). That is ample for a Gibbs chain's Bernoulli units; AIS keeps Philox.

`logistic16` is the logit of those uniforms: a unit is on when its pre-activation x exceeds it,
which is `u < sigmoid(x)` without the sigmoid. `NoisePool` holds a table of it that a run of
`NoisePool.steps` training steps read windows of, so that a CD-k step draws no noise of its own
(docs/results.md, 10.6).
"""

from __future__ import annotations

import tensorflow as tf

from rbmsearch.arrays import check_positive_int

__all__ = ["POOL_STEPS", "NoisePool", "logistic16", "uniform16"]

_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio, odd: index * _GOLDEN spreads counters over the word


def _fmix32(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
    x = x * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _hash(index: tf.Tensor, key_a: tf.Tensor, key_b: tf.Tensor) -> tf.Tensor:
    """The 32-bit words of the counters `index` (uint32) under the two key words."""
    words = _fmix32(index * tf.constant(_GOLDEN, tf.uint32) + key_a)
    return _fmix32(tf.bitwise.bitwise_xor(words, key_b))


# `_hash` as one XLA program: the same words, about 4x as fast on a CPU, where TensorFlow's kernel
# for a shift costs as much as 4 exclusive-ors (docs/results.md, 10.9). XLA compiles it once per shape.
_hash_compiled = tf.function(_hash, jit_compile=True, reduce_retracing=True)


def uniform16(shape, seed, start=0, compiled: bool = False) -> tf.Tensor:
    """float32 uniforms in (0, 1) of `shape` (a 1-D int tensor or list) at 16-bit resolution,
    a pure function of `seed` ((2,) int64, as `tf.random.stateless_uniform` takes).

    start (an int or int scalar >= 0): the draw's first number is number `start` of the seed's
    stream, so that the draws of consecutive slices concatenate to the draw of the whole.
    compiled: hash with XLA (the same numbers), for draws whose shapes repeat (XLA compiles each new one)."""
    shape = tf.cast(shape, tf.int32)  # shape arithmetic in int32: host memory on a GPU
    count = tf.cast(tf.reduce_prod(shape), tf.int64)
    keys = tf.reshape(tf.bitcast(tf.cast(seed, tf.int64), tf.uint32), [4])  # the seed's 128 bits
    start = tf.cast(start, tf.int64)
    first, skip = start // 2, start % 2  # two numbers per word: an odd start skips its word's first
    index = tf.cast(tf.range(first, first + (count + skip + 1) // 2, dtype=tf.int64), tf.uint32)  # int64: the GPU has that Range kernel
    words = (_hash_compiled if compiled else _hash)(index, tf.bitwise.bitwise_xor(keys[0], keys[2]), tf.bitwise.bitwise_xor(keys[1], keys[3]))
    halves = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[skip : skip + count]  # two 16-bit draws per word
    return tf.reshape(tf.cast(halves, tf.float32) * (1.0 / 65536.0) + (0.5 / 65536.0), shape)


def logistic16(shape, seed, start=0, compiled: bool = False) -> tf.Tensor:
    """float32 logistic noise log(u / (1 - u)) of `uniform16(shape, seed, start)`, in [-11.8, 11.8].

    For any x, `x > logistic16` is exactly as likely as `uniform16 < sigmoid(x)`: a Bernoulli
    draw with p = sigmoid(x) (to 16 bits) that costs one comparison and no sigmoid."""
    u = uniform16(shape, seed, start, compiled)
    return tf.math.log(u) - tf.math.log1p(-u)  # 1 - u is exact at the midpoints


POOL_STEPS = 16  # training steps that share one pool: its cost is paid once per 16 steps
POOL_PARTS = 4  # slices a table is drawn in: cores draw them side by side, each slice stays in cache


class NoisePool(tf.Module):
    """Logistic noise (`logistic16`) for the Gibbs chains of a run of training steps.

    A CD-k step on N frames reads k windows of N rows for each layer: drawing them costs more
    than the chain's products (docs/results.md, 10.6). So `steps` consecutive steps share one
    table of `rows` rows, cut into 2k slots. A step reads the window of its chain's step s from
    a slot of its own, drawn from its seed for each layer and each s: k slots of the 2k, all
    different, at a random row inside the slot where the window is shorter than the slot (a
    training step's full batch fills its slot: `train.chain_noise_pool` sizes the table for it).
    So within a step no row serves twice, and two steps rarely share the noise of two
    consecutive chain steps: chains that shared the noise of every step, as reading k windows
    one after another from one base row did, tend to fall into the same states from different
    starts, and their steps' negative samples stop being independent (docs/results.md, 10.7).
    A row serves about `steps` k N / `rows` steps in all before the table is drawn again.
    The table is keyed by [seed[0], seed[1] // steps] and every row's uniforms are a pure function
    of the key and the row's index, so a step's noise depends on its seed and shape only (up to a
    last bit of a logarithm when a step grows the table): eager and compiled runs, and resumed and
    straight runs, give the same draws.

    n_v, n_h: the RBM's sizes. A step whose k windows fill more than half the table grows it
    to twice their rows.
    The table is not checkpointed: a step rebuilds it from the key when it needs it.
    """

    def __init__(self, n_v: int, n_h: int, rows: int, steps: int = POOL_STEPS):
        super().__init__(name="noise_pool")
        for name, value in (("n_v", n_v), ("n_h", n_h), ("rows", rows), ("steps", steps)):
            check_positive_int(name, value)
        self.rows, self.steps = rows, steps
        self.hidden = tf.Variable(tf.zeros((0, n_h)), shape=tf.TensorShape([None, n_h]), trainable=False, name="hidden")
        self.visible = tf.Variable(tf.zeros((0, n_v)), shape=tf.TensorShape([None, n_v]), trainable=False, name="visible")
        self.key = tf.Variable(tf.constant([-1, -1], tf.int64), trainable=False, name="key")  # no seed gives it

    def tables(self, seed, count, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The tables for a step with `seed` ((2,) int64) whose chain of k steps (a Python int)
        runs on `count` rows.

        Returns (hidden (R, n_h), visible (R, n_v), starts (2, k) int32): chain step s reads
        rows starts[0, s] .. starts[0, s] + count - 1 of the hidden table, and from starts[1, s]
        of the visible one. Draws the tables again when the key changes, or when they are too short.
        """
        check_positive_int("k (Gibbs steps)", k)
        seed, count = tf.cast(seed, tf.int64), tf.cast(count, tf.int32)
        key = tf.stack([seed[0], seed[1] // self.steps])
        size = tf.maximum(self.rows, 2 * k * count)  # a larger step grows the table: its slots still vary
        width = size // (2 * k)  # a slot's rows, at least count
        draw_seed = tf.random.experimental.stateless_fold_in(seed, 3)
        slots = tf.argsort(tf.random.stateless_uniform((2, 2 * k), draw_seed), axis=-1)[:, :k]  # k different slots a layer
        offsets = tf.random.stateless_uniform((2, k), tf.random.experimental.stateless_fold_in(draw_seed, 1), 0, width - count + 1, dtype=tf.int32)
        starts = tf.cast(slots, tf.int32) * width + offsets  # (2, k)
        stale = tf.reduce_any(key != self.key) | (tf.shape(self.hidden)[0] < size)

        def draw() -> tf.Tensor:  # each table in POOL_PARTS slices: ops side by side on a CPU's threads
            cuts = [size * p // POOL_PARTS for p in range(POOL_PARTS + 1)]
            for layer, table in enumerate((self.hidden, self.visible)):
                n, seed = tf.shape(table)[1], tf.random.experimental.stateless_fold_in(key, layer)
                parts = [logistic16(tf.stack([hi - lo, n]), seed, lo * n, compiled=True) for lo, hi in zip(cuts, cuts[1:])]
                table.assign(tf.concat(parts, axis=0))
            self.key.assign(key)
            return tf.constant(True)

        with tf.control_dependencies([tf.cond(stale, draw, lambda: tf.constant(False))]):
            return tf.identity(self.hidden), tf.identity(self.visible), starts
