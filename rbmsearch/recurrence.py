"""The paper's RNN over all frames at once, u_t = tanh(x_t + u_{t-1} Wuu), with its gradient
written out, and the loop it runs in: `tf.scan` with several steps written out per iteration.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

__all__ = ["RNN_CHUNK", "tanh_recurrence"]

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
def tanh_recurrence(x, state0, Wuu):
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
