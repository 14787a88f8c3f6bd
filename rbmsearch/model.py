"""The RNN-RBM of Boulanger-Lewandowski, Bengio & Vincent, in TensorFlow 2.

    python -m rbmsearch.model [--rnn tanh|lstm|gru]   # devices and parameter shapes (loads TensorFlow)

Reference: N. Boulanger-Lewandowski, Y. Bengio, P. Vincent, "Modeling Temporal Dependencies
in High-Dimensional Sequences: Application to Polyphonic Music Generation and
Transcription", ICML 2012 (sections 3-4). This module holds the model's math only: it reads
and writes no files, and importing it has no side effects (no TF op runs, no device is
touched). `train` fits it, `render` samples from it, the evaluation code scores it.

Notation: v_t in {0,1}^n_v is frame t of a piano roll (row = time step, column = pitch),
h_t in {0,1}^n_h the RBM's hidden units, u_t in R^n_u the RNN's state. Row vectors
throughout, so `v W` is `v @ W`.

RBM (one per frame, with its own biases bv_t, bh_t):

    E(v, h)  = -v.bv_t - h.bh_t - v W h
    F(v)     = -log sum_h exp(-E(v, h)) = -v.bv_t - sum_j softplus(bh_t,j + (v W)_j)
    P(h_j = 1 | v) = sigmoid(bh_t,j + (v W)_j),   P(v_i = 1 | h) = sigmoid(bv_t,i + (W h)_i)

F is computed PER ROW: each frame's biases dot that frame's v (`sum(v * bv_t, -1)`), never
`v @ bv_t.T`, which mixes rows (a known bug of an earlier TF implementation).

Conditional biases come from the PREVIOUS RNN state (paper sec. 3), so v_t never leaks into
its own distribution (an earlier implementation used u_t here):

    bv_t = bv + u_{t-1} Wuv,      bh_t = bh + u_{t-1} Wuh

RNN (paper sec. 3; `rnn="tanh"`), with a learned initial state u_0 = `u0`, so the first
frame's biases come from u0:

    u_t = tanh(bu + v_t Wvu + u_{t-1} Wuu)

`rnn="lstm"` / `"gru"` (not in the paper; offered as variants) replace that recurrence by
an LSTM / GRU cell whose output is u_t; the RBM side is unchanged.

Training (paper sec. 3, CD-k): for each frame, run k steps of block Gibbs sampling from the
data frame v_t under the frame's conditional RBM to get v~_t, hold the chain constant
(`tf.stop_gradient`), and minimise

    C = mean over real frames t of  F(v_t) - F(v~_t)

Autodiff of C gives dC/dW, dC/dbv_t, dC/dbh_t, the CD-k estimates of the negative
log-likelihood gradient, e.g. dC/dbv_t = v~_t - v_t, and carries dC/dbv_t, dC/dbh_t back
through the bias equations into Wuv, Wuh and through the RNN into Wvu, Wuu, bu, u0
(back-propagation through time). That is exactly the paper's RNN-RBM gradient.

Generation: for each new frame, compute bv_t, bh_t from u_{t-1}, run k Gibbs steps from
v = 0 (as the authors' Theano tutorial code does, with k = 25), keep the final sample as v_t,
and update u_t from it.

Randomness is explicit: every sampler takes a `seed` (an int or a (2,) int tensor) and draws
its noise as a pure function of it (TF's stateless ops, or the hashes of `rbmsearch.noise`), so
the same seed gives the same samples, eagerly or compiled (up to a last bit of a product). A
`NoisePool` keeps a table between steps, and a step's draws from it are a function of its seed.
Inside a compiled training loop pass the seed as a (2,) int tensor (e.g. `[run_seed, step]`)
so that `tf.function` does not retrace for every new value.

Speed. Training: teacher forcing means every frame's biases come from the RNN run over the
TRUE frames, so the only sequential part is a cheap (B, n_u) @ (n_u, n_u) recurrence
(`tf.scan`); the input projections, the bias projections and the k Gibbs steps of all N real
frames of the batch run in parallel as big (N, n_v) @ (n_v, n_h) matmuls. Padding is dropped
before the chain, and `cd_loss` is meant for a plain `tf.function` (on a CPU, XLA's sampler
was slower, and XLA for the recurrence saved nothing: docs/results.md, 10.6). The chain
compares pre-activations with logistic noise (no sigmoid), which training reads from a pool
shared by 16 steps (`noise.NoisePool`); the tanh RNN's gradient is one hand-written reverse
scan, and its two loops run RNN_CHUNK steps an iteration. Generation is sequential, so there
XLA wins: the frame loop runs as one compiled program.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from rbmsearch.arrays import check_positive_int, pad_batch
from rbmsearch.config import RNN_TYPES, TrainConfig
from rbmsearch.noise import NoisePool, logistic16, uniform16

try:  # the piano-roll width is defined once, in `midi`; keep the model usable without it
    from rbmsearch.midi import NUM_PITCHES as N_PITCHES
except ImportError:  # pragma: no cover - only when `midi` or `mido` is unavailable
    N_PITCHES = 88

__all__ = [
    "N_PITCHES",
    "RNN_TYPES",
    "ModelConfig",
    "RnnRbm",
    "conditional_rbms",
    "configure_devices",
    "free_energy",
    "gibbs_chain",
    "gibbs_step",
]

_RNG_ALG = "philox"  # fixed, not "auto_select" (device-dependent): a seed means the same bits

Seed = int | tuple[int, int] | list[int] | np.ndarray | tf.Tensor


# -----------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the RNN-RBM; everything needed (with the parameters) to rebuild a model."""

    n_visible: int = N_PITCHES  # one visible unit per piano key
    n_hidden: int = 150  # RBM hidden units: the paper's size for JSB Chorales
    n_recurrent: int = 100  # RNN state size: the paper's size for JSB Chorales
    rnn: str = "tanh"  # "tanh" is the paper's RNN; "lstm" and "gru" are drop-in variants
    init_std: float = 0.01  # std of the Gaussian init of all weights (biases start at 0)

    def __post_init__(self) -> None:
        for name in ("n_visible", "n_hidden", "n_recurrent"):
            check_positive_int(name, getattr(self, name))
        if self.rnn not in RNN_TYPES:
            raise ValueError(
                f"rnn must be one of {', '.join(map(repr, RNN_TYPES))}, but got {self.rnn!r}."
            )
        std = self.init_std
        if isinstance(std, bool) or not isinstance(std, int | float) or not 0 < std < np.inf:
            raise ValueError(f"init_std must be a positive finite float, but got {std!r}.")

    @classmethod
    def of(cls, config: TrainConfig) -> ModelConfig:
        """The model sizes of a training configuration."""
        return cls(n_hidden=config.n_hidden, n_recurrent=config.n_recurrent, rnn=config.rnn, init_std=config.init_std)


