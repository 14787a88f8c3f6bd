"""The work of training and scoring in FLOPs, and this machine's rate on that same work: the
numerators and denominators of the benchmarks' fractions (`rbmsearch.bench`).

FLOPs are those of the matrix products, 2 m k n for an (m, k) @ (k, n) product, counted
exactly as a step does them: the products of a tanh RNN-RBM's CD-k step at its real shapes,
and in the backward pass the weight gradient of every product plus the input gradient only
where the input depends on the parameters (a data frame or the constant Gibbs sample needs
none). The element-wise work (sigmoids, random draws, comparisons) is not counted: a
roofline counts the products, and the rest is what keeps a step below it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Product", "chain_matmul_gflops", "model_limit_gflops", "train_products", "train_step_flops"]


@dataclass(frozen=True)
class Product:
    """`count` products (m, k) @ (k, n); `serial`: each waits for the previous (the recurrence)."""

    what: str
    count: int
    m: int
    k: int
    n: int
    serial: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.count * self.m * self.k * self.n


def train_products(n_v: int, n_h: int, n_u: int, cd_k: int, frames: int, sequences: int, steps: int) -> list[Product]:
    """Every matrix product of one CD-k step of a tanh RNN-RBM (`RnnRbm.cd_loss` and its gradient).

    frames: the step's real frames N (the RBM's products run on those only); sequences and
    steps: the batch's B and T (the RNN reads all B x T frames, padding included).
    """
    bt = sequences * steps
    return [
        # forward: the RNN over every frame, the biases and the chain of the real frames, two free energies
        Product("input projection v Wvu", 1, bt, n_v, n_u),
        Product("recurrence u Wuu", steps, sequences, n_u, n_u, serial=True),
        Product("bias map u Wuv", 1, frames, n_u, n_v),
        Product("bias map u Wuh", 1, frames, n_u, n_h),
        Product("Gibbs v W (the first also the data's free energy's)", cd_k, frames, n_v, n_h),
        Product("Gibbs h W^T", cd_k, frames, n_h, n_v),
        Product("free energy of the chain's end v~ W", 1, frames, n_v, n_h),
        # backward: weight gradients; input gradients only where the input depends on the parameters
        Product("free energies dW", 2, n_v, frames, n_h),
        Product("bias maps dWuv, dWuh", 1, n_u, frames, n_v + n_h),
        Product("bias maps du", 1, frames, n_v + n_h, n_u),
        Product("recurrence dWuu", steps, n_u, sequences, n_u),
        Product("recurrence du", steps, sequences, n_u, n_u, serial=True),
        Product("input projection dWvu", 1, n_v, bt, n_u),
    ]


def train_step_flops(n_v: int, n_h: int, n_u: int, cd_k: int, frames: int, sequences: int, steps: int) -> int:
    """The FLOPs of one training step: the sum over `train_products`."""
    return sum(p.flops for p in train_products(n_v, n_h, n_u, cd_k, frames, sequences, steps))


def _best_seconds(run, repeats: int, best_of: int) -> float:
    """The least time per call of `run` (a compiled function returning a tensor), best of `best_of` timings."""
    run().numpy()  # trace and warm up
    best = float("inf")
    for _ in range(best_of):
        start = time.perf_counter()
        for _ in range(repeats):
            out = run()
        out.numpy()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def model_limit_gflops(products: list[Product], repeats: int = 10, best_of: int = 5) -> float:
    """This machine's rate, in GFLOP/s, on exactly `products`: the same shapes and counts, the
    serial ones one after another, nothing else in the program. The best of `best_of` timings."""
    import tensorflow as tf

    def uniform(shape, *seed):
        return tf.random.stateless_uniform(shape, seed=list(seed))

    # Distinct left operands, so that no product can be merged with another as a common subexpression.
    # A serial product's right operand is scaled so that its rows sum to about 1: the chain stays finite.
    operands = [([uniform((p.m, p.k), i, c) for c in range(1 if p.serial else p.count)], uniform((p.k, p.n), i, -1) * (2 / p.k if p.serial else 1)) for i, p in enumerate(products)]
    for p in products:
        if p.serial and p.k != p.n:
            raise ValueError(f"a serial product needs k == n, so that each output feeds the next, but {p.what} is ({p.m}, {p.k}) @ ({p.k}, {p.n}).")

    @tf.function
    def work():
        total = tf.zeros(())
        for p, (lefts, b) in zip(products, operands):
            if p.serial:  # each product's output is the next one's input
                x = lefts[0]
                for _ in range(p.count):
                    x = tf.matmul(x, b)
                total += tf.reduce_sum(x)
            else:
                total += tf.add_n([tf.reduce_sum(tf.matmul(a, b)) for a in lefts])
        return total

    return sum(p.flops for p in products) / _best_seconds(work, repeats, best_of) / 1e9


def chain_matmul_gflops(n_v: int, n_h: int, chains: int = 10_000, repeats: int = 20, best_of: int = 5) -> float:
    """This machine's rate on the evaluation's own products, (chains, n_v) @ (n_v, n_h) and
    (chains, n_h) @ (n_h, n_v), in GFLOP/s: the best of `best_of` timings."""
    return model_limit_gflops([Product("v W", 1, chains, n_v, n_h), Product("h W^T", 1, chains, n_h, n_v)], repeats, best_of)
