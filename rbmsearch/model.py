"""The RNN-RBM of Boulanger-Lewandowski, Bengio & Vincent, in TensorFlow 2.

    python -m rbmsearch.model [--rnn tanh|lstm|gru]   # devices and parameter shapes (loads TensorFlow)

Reference: N. Boulanger-Lewandowski, Y. Bengio, P. Vincent, "Modeling Temporal Dependencies
in High-Dimensional Sequences: Application to Polyphonic Music Generation and
Transcription", ICML 2012 (sections 3-4). This module holds the model's math only: it reads
and writes no files, and importing it has no side effects (no TF op runs, no device is
touched). Its frame-wise RBM functions (free energy, Gibbs chains) are in `rbmsearch.rbm`, the
tanh RNN's loop and gradient in `rbmsearch.recurrence`. `train` fits it, `render` samples from
it, the evaluation code scores it.

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
scan, and its two loops run `recurrence.RNN_CHUNK` steps an iteration. Generation is sequential, so there
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
from rbmsearch.noise import NoisePool, uniform16
from rbmsearch.rbm import RNG_ALG, Seed, as_seed, dot, free_energy, gibbs_chain, gibbs_step
from rbmsearch.recurrence import tanh_recurrence

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
]


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


def _dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Inverted dropout: zero each entry with probability `rate`, scale the rest by 1/(1-rate)."""
    if rate == 0:
        return x
    keep = tf.random.stateless_uniform(tf.shape(x), seed=seed, alg=RNG_ALG) >= rate
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
                    stddev=config.init_std, alg=RNG_ALG,
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
            return dot(v, self.Wvu) + self.bu  # bu + v_t Wvu
        p = self.config.rnn
        return dot(v, getattr(self, f"{p}_Wx")) + getattr(self, f"{p}_b")

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
            prev, last = tanh_recurrence(x, state0, tf.convert_to_tensor(self.Wuu))  # (T, B, n_u), (B, n_u)
        else:
            states = tf.scan(self._cell, x, initializer=state0)  # (T, B, S), the only serial part; not in chunks: autodiff of them was slower (docs/results.md, 10.9)
            prev, last = tf.concat([state0[None], states[:-1]], axis=0), states[-1]  # (T, B, S): the state before t
            if self.state_size > self.config.n_recurrent:  # the LSTM's state holds its cell too
                prev = prev[..., : self.config.n_recurrent]
        return tf.transpose(prev, [1, 0, 2]), last  # u_prev (B, T, n_u)

    def biases_from_u(self, u_prev: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """u_{t-1} (..., n_u) -> bv_t (..., n_v), bh_t (..., n_h)."""
        return self.bv + dot(u_prev, self.Wuv), self.bh + dot(u_prev, self.Wuh)

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
        seed = as_seed(seed)
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
        logits = out_b + dot(u_r, out_W)
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
        vW = dot(v, self.W)  # (N, n_h): the data's free energy and the chain's first step share it
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
        seed = as_seed(seed)
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