# -----------------------------------------------------------------------------
# Pure functions: RBM math on arrays with per-row biases


def _as_seed(seed: Seed) -> tf.Tensor:
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


def _dot(x: tf.Tensor, w: tf.Tensor, transpose_w: bool = False) -> tf.Tensor:
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
    hidden = tf.reduce_sum(_softplus((_dot(v, W) if vW is None else vW) + bh), axis=-1)  # (...)
    return -vbias - hidden


def gibbs_step(v, W, bv, bh, noise_h, noise_v) -> tuple[tf.Tensor, tf.Tensor]:
    """One block Gibbs step v -> h -> v', given the uniforms to compare against.

    v: (..., n_v), W: (n_v, n_h), bv: (..., n_v) or (n_v,), bh: (..., n_h) or (n_h,),
    noise_h: (..., n_h) and noise_v: (..., n_v) uniform in [0, 1).
    Returns (v', p_v): the new sample (float32 0/1) and P(v' = 1 | h), both (..., n_v).
    """
    v, W, bv, bh = (tf.cast(x, tf.float32) for x in (v, W, bv, bh))
    p_h = tf.sigmoid(_dot(v, W) + bh)  # (..., n_h)
    h = tf.cast(noise_h < p_h, tf.float32)  # h_j ~ Bernoulli(p_h,j)
    p_v = tf.sigmoid(_dot(h, W, transpose_w=True) + bv)  # (..., n_v)
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
    seed = _as_seed(seed)
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
        vW = v0W if step == 0 and v0W is not None else _dot(v, W)
        h = tf.cast(vW > noise(step, 0) - bh, tf.float32)  # h_j ~ Bernoulli(P(h_j = 1 | v))
        top = _dot(h, W, transpose_w=True)  # (..., n_v), the visible pre-activation less bv
        v = tf.cast(top > noise(step, 1) - bv, tf.float32)
    return v, tf.sigmoid(top + bv)  # a compiled graph that does not use the mean field prunes it


