"""The RBM's math on arrays with per-row biases: the free energy and block Gibbs sampling.

Each row of v is one frame and has its own biases bv, bh (the RNN-RBM's conditional RBMs;
the equations are in `rbmsearch.model`'s docstring). Pure functions of their inputs and seeds:
nothing here reads a file or holds state, and every sampler draws its noise from `seed` (or
from a `noise.NoisePool`), so the same seed gives the same samples, eagerly or compiled.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rbmsearch.arrays import check_positive_int
from rbmsearch.noise import NoisePool, logistic16

__all__ = ["RNG_ALG", "Seed", "as_seed", "dot", "free_energy", "gibbs_chain", "gibbs_step", "long_gibbs_chain"]

RNG_ALG = "philox"  # fixed, not "auto_select" (device-dependent): a seed means the same bits

Seed = int | tuple[int, int] | list[int] | np.ndarray | tf.Tensor


def as_seed(seed: Seed) -> tf.Tensor:
    """An int, a pair, or a (2,) int tensor -> the (2,) int64 seed stateless ops take."""
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        return tf.constant([int(seed), 0], dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] != 2:
        raise ValueError(
            f"seed must be an int or a (2,) integer tensor, but got {seed.dtype.name} "
            f"of shape {seed.shape}."
        )
    return tf.cast(seed, tf.int64)


def dot(x: tf.Tensor, w: tf.Tensor, transpose_w: bool = False) -> tf.Tensor:
    """(..., n) @ (n, m) -> (..., m) as ONE 2-D matmul (batched matmul would loop over ...)."""
    if x.shape.rank == 2:
        return tf.matmul(x, w, transpose_b=transpose_w)
    m = w.shape[0] if transpose_w else w.shape[1]
    y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), w, transpose_b=transpose_w)  # (N, m)
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [m]], axis=0))


@tf.custom_gradient
def _softplus(x: tf.Tensor) -> tf.Tensor:
    """log(1 + e^x) as max(x, 0) + log1p(e^-|x|), stable for any x and within a few units in the
    last place of `tf.nn.softplus`, with sigmoid(x) as its gradient: twice as fast as
    `tf.nn.softplus` on a CPU (docs/results.md, 10.9)."""
    return tf.nn.relu(x) + tf.math.log1p(tf.exp(-tf.abs(x))), lambda g: g * tf.sigmoid(x)


def free_energy(v, W, bv, bh, vW=None) -> tf.Tensor:
    """RBM free energy F(v) = -v.bv - sum_j softplus(bh_j + (v W)_j), per row.

    v: (..., n_v) float, W: (n_v, n_h), bv: (..., n_v) or (n_v,) (broadcast against v),
    bh: (..., n_h) or (n_h,); vW: v W when the caller has it already. Row r of v is scored with
    row r of the biases only. Computed in float64 when W is float64 (AIS needs it), else float32.
    """
    dtype = tf.float64 if tf.as_dtype(getattr(W, "dtype", tf.float32)) == tf.float64 else tf.float32
    v, W, bv, bh = (tf.cast(x, dtype) for x in (v, W, bv, bh))
    vbias = tf.reduce_sum(v * bv, axis=-1)  # (...)  per-row dot product, never v @ bv.T
    hidden = tf.reduce_sum(_softplus((dot(v, W) if vW is None else vW) + bh), axis=-1)  # (...)
    return -vbias - hidden


def gibbs_step(v, W, bv, bh, noise_h, noise_v) -> tuple[tf.Tensor, tf.Tensor]:
    """One block Gibbs step v -> h -> v', given the uniforms to compare against.

    v: (..., n_v), W: (n_v, n_h), bv: (..., n_v) or (n_v,), bh: (..., n_h) or (n_h,),
    noise_h: (..., n_h) and noise_v: (..., n_v) uniform in [0, 1).
    Returns (v', p_v): the new sample (float32 0/1) and P(v' = 1 | h), both (..., n_v).
    """
    v, W, bv, bh = (tf.cast(x, tf.float32) for x in (v, W, bv, bh))
    p_h = tf.sigmoid(dot(v, W) + bh)  # (..., n_h)
    h = tf.cast(noise_h < p_h, tf.float32)  # h_j ~ Bernoulli(p_h,j)
    p_v = tf.sigmoid(dot(h, W, transpose_w=True) + bv)  # (..., n_v)
    return tf.cast(noise_v < p_v, tf.float32), p_v


def gibbs_chain(v0, W, bv, bh, k: int, seed: Seed, pool: NoisePool | None = None, v0W=None) -> tuple[tf.Tensor, tf.Tensor]:
    """k steps of block Gibbs sampling v -> h -> v in an RBM with per-row biases.

    v0: (..., n_v) start of the chains (0/1 or probabilities), W: (n_v, n_h),
    bv: (..., n_v) or (n_v,), bh: (..., n_h) or (n_h,); k >= 1 (a Python int: the loop is
    unrolled into the graph); seed: an int or a (2,) int tensor. Every row is its own chain.
    A unit is on when its pre-activation exceeds logistic noise (`noise.logistic16`): a
    Bernoulli draw at sigmoid(pre-activation), without the sigmoid. The noise is drawn from
    `seed`, or with `pool` read from its tables (`NoisePool.tables`): step s reads a window
    of as many rows as the chains from a slot of each layer's table that `seed` picks.
    v0W: the product v0 W when the caller has it already (training's free energy of the data).
    Returns (v_k, p_k): the k-th sample (float32 0/1) and its mean field
    P(v = 1 | h_{k-1}) (float32 in (0, 1)), both (..., n_v).
    Not differentiable by design: callers wrap inputs or outputs in `tf.stop_gradient`.
    """
    check_positive_int("k (Gibbs steps)", k)
    seed = as_seed(seed)
    v, W, bv, bh = (tf.cast(x, tf.float32) for x in (v0, W, bv, bh))
    rows = tf.shape(v)[:-1]  # (...)
    n_v, n_h = W.shape
    if pool is None:
        seeds = tf.random.experimental.stateless_split(seed, num=2 * k)  # (2k, 2)

        def noise(step: int, layer: int) -> tf.Tensor:  # (..., n): drawn per step, as the loop needs it
            return logistic16(tf.concat([rows, [(n_h, n_v)[layer]]], 0), seeds[2 * step + layer])
    else:
        count = tf.reduce_prod(rows)
        hidden, visible, starts = pool.tables(seed, count, k)

        def noise(step: int, layer: int) -> tf.Tensor:
            start = starts[layer, step]
            window = (hidden, visible)[layer][start : start + count]  # (R, n)
            return tf.reshape(window, tf.concat([rows, [(n_h, n_v)[layer]]], 0))

    # x + b > L as x > L - b: the thresholds do not wait for the products, so they are
    # ready before them, beside the chain, and each step runs a product, a comparison and a cast.
    for step in range(k):
        vW = v0W if step == 0 and v0W is not None else dot(v, W)
        h = tf.cast(vW > noise(step, 0) - bh, tf.float32)  # h_j ~ Bernoulli(P(h_j = 1 | v))
        top = dot(h, W, transpose_w=True)  # (..., n_v), the visible pre-activation less bv
        v = tf.cast(top > noise(step, 1) - bv, tf.float32)
    return v, tf.sigmoid(top + bv)  # a compiled graph that does not use the mean field prunes it


def long_gibbs_chain(v0, W, bv, bh, k, seed: Seed) -> tf.Tensor:
    """`gibbs_chain` for long chains: the k steps run in a `tf.while_loop`, not unrolled.

    Same arguments (k may be a tensor); returns only the k-th sample (..., n_v) float32 0/1.
    Thousands of steps cost no more graph than one. Its random stream differs from
    `gibbs_chain`'s: step i draws from `fold_in(seed, i)`.
    """
    seed = as_seed(seed)
    v, W, bv, bh = (tf.cast(x, tf.float32) for x in (v0, W, bv, bh))
    rows = tf.shape(v)[:-1]
    n_v, n_h = W.shape

    def step(i, v):
        key_h, key_v = tf.unstack(tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, i), 2))
        noise_h = tf.random.stateless_uniform(tf.concat([rows, [n_h]], 0), seed=key_h, alg=RNG_ALG)
        noise_v = tf.random.stateless_uniform(tf.concat([rows, [n_v]], 0), seed=key_v, alg=RNG_ALG)
        return i + 1, gibbs_step(v, W, bv, bh, noise_h, noise_v)[0]

    return tf.while_loop(lambda i, v: i < k, step, (tf.constant(0, tf.int64), v))[1]