def long_gibbs_chain(v0, W, bv, bh, k, seed: Seed) -> tf.Tensor:
    """`gibbs_chain` for long chains: the k steps run in a `tf.while_loop`, not unrolled.

    Same arguments (k may be a tensor); returns only the k-th sample (..., n_v) float32 0/1.
    Thousands of steps cost no more graph than one. Its random stream differs from
    `gibbs_chain`'s: step i draws from `fold_in(seed, i)`.
    """
    seed = _as_seed(seed)
    v, W, bv, bh = (tf.cast(x, tf.float32) for x in (v0, W, bv, bh))
    rows = tf.shape(v)[:-1]
    n_v, n_h = W.shape

    def step(i, v):
        key_h, key_v = tf.unstack(tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, i), 2))
        noise_h = tf.random.stateless_uniform(tf.concat([rows, [n_h]], 0), seed=key_h, alg=_RNG_ALG)
        noise_v = tf.random.stateless_uniform(tf.concat([rows, [n_v]], 0), seed=key_v, alg=_RNG_ALG)
        return i + 1, gibbs_step(v, W, bv, bh, noise_h, noise_v)[0]

    return tf.while_loop(lambda i, v: i < k, step, (tf.constant(0, tf.int64), v))[1]


RNN_CHUNK = 10  # RNN steps per iteration of its loops, written out (docs/results.md, 10.9)


def _scan_in_chunks(step: Callable, elems, initializer: tf.Tensor, reverse: bool = False) -> tf.Tensor:
    """`tf.scan(step, elems, initializer, reverse=reverse)` with RNN_CHUNK steps written out in each
    iteration of its loop: the same values bit for bit, in a tenth of the loop's iterations.

    step: (carry (...), elem) -> the next carry, which is also that step's output. elems: a tensor
    or a tuple of tensors of T >= 1 rows. Returns the T outputs stacked, (T, ...). Padding brings T to
    a multiple of the chunk on the side the loop reaches last; those steps' outputs are dropped.
    """
    c, first = RNN_CHUNK, tf.nest.flatten(elems)[0]
    length = tf.shape(first)[0]
    pad = -length % c
    side = [[pad, 0]] if reverse else [[0, pad]]

    def chunks(x: tf.Tensor) -> tf.Tensor:  # (T, ...) -> (T' / c, c, ...)
        x = tf.pad(x, side + [[0, 0]] * (x.shape.rank - 1))
        return tf.reshape(x, tf.concat([[-1, c], tf.shape(x)[1:]], 0))

    def block(previous: tf.Tensor, xs) -> tf.Tensor:  # previous: the outputs of the chunk before, (c, ...)
        carry, outputs = previous[0] if reverse else previous[-1], [None] * c
        steps = list(zip(*(tf.unstack(x) for x in tf.nest.flatten(xs))))  # c tuples of one row of each
        for i in reversed(range(c)) if reverse else range(c):
            carry = outputs[i] = step(carry, tf.nest.pack_sequence_as(xs, steps[i]))
        return tf.stack(outputs)

    outputs = tf.scan(block, tf.nest.map_structure(chunks, elems), initializer=tf.repeat(initializer[None], c, axis=0), reverse=reverse)
    outputs = tf.reshape(outputs, tf.concat([[-1], tf.shape(outputs)[2:]], 0))  # (T', ...)
    return outputs[pad:] if reverse else outputs[:length]


@tf.custom_gradient
def _tanh_recurrence(x, state0, Wuu):
    """u_t = tanh(x_t + u_{t-1} Wuu) for t = 0 .. T-1, from u_{-1} = state0: the paper's RNN.

    x: (T, B, n_u) the projected inputs bu + v_t Wvu; state0: (B, n_u); Wuu: (n_u, n_u).
    Returns (u_prev, u_last): u_{t-1} for every t, (T, B, n_u), and u_{T-1}, (B, n_u).
    Back-propagation through time is written out (one reverse scan of a product and two
    element-wise ops per step): TensorFlow's gradient of `tf.scan` keeps and replays every op
    of the forward loop, and took about twice the loop's own time (docs/results.md, 10.6); its
    gradients of the slices that shift u by a step cost more than the loop (10.9).
    """
    states = _scan_in_chunks(lambda u, x_t: tf.tanh(x_t + tf.matmul(u, Wuu)), x, state0)  # (T, B, n_u)
    previous = tf.concat([state0[None], states[:-1]], axis=0)  # u_{t-1}, (T, B, n_u)

    def grad(d_previous, d_last):  # dL/du_{t-1} (T, B, n_u) and dL/du_{T-1} (B, n_u) from outside
        d_states = tf.concat([d_previous[1:], d_last[None]], axis=0)  # dL/du_t from outside the recurrence
        slope = 1.0 - states * states  # tanh' at every step, (T, B, n_u)
        # da_t = (dL/du_t + da_{t+1} Wuu^T) * tanh'_t, from t = T-1 down to 0: the pre-activations' gradients
        def back(d_next, g):  # g = (dL/du_t, tanh'_t)
            return (g[0] + tf.matmul(d_next, Wuu, transpose_b=True)) * g[1]

        d_pre = _scan_in_chunks(back, (d_states, slope), tf.zeros_like(state0), reverse=True)  # (T, B, n_u)
        n_u = Wuu.shape[0]
        d_wuu = tf.matmul(tf.reshape(previous, [-1, n_u]), tf.reshape(d_pre, [-1, n_u]), transpose_a=True)  # sum_t u_{t-1}^T da_t
        d_state0 = d_previous[0] + tf.matmul(d_pre[0], Wuu, transpose_b=True)  # u_{-1} is read by step 0 and is u_prev's first
        return d_pre, d_state0, d_wuu  # dx_t = da_t

    return (previous, states[-1]), grad


def _dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Inverted dropout: zero each entry with probability `rate`, scale the rest by 1/(1-rate)."""
    if rate == 0:
        return x
    keep = tf.random.stateless_uniform(tf.shape(x), seed=seed, alg=_RNG_ALG) >= rate
    return x * tf.cast(keep, x.dtype) / (1.0 - rate)


# -----------------------------------------------------------------------------
# The model


class RnnRbm(tf.Module):
    """RNN-RBM (Boulanger-Lewandowski et al. 2012); see the module docstring for the math.

    Variables (all float32): the RBM's W (n_v, n_h), bv (n_v), bh (n_h); the bias maps
    Wuv (n_u, n_v), Wuh (n_u, n_h); the learned initial RNN output u0 (n_u); and the RNN:
      tanh: Wvu (n_v, n_u), Wuu (n_u, n_u), bu (n_u)
      lstm: lstm_Wx (n_v, 4 n_u), lstm_Wu (n_u, 4 n_u), lstm_b (4 n_u), gates [i, f, g, o]
      gru:  gru_Wx (n_v, 3 n_u), gru_Wu (n_u, 3 n_u), gru_b (3 n_u), gates [z, r, n]
            (reset applied after the recurrent matmul, as in cuDNN / Keras reset_after)
    Weights start as N(0, init_std^2), each from its own seed derived from `seed`; biases and
    u0 start at 0, except the LSTM forget-gate bias, which starts at 1.

    The RNN state is one (B, S) tensor: S = n_u (tanh, gru: the state is u), or 2 n_u
    (lstm: [u, c], output then cell, c_0 = 0). u_t is always its first n_u columns.
    Methods work eagerly and inside a caller's `tf.function`; `generate` compiles itself.
    """

    def __init__(self, config: ModelConfig, seed: int):
        super().__init__(name="rnn_rbm")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an int, but got {seed!r}.")
        seed = int(seed)
        self.config = config
        n_v, n_h, n_u = config.n_visible, config.n_hidden, config.n_recurrent
        shapes: dict[str, tuple[int, ...]] = {
            "W": (n_v, n_h), "bv": (n_v,), "bh": (n_h,),
            "Wuv": (n_u, n_v), "Wuh": (n_u, n_h), "u0": (n_u,),
        }  # fmt: skip
        if config.rnn == "tanh":
            shapes |= {"Wvu": (n_v, n_u), "Wuu": (n_u, n_u), "bu": (n_u,)}
        else:
            gates = 4 if config.rnn == "lstm" else 3
            p = config.rnn
            shapes |= {f"{p}_Wx": (n_v, gates * n_u), f"{p}_Wu": (n_u, gates * n_u),
                       f"{p}_b": (gates * n_u,)}  # fmt: skip
        self._names = tuple(shapes)
        base = tf.constant([seed, 0], dtype=tf.int64)
        for i, (name, shape) in enumerate(shapes.items()):
            if len(shape) == 2:  # weights: N(0, init_std^2), each from its own derived seed
                init = tf.random.stateless_normal(
                    shape, seed=tf.random.experimental.stateless_fold_in(base, i),
                    stddev=config.init_std, alg=_RNG_ALG,
                )  # fmt: skip
            else:  # biases and u0 start at zero
                init = tf.zeros(shape)
            if name == "lstm_b":  # forget-gate bias 1: remember by default (Jozefowicz+ 2015)
                init = tf.concat([tf.zeros(n_u), tf.ones(n_u), tf.zeros(2 * n_u)], axis=0)
            setattr(self, name, tf.Variable(init, name=name))
        self._compiled_fns: dict[str, Callable] = {}  # see `_compiled`

    # --- parameters -----------------------------------------------------------

    def to_params(self) -> dict[str, np.ndarray]:
        """All parameters as float32 numpy arrays, keyed by variable name (see class doc)."""
        return {name: getattr(self, name).numpy() for name in self._names}

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        """Assign parameters from `to_params` output; names and shapes must match exactly."""
        if set(params) != set(self._names):
            raise ValueError(
                f"params must have exactly the keys {sorted(self._names)} for rnn="
                f"{self.config.rnn!r}, but got {sorted(params)}."
            )
        for name in self._names:
            var, value = getattr(self, name), np.asarray(params[name], dtype=np.float32)
            if tuple(var.shape) != value.shape:
                raise ValueError(
                    f"params[{name!r}] must have shape {tuple(var.shape)}, but got {value.shape}."
                )
            var.assign(value)

    # --- RNN ------------------------------------------------------------------

    @property
    def state_size(self) -> int:
        n_u = self.config.n_recurrent
        return 2 * n_u if self.config.rnn == "lstm" else n_u

    def initial_state(self, batch_size) -> tf.Tensor:
        """The learned initial state for a batch: (B, S), u0 in the first n_u columns."""
        u = tf.broadcast_to(self.u0, [batch_size, self.config.n_recurrent])  # (B, n_u)
        if self.config.rnn == "lstm":
            return tf.concat([u, tf.zeros_like(u)], axis=-1)  # (B, 2 n_u): [u0, c0 = 0]
        return u

    def _input_projection(self, v: tf.Tensor) -> tf.Tensor:
        """The RNN's input term for every frame at once: (..., n_v) -> (..., G n_u)."""
        if self.config.rnn == "tanh":
            return _dot(v, self.Wvu) + self.bu  # bu + v_t Wvu
        p = self.config.rnn
        return _dot(v, getattr(self, f"{p}_Wx")) + getattr(self, f"{p}_b")

    def _cell(self, state: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """One recurrence step: state (B, S), projected input x (B, G n_u) -> new state (B, S)."""
        n_u = self.config.n_recurrent
        if self.config.rnn == "tanh":
            return tf.tanh(x + tf.matmul(state, self.Wuu))  # u_t = tanh(bu + v Wvu + u Wuu)
        if self.config.rnn == "lstm":
            u, c = state[:, :n_u], state[:, n_u:]
            i, f, g, o = tf.split(x + tf.matmul(u, self.lstm_Wu), 4, axis=-1)  # (B, n_u) each
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.concat([tf.sigmoid(o) * tf.tanh(c), c], axis=-1)
        xz, xr, xn = tf.split(x, 3, axis=-1)
        hz, hr, hn = tf.split(tf.matmul(state, self.gru_Wu), 3, axis=-1)
        z, r = tf.sigmoid(xz + hz), tf.sigmoid(xr + hr)
        return z * state + (1.0 - z) * tf.tanh(xn + r * hn)

    def run_rnn(self, v, state0=None) -> tuple[tf.Tensor, tf.Tensor]:
        """Run the RNN over true frames (teacher forcing).

        v: (B, T, n_v) 0/1, T >= 1; state0: (B, S) or None for `initial_state(B)`.
        Returns (u_prev, final_state): u_prev (B, T, n_u) holds u_{t-1} for every frame t
        (u_prev[:, 0] is state0's u), and final_state (B, S) is the state after frame T-1,
        ready to continue the sequence.
        """
        v = tf.cast(v, tf.float32)
        if state0 is None:
            state0 = self.initial_state(tf.shape(v)[0])
        x = tf.transpose(self._input_projection(v), [1, 0, 2])  # (T, B, G n_u), all frames
        if self.config.rnn == "tanh":  # with its gradient written out (docs/results.md, 10.6)
            prev, last = _tanh_recurrence(x, state0, tf.convert_to_tensor(self.Wuu))  # (T, B, n_u), (B, n_u)
        else:
            states = tf.scan(self._cell, x, initializer=state0)  # (T, B, S), the only serial part; not in chunks: autodiff of them was slower (docs/results.md, 10.9)
            prev, last = tf.concat([state0[None], states[:-1]], axis=0), states[-1]  # (T, B, S): the state before t
            if self.state_size > self.config.n_recurrent:  # the LSTM's state holds its cell too
                prev = prev[..., : self.config.n_recurrent]
        return tf.transpose(prev, [1, 0, 2]), last  # u_prev (B, T, n_u)

    def biases_from_u(self, u_prev: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """u_{t-1} (..., n_u) -> bv_t (..., n_v), bh_t (..., n_h)."""
        return self.bv + _dot(u_prev, self.Wuv), self.bh + _dot(u_prev, self.Wuh)

    def conditional_biases(self, v, state0=None) -> tuple[tf.Tensor, tf.Tensor]:
        """Each frame's RBM biases from the previous state: bv + u_{t-1} Wuv, bh + u_{t-1} Wuh.

        v: (B, T, n_v) 0/1; state0 as in `run_rnn`. Returns bv_t (B, T, n_v) and
        bh_t (B, T, n_h), float32. Frame t's biases depend on v_0..v_{t-1} only.
        """
        u_prev, _ = self.run_rnn(v, state0)
        return self.biases_from_u(u_prev)

    # --- training -------------------------------------------------------------

    def cd_loss(self, v, mask, k: int, seed: Seed, dropout: float = 0.0, pool: NoisePool | None = None) -> tf.Tensor:
        """CD-k cost: mean over real frames of F(v_t) - F(v~_t), a float32 scalar.

        v: (B, T, n_v) 0/1 (bool or float), mask: (B, T), 1 for real frames and 0 for
        padding. Padding must come after each sequence's real frames (the RNN reads every
        frame, so a zero inside a sequence would still feed it). k: Gibbs steps (Python int).
        Only real frames are sampled and scored (`tf.boolean_mask`), so padding costs nothing
        and cannot change the result. Gradients reach every variable through the biases;
        the Gibbs chain is held constant. Not XLA-compilable (data-dependent shapes); plain
        `tf.function` is the fast path on CPU. NaN if the mask has no real frame.
        dropout (a Python float in [0, 1), training only): the probability of zeroing each
        note of the history the RNN reads and each unit of u_{t-1} the biases read, with the
        survivors scaled by 1 / (1 - dropout) so that nothing changes at evaluation. The
        frame being scored is never dropped. 0 leaves the cost exactly as without it.
        pool: where the chain's noise comes from (`gibbs_chain`); None draws it from `seed`.
        """
        v = tf.cast(v, tf.float32)  # (B, T, n_v)
        real = tf.cast(mask, tf.float32) > 0.5  # (B, T)
        seed = _as_seed(seed)
        history = _dropout(v, dropout, tf.random.experimental.stateless_fold_in(seed, 1))
        u_prev, _ = self.run_rnn(history)  # (B, T, n_u): u_{t-1} for every frame
        # Keep the N real frames BEFORE projecting to biases: padding can be half the batch.
        v_r, u_r = tf.boolean_mask(v, real), tf.boolean_mask(u_prev, real)  # (N, n_v), (N, n_u)
        u_r = _dropout(u_r, dropout, tf.random.experimental.stateless_fold_in(seed, 2))
        bv_r, bh_r = self.biases_from_u(u_r)  # (N, n_v), (N, n_h)
        return self._cd_cost(v_r, bv_r, bh_r, k, seed, pool)

    @property
    def recurrent_variables(self) -> tuple[tf.Variable, ...]:
        """The RNN's own variables (recurrence and u0): what RNN pretraining hands on."""
        return tuple(getattr(self, n) for n in self._names if n not in ("W", "bv", "bh", "Wuv", "Wuh"))

    def independent_loss(self, v, mask, out_W, out_b) -> tf.Tensor:
        """Cross-entropy, in nats per real frame, of an RNN with independent sigmoid outputs.

        The paper's RNN pretraining: the same recurrence predicts v_t through the logits
        out_b + u_{t-1} out_W (out_W (n_u, n_v), out_b (n_v,): a temporary output layer),
        i.e. the RNN-RBM with no hidden units. v, mask as in `cd_loss`.
        """
        v = tf.cast(v, tf.float32)
        real = tf.cast(mask, tf.float32) > 0.5
        u_prev, _ = self.run_rnn(v)
        v_r, u_r = tf.boolean_mask(v, real), tf.boolean_mask(u_prev, real)  # (N, n_v), (N, n_u)
        logits = out_b + _dot(u_r, out_W)
        return tf.reduce_mean(tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=v_r, logits=logits), axis=-1))

    def rbm_pretrain_loss(self, v, k: int, seed: Seed) -> tf.Tensor:
        """CD-k cost of the static RBM (W, bv, bh) on independent frames, for pretraining.

        v: (N, n_v) 0/1 frames. Returns the float32 scalar mean of F(v) - F(v~).
        Only W, bv and bh get gradients.
        """
        v = tf.cast(v, tf.float32)  # (N, n_v)
        return self._cd_cost(v, self.bv, self.bh, k, seed)

    def _cd_cost(self, v, bv, bh, k: int, seed: Seed, pool: NoisePool | None = None) -> tf.Tensor:
        """mean(F(v) - F(v~)) with v~ from k Gibbs steps started at v; v (N, n_v)."""
        sg = tf.stop_gradient  # the chain is a constant: no tape, no back-prop through it
        vW = _dot(v, self.W)  # (N, n_h): the data's free energy and the chain's first step share it
        v_neg, _ = gibbs_chain(v, sg(self.W), sg(bv), sg(bh), k, seed, pool, v0W=sg(vW))  # (N, n_v)
        v_neg = sg(v_neg)
        return tf.reduce_mean(
            free_energy(v, self.W, bv, bh, vW) - free_energy(v_neg, self.W, bv, bh)
        )

    # --- generation -----------------------------------------------------------

    def sample_chunk(self, state, noise) -> tuple[tf.Tensor, tf.Tensor]:
        """Sample C frames after `state`, each by k Gibbs steps from v = 0 (see module doc).

        state: (B, S) float32; noise: (C, k, B, n_h + n_v) uniforms in [0, 1), the hidden
        layer's in the first n_h columns. Returns (frames (B, C, n_v) float32 0/1, the state
        after the last frame (B, S)). Deterministic given its inputs. The frame and Gibbs
        loops are `tf.while_loop`s: compiled (as in `generate`) they run without Python.
        """
        state = tf.convert_to_tensor(state, tf.float32)
        n_c, k, n_b = noise.shape[:3]
        n_v, n_h, n_u = self.config.n_visible, self.config.n_hidden, self.config.n_recurrent
        frames = tf.TensorArray(tf.float32, size=n_c, element_shape=(n_b, n_v))

        def frame(t, state, frames):
            bv_t, bh_t = self.biases_from_u(state[:, :n_u])  # from u_{t-1}: (B, n_v), (B, n_h)

            def gibbs(s, v):
                u = noise[t, s]  # (B, n_h + n_v)
                return s + 1, gibbs_step(v, self.W, bv_t, bh_t, u[:, :n_h], u[:, n_h:])[0]

            _, v_t = tf.while_loop(
                lambda s, _: s < k, gibbs, (tf.constant(0), tf.zeros([n_b, n_v])),
                maximum_iterations=k,
            )  # fmt: skip
            state = self._cell(state, self._input_projection(v_t))  # u_t from the sample
            return t + 1, state, frames.write(t, v_t)

        _, state, frames = tf.while_loop(
            lambda t, *_: t < n_c, frame, (tf.constant(0), state, frames),
            maximum_iterations=n_c,
        )  # fmt: skip
        return tf.transpose(frames.stack(), [1, 0, 2]), state  # (B, C, n_v), (B, S)

    def generate(
        self, n_samples: int, n_steps: int, k: int, seed: Seed, primer=None,
        compiled: bool = True,
    ) -> np.ndarray:  # fmt: skip
        """Sample n_samples independent sequences of n_steps new frames, in one batch.

        k: Gibbs steps per frame (the authors use 25). primer: optional (P, n_v) bool roll;
        the RNN reads it first (teacher forcing, no sampling) and every sample continues
        after it. The output EXCLUDES the primer: prepend it yourself to hear both.
        Returns (n_samples, n_steps, n_v) bool. Same (seed, n_samples, k) -> same output,
        and a longer run extends a shorter one (frame t's noise does not depend on n_steps).

        Frames are made in chunks of C (see `_chunk_frames`): the chunk's uniforms come
        from `noise.uniform16`, then `sample_chunk` runs as one XLA program, compiled once
        per (n_samples, k) and reused for any n_steps, seed or primer. compiled=False runs
        the same code eagerly (slow; for tests and debugging).
        """
        for name, value in (("n_samples", n_samples), ("n_steps", n_steps), ("k", k)):
            check_positive_int(name, value)
        seed = _as_seed(seed)
        cfg = self.config
        state = self.initial_state(n_samples)  # (B, S)
        if primer is not None:
            primer = np.asarray(primer)
            if primer.ndim != 2 or primer.shape[1] != cfg.n_visible or len(primer) < 1:
                raise ValueError(
                    f"primer must be a (P, {cfg.n_visible}) piano roll with P >= 1, "
                    f"but got shape {primer.shape}."
                )
            primer = tf.constant(primer[None].astype(np.float32))  # (1, P, n_v)
            # one relaxed trace for any primer length (XLA would compile once per length)
            run_rnn = self._compiled("run_rnn", reduce_retracing=True) if compiled else self.run_rnn
            state = tf.tile(run_rnn(primer, state[:1])[1], [n_samples, 1])  # (B, S)
        n_c = _chunk_frames(n_samples, k, cfg.n_visible + cfg.n_hidden)
        next_chunk = self._compiled("_next_chunk") if compiled else self._next_chunk
        chunks = []
        for c in range(-(-n_steps // n_c)):  # ceil: the last chunk is trimmed
            frames, state = next_chunk(state, seed, tf.constant(c), n_c, k, xla=compiled)
            chunks.append(frames.numpy() > 0.5)  # (B, C, n_v)
        return np.concatenate(chunks, axis=1)[:, :n_steps]

    def _next_chunk(self, state, seed, index, n_c: int, k: int, xla: bool):
        """Chunk `index` of `generate`: its (C, k, B, n_h + n_v) uniforms (`noise.uniform16`,
        drawn outside XLA), then `sample_chunk`, XLA-compiled if `xla`."""
        shape = (n_c, k, state.shape[0], self.config.n_hidden + self.config.n_visible)
        noise = uniform16(shape, tf.random.experimental.stateless_fold_in(seed, index))
        sample = self._compiled("sample_chunk", jit_compile=True) if xla else self.sample_chunk
        return sample(state, noise)  # (B, C, n_v), (B, S)

    def _compiled(self, method: str, **options) -> Callable:
        """`tf.function(method, **options)`, made once per model and method, then cached."""
        if method not in self._compiled_fns:
            self._compiled_fns[method] = tf.function(getattr(self, method), **options)
        return self._compiled_fns[method]


def _chunk_frames(n_samples: int, k: int, n_units: int) -> int:
    """Frames per generation chunk: as many as fit ~8 MB of uniforms, between 1 and 64."""
    return max(1, min(64, (2 << 20) // (k * n_samples * n_units)))


# -----------------------------------------------------------------------------
# The RBM of every frame


def conditional_rbms(model: RnnRbm, rolls: list[np.ndarray], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The RBM of every frame given its true history.

    rolls: sequences (T_i, n_v) bool. Returns v (N, n_v) bool, bv (N, n_v), bh (N, n_h)
    float32, N = sum T_i, frames in sequence order.
    """
    n_v = model.config.n_visible
    if not hasattr(model, "_biases_compiled"):  # one trace for every batch shape
        model._biases_compiled = tf.function(
            model.conditional_biases, input_signature=[tf.TensorSpec((None, None, n_v), tf.float32)]
        )
    vs, bvs, bhs = [], [], []
    for i in range(0, len(rolls), batch_size):
        v, mask = pad_batch(rolls[i : i + batch_size])
        bv, bh = model._biases_compiled(v)
        real = mask > 0.5
        vs.append(v[real] > 0.5)
        bvs.append(bv.numpy()[real])
        bhs.append(bh.numpy()[real])
    return np.concatenate(vs), np.concatenate(bvs), np.concatenate(bhs)


# -----------------------------------------------------------------------------
# Devices


def configure_devices() -> str:
    """Turn on memory growth for every visible GPU; return a one-line device summary.

    Call it before any TF op runs: afterwards TF cannot change GPU settings, and this only
    warns (the process then keeps TF's default of reserving all GPU memory). On a CPU-only
    machine it changes nothing and just reports the CPUs.
    """
    gpus = tf.config.list_physical_devices("GPU")
    growth = []
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            growth.append(gpu.name)
        except RuntimeError as e:  # TF raises this once devices are initialised
            warnings.warn(
                f"Could not enable memory growth on {gpu.name} ({e}); TensorFlow will "
                "reserve all its memory. Call configure_devices() before any TF op.",
                stacklevel=2,
            )
    cpus = tf.config.list_physical_devices("CPU")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "auto"
    gpu_text = f"{len(gpus)} ({len(growth)} with memory growth)" if gpus else "none"
    return (
        f"GPUs: {gpu_text}; CPU devices: {len(cpus)} ({os.cpu_count()} cores, "
        f"intra-op threads: {threads})"
    )


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnn", choices=RNN_TYPES, default="tanh")
    args = parser.parse_args(argv)
    print(configure_devices())
    model = RnnRbm(ModelConfig(rnn=args.rnn), seed=0)
    for name, value in model.to_params().items():
        print(f"{name:8s} {str(value.shape):12s} std {value.std():.4f}")


if __name__ == "__main__":
    _main()
