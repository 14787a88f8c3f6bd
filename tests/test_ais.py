"""rbmsearch.ais: AIS and reverse AIS (RAISE) against exact enumeration, exact log Z against brute force over
(v, h), normalisation of frame log-likelihoods, annealed note marginals, the pseudo-log-likelihood
monitor, eager/graph equality, input validation and the self-check CLI. (The accuracy formulas
themselves: test_accuracy.py.)"""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from rbmsearch.accuracy import expected_counts, expected_frame_accuracy, pooled_accuracy
from rbmsearch.ais import (
    MAX_EXACT_HIDDEN,
    ais_log_z,
    ais_run,
    annealed_marginals,
    beta_schedule,
    exact_log_z,
    frame_log_likelihood,
    free_energy,
    monitor_cost,
    pseudo_log_likelihood,
    raise_run,
)


def random_rbm(
    seed: int, n_v: int, n_h: int, n_frames: int, w_std: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conditional RBM with shared W (n_v, n_h) and per-frame biases (N, n_v), (N, n_h).

    Visible biases around -1.5 give sparse, piano-roll-like frames (~20% notes on).
    """
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, w_std, (n_v, n_h))
    bv = rng.normal(-1.5, 0.5, (n_frames, n_v))
    bh = rng.normal(-0.5, 0.5, (n_frames, n_h))
    return W, bv, bh


def all_binary(n: int) -> np.ndarray:
    """(2**n, n) float64 array of every binary vector of length n."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


@pytest.fixture(scope="module")
def small_rbm():
    """n_v=20, n_h=10, 8 frames, W std 0.5, and its exact log Z (N,)."""
    W, bv, bh = random_rbm(0, 20, 10, 8, 0.5)
    return W, bv, bh, exact_log_z(W, bv, bh)


# ---------------------------------------------------------------------------------------
# AIS
# ---------------------------------------------------------------------------------------


def test_ais_matches_exact_enumeration(small_rbm):
    W, bv, bh, exact = small_rbm
    result = ais_run(W, bv, bh, n_runs=100, n_betas=1000, seed=0)
    err = np.abs(result.log_z - exact)
    assert result.log_z.shape == (8,) and result.log_z.dtype == np.float64
    assert err.mean() < 0.02, err
    assert err.max() < 0.05, err
    # The frames really differ, so a per-frame mix-up could not pass the check above.
    assert np.ptp(exact) > 1.0
    ess = result.effective_sample_size()
    assert np.all((ess >= 1.0) & (ess <= 100.0 + 1e-9))
    assert ess.min() > 90.0  # 1000 betas on this model: weights are nearly uniform


def test_ais_log_z_with_uniform_base_and_uneven_batches(small_rbm):
    # A uniform base exercises the v.(bv - b_A) increment and log Z_A = n_v log 2 + n_h log 2;
    # batch_size=3 on 8 frames leaves an uneven last batch.
    W, bv, bh, exact = small_rbm
    est = ais_log_z(W, bv, bh, n_betas=2000, batch_size=3, base_bv=np.zeros(20), seed=1)
    assert np.abs(est - exact).mean() < 0.05
    result = ais_run(W, bv, bh, n_betas=3, base_bv=np.zeros(20))
    np.testing.assert_allclose(result.log_z_base, (20 + 10) * np.log(2.0))


def test_more_betas_reduce_error_and_weight_variance():
    W, bv, bh = random_rbm(2, 30, 16, 8, 1.0)  # strong weights: annealing matters
    exact = exact_log_z(W, bv, bh)
    few = ais_run(W, bv, bh, n_betas=20, seed=0)
    many = ais_run(W, bv, bh, n_betas=2000, seed=0)
    err_few = np.abs(few.log_z - exact).mean()
    err_many = np.abs(many.log_z - exact).mean()
    var_few = few.log_weights.var(axis=1).mean()
    var_many = many.log_weights.var(axis=1).mean()
    assert err_many < 0.05
    assert err_many < err_few / 3, (err_few, err_many)
    assert var_many < var_few / 20, (var_few, var_many)


def test_eager_and_graph_agree_and_seed_is_deterministic(small_rbm):
    W, bv, bh, _ = small_rbm
    kwargs = dict(n_runs=10, n_betas=30, seed=7, batch_size=5)
    eager = ais_run(W, bv, bh, mode="eager", **kwargs)
    graph = ais_run(W, bv, bh, mode="graph", **kwargs)
    np.testing.assert_array_equal(eager.log_weights, graph.log_weights)
    np.testing.assert_array_equal(eager.log_z, graph.log_z)
    again = ais_run(W, bv, bh, mode="graph", **kwargs)
    np.testing.assert_array_equal(again.log_weights, graph.log_weights)
    other = ais_run(W, bv, bh, mode="graph", **{**kwargs, "seed": 8})
    assert not np.array_equal(other.log_weights, graph.log_weights)


def test_xla_mode_is_accurate(small_rbm):
    # XLA draws a different Philox stream, so only the estimate (not the bits) is compared.
    W, bv, bh, exact = small_rbm
    est = ais_log_z(W, bv, bh, n_betas=1000, mode="xla")
    assert np.abs(est - exact).mean() < 0.05


def model_frames(W, bv, bh, steps: int = 3000) -> np.ndarray:
    """One frame per RBM from a long Gibbs chain: frames typical of the model, as held-out
    data are of a good one."""
    import tensorflow as tf

    from rbmsearch.rbm import long_gibbs_chain

    chain = tf.function(lambda: long_gibbs_chain(tf.zeros(bv.shape), W, bv, bh, steps, tf.constant([1, 2], tf.int64)))
    return chain().numpy()


def test_raise_brackets_exact_log_z_from_the_other_side_and_converges():
    """A sharp RBM (W std 3): with few temperatures AIS's log Z is far too low and RAISE's far
    too high (NLL too good and too bad); with many both are within 0.05 of exact on average."""
    W, bv, bh = random_rbm(3, 30, 12, 16, 3.0)
    exact = exact_log_z(W, bv, bh)
    v = model_frames(W, bv, bh)
    few_ais = ais_run(W, bv, bh, n_betas=10).log_z
    few_raise = raise_run(W, bv, bh, v, n_betas=10).log_z
    assert np.mean(few_ais - exact) < -0.5 and np.mean(few_raise - exact) > 1.0
    many_ais = ais_run(W, bv, bh, n_betas=1000).log_z
    many_raise = raise_run(W, bv, bh, v, n_runs=30, n_betas=3000).log_z
    assert abs(np.mean(many_ais - exact)) < 0.05 and abs(np.mean(many_raise - exact)) < 0.05
    # Fewer runs only make RAISE more conservative: its log of a mean of fewer weights.
    assert np.mean(raise_run(W, bv, bh, v, n_runs=1, n_betas=100).log_z) > np.mean(raise_run(W, bv, bh, v, n_runs=50, n_betas=100).log_z)


def test_raise_is_exact_for_a_weak_rbm_and_deterministic(small_rbm):
    W, bv, bh, exact = small_rbm
    v = model_frames(W, bv, bh)
    result = raise_run(W, bv, bh, v, n_runs=20, n_betas=500, batch_size=3)
    np.testing.assert_allclose(result.log_z, exact, atol=0.05)
    assert result.log_weights.shape == (8, 20) and np.all(result.effective_sample_size() > 10)
    eager = raise_run(W, bv, bh, v, n_runs=3, n_betas=20, mode="eager", seed=4)
    graph = raise_run(W, bv, bh, v, n_runs=3, n_betas=20, mode="graph", seed=4)
    np.testing.assert_array_equal(eager.log_weights, graph.log_weights)
    assert not np.array_equal(graph.log_z, raise_run(W, bv, bh, v, n_runs=3, n_betas=20, seed=5).log_z)
    with pytest.raises(ValueError, match="v"):
        raise_run(W, bv, bh, v[:3])


def exact_note_marginals(W, bv, bh) -> np.ndarray:
    """p(v_i = 1) of each frame's RBM by enumerating its hidden states: (N, n_v)."""
    hs = all_binary(W.shape[1])  # (H, n_h)
    vis = bv[:, None, :] + (hs @ W.T)[None]  # (N, H, n_v)
    log_ph = bh @ hs.T + softplus(vis).sum(-1)  # (N, H), unnormalised log p(h)
    ph = np.exp(log_ph - log_ph.max(axis=1, keepdims=True))
    ph /= ph.sum(axis=1, keepdims=True)
    return np.einsum("nh,nhi->ni", ph, 1.0 / (1.0 + np.exp(-vis)))


def test_annealed_accuracy_matches_the_exact_expectation_where_gibbs_is_stuck():
    """Sticky RBMs (hidden unit i copies note i, so every note is bistable; p(note) ~ 1/2):
    AIS's weighted final states give the exact note marginals and expected accuracy (from
    enumerating the hidden units), where Gibbs chains from silence stay near silence."""
    import tensorflow as tf

    from rbmsearch.rbm import long_gibbs_chain

    rng = np.random.default_rng(0)
    n, frames = 12, 40
    W, bv, bh = 10.0 * np.eye(n), rng.normal(-5, 0.5, (frames, n)), rng.normal(-5, 0.5, (frames, n))
    truth = (rng.random((frames, n)) < 0.3).astype(np.float32)
    m = exact_note_marginals(W, bv, bh)
    expected = np.stack([(m * truth).sum(1), (m * (1 - truth)).sum(1), ((1 - m) * truth).sum(1)], axis=1).sum(0)
    exact = expected[0] / expected.sum()
    marginals = np.zeros((frames, n))

    def weigh(frames, states, log_weights):
        marginals[frames] = annealed_marginals(states, log_weights)

    ais_run(W, bv, bh, n_runs=100, n_betas=1000, batch_size=16, on_states=weigh)
    assert pooled_accuracy(expected_counts(truth, marginals)) == pytest.approx(exact, abs=0.01)
    chain = tf.function(lambda seed: long_gibbs_chain(tf.zeros(bv.shape), W, bv, bh, 20, seed))
    gibbs = np.stack([chain(tf.constant([9, s], tf.int64)).numpy() for s in range(20)]) > 0.5
    assert exact - expected_frame_accuracy(truth, gibbs) > 0.05
    # Each marginal from 100 weighted runs is noisy (0.05 off on average), the chains' far worse.
    assert np.abs(marginals - m).mean() < 0.08
    assert np.abs(gibbs.mean(0) - m).mean() > 0.2


def test_annealed_marginals_by_hand():
    """The weighted mean of AIS's final states, and the expected counts it gives (rbmsearch.accuracy)."""
    truth = np.array([[1, 1, 0, 0]], bool)
    states = np.array([[[1, 0, 0, 0], [1, 1, 1, 1]]], bool)  # TP FP FN: (1, 0, 1) and (2, 2, 0)
    marginals = annealed_marginals(states, np.log([[1.0, 1.0]]))
    np.testing.assert_allclose(marginals, [[1.0, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(expected_counts(truth, marginals), [[1.5, 1.0, 0.5]])  # the two runs' mean
    assert pooled_accuracy(expected_counts(truth, marginals)) == pytest.approx(1.5 / 3.0)
    marginals = annealed_marginals(states, np.array([[0.0, -50.0]]))  # the first run only
    np.testing.assert_allclose(marginals, [[1.0, 0.0, 0.0, 0.0]], atol=1e-15)
    assert pooled_accuracy(expected_counts(truth, marginals)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="log_weights"):
        annealed_marginals(states, np.zeros((1, 3)))


def test_beta_schedules():
    np.testing.assert_allclose(beta_schedule(5), [0.0, 0.25, 0.5, 0.75, 1.0])
    betas = beta_schedule(14501, "three_segment")
    assert betas.shape == (14501,) and betas[0] == 0.0 and betas[-1] == 1.0
    assert np.all(np.diff(betas) > 0)
    # Salakhutdinov & Murray (2008): 500 / 4000 / 10000 steps on the three segments.
    assert np.sum(betas < 0.5) == 500
    assert np.sum((betas >= 0.5) & (betas < 0.9)) == 4000
    small = beta_schedule(4, "three_segment")
    np.testing.assert_allclose(small, [0.0, 0.5, 0.9, 1.0])


# ---------------------------------------------------------------------------------------
# Exact enumeration and log-likelihood
# ---------------------------------------------------------------------------------------


def test_exact_log_z_matches_brute_force_over_v_and_h():
    W, bv, bh = random_rbm(3, 6, 4, 3, 1.0)
    vs, hs = all_binary(6), all_binary(4)  # (64, 6), (16, 4)
    expected = []
    for t in range(3):
        neg_energy = (vs @ bv[t])[:, None] + (hs @ bh[t])[None, :] + vs @ W @ hs.T  # (64, 16)
        expected.append(np.log(np.exp(neg_energy).sum()))
    np.testing.assert_allclose(exact_log_z(W, bv, bh), expected, rtol=0, atol=1e-10)


def test_exact_log_z_chunks_over_many_hidden_configs():
    # n_h = 16 spans several hidden chunks; compare with enumeration over v instead.
    W, bv, bh = random_rbm(4, 8, 16, 2, 0.5)
    vs = all_binary(8)  # (256, 8)
    expected = [
        np.logaddexp.reduce(vs @ bv[t] + softplus(vs @ W + bh[t]).sum(axis=1)) for t in range(2)
    ]
    np.testing.assert_allclose(exact_log_z(W, bv, bh), expected, rtol=0, atol=1e-9)


def test_exact_log_z_refuses_too_many_hidden_units():
    W, bv, bh = random_rbm(0, 3, MAX_EXACT_HIDDEN + 1, 1, 0.1)
    with pytest.raises(ValueError, match=r"at most 20 hidden units.*n_h=21.*ais_log_z"):
        exact_log_z(W, bv, bh)


def test_frame_log_likelihood_normalises_over_all_visible_vectors():
    W, bv, bh = random_rbm(5, 6, 4, 3, 1.0)
    vs = all_binary(6)  # (64, 6)
    log_z = exact_log_z(W, bv, bh)
    for t in range(3):
        rep = lambda a: np.repeat(a[t : t + 1], len(vs), axis=0)  # noqa: E731
        ll = frame_log_likelihood(vs, W, rep(bv), rep(bh), np.full(len(vs), log_z[t]))
        assert ll.shape == (64,) and np.all(ll < 0)
        assert abs(np.exp(ll).sum() - 1.0) < 1e-6


def test_free_energy_matches_formula():
    W, bv, bh = random_rbm(6, 5, 3, 4, 1.0)
    v = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 1]], bool)
    expected = -(v * bv).sum(1) - softplus(v @ W + bh).sum(1)
    np.testing.assert_allclose(free_energy(v, W, bv, bh), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Pseudo-log-likelihood monitor
# ---------------------------------------------------------------------------------------


def brute_pll(v: np.ndarray, W: np.ndarray, bv: np.ndarray, bh: np.ndarray) -> np.ndarray:
    """sum_i log p(v_i | v_-i), with p(v_i | v_-i) = e^-F(v) / (e^-F(v) + e^-F(v flipped at i))."""

    def fe(x: np.ndarray, t: int) -> float:
        return -(x @ bv[t]) - softplus(x @ W + bh[t]).sum()

    out = []
    for t, row in enumerate(v.astype(float)):
        total = 0.0
        for i in range(len(row)):
            flip = row.copy()
            flip[i] = 1.0 - flip[i]
            total += -fe(row, t) - np.logaddexp(-fe(row, t), -fe(flip, t))
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("w_std", [0.3, 3.0])  # 3.0 exercises the |d| >= 1 fallback
def test_pseudo_log_likelihood_matches_brute_force(w_std):
    W, bv, bh = random_rbm(7, 7, 5, 4, w_std)
    v = np.random.default_rng(8).random((4, 7)) < 0.3
    expected = brute_pll(v, W, bv, bh)
    pll = pseudo_log_likelihood(v, W, bv, bh)
    np.testing.assert_allclose(pll, expected, rtol=0, atol=1e-9)
    assert np.all(pll < 0)
    assert monitor_cost(v, W, bv, bh) == pytest.approx(-expected.mean(), abs=1e-9)


def test_pseudo_log_likelihood_float32_agrees_with_float64():
    # A trained-size model (88 x 150): the fast single-precision monitor path stays close.
    W, bv, bh = random_rbm(3, 88, 150, 50, 0.1)
    v = np.random.default_rng(4).random((50, 88)) < 0.05
    exact = pseudo_log_likelihood(v, W, bv, bh)
    fast = pseudo_log_likelihood(v, W, bv, bh, np.float32)
    np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-3)
    assert abs(fast.mean() - exact.mean()) < 1e-4
    with pytest.raises(ValueError, match="float32 or np.float64"):
        pseudo_log_likelihood(v, W, bv, bh, np.int32)


def test_monitor_cost_equals_nll_only_for_independent_notes():
    W, bv, bh = random_rbm(9, 6, 4, 5, 1.0)
    v = np.random.default_rng(1).random((5, 6)) < 0.3

    def nll(W: np.ndarray) -> float:
        return float(-frame_log_likelihood(v, W, bv, bh, exact_log_z(W, bv, bh)).mean())

    # W = 0: notes are independent, p(v_i | v_-i) = p(v_i), so -PLL is exactly the NLL.
    zero = np.zeros_like(W)
    assert monitor_cost(v, zero, bv, bh) == pytest.approx(nll(zero), abs=1e-9)
    # Coupled notes: the monitor is a different number, not an NLL estimate.
    assert abs(monitor_cost(v, W, bv, bh) - nll(W)) > 0.05


# ---------------------------------------------------------------------------------------
# Validation and CLI
# ---------------------------------------------------------------------------------------


def test_invalid_inputs_raise_clear_errors(small_rbm):
    W, bv, bh, _ = small_rbm
    with pytest.raises(ValueError, match=r"W to be a 2-D array of shape \(n_v, n_h\), but got .* \(20,\)"):
        ais_log_z(W[:, 0], bv, bh)
    with pytest.raises(ValueError, match=r"bv to be a 2-D .* \(20,\).*bias\[None, :\]"):
        exact_log_z(W, bv[0], bh)
    with pytest.raises(ValueError, match=r"bv of shape \(N, n_v=20\) to match W .* \(8, 19\)"):
        ais_log_z(W, bv[:, :19], bh)
    with pytest.raises(ValueError, match=r"same number of frames N.*\(8, 20\).*\(7, 10\)"):
        ais_log_z(W, bv, bh[:7])
    bad = W.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"finite values, but found 1 NaN/inf entries \(first at index \(2, 3\)\)"):
        ais_log_z(bad, bv, bh)
    with pytest.raises(ValueError, match=r">= 1 must be specified for n_runs, but got 0"):
        ais_log_z(W, bv, bh, n_runs=0)
    with pytest.raises(ValueError, match=r">= 2 must be specified for n_betas, but got 1"):
        ais_log_z(W, bv, bh, n_betas=1)
    with pytest.raises(ValueError, match=r"schedule to be 'linear' or 'three_segment'"):
        ais_log_z(W, bv, bh, schedule="cosine")
    with pytest.raises(ValueError, match=r"mode to be one of \['eager', 'graph', 'xla'\]"):
        ais_log_z(W, bv, bh, mode="jit")
    with pytest.raises(ValueError, match=r"base_bv of shape \(n_v=20,\) or \(N=8, n_v=20\)"):
        ais_log_z(W, bv, bh, base_bv=np.zeros(19))
    with pytest.raises(ValueError, match=r"integer must be specified for seed, but got 1.5"):
        ais_log_z(W, bv, bh, seed=1.5)
    v = np.zeros((8, 20))
    with pytest.raises(ValueError, match=r"log_z of shape \(N=8,\) to match bv, but got shape \(7,\)"):
        frame_log_likelihood(v, W, bv, bh, np.zeros(7))
    with pytest.raises(ValueError, match=r"v to contain only 0 and 1"):
        monitor_cost(v + 2, W, bv, bh)
    with pytest.raises(ValueError, match=r"v of shape \(N=8, n_v=20\) to match bv, but got shape \(8, 21\)"):
        free_energy(np.zeros((8, 21)), W, bv, bh)


@pytest.mark.slow
def test_self_check_cli_runs():
    out = subprocess.run(
        [sys.executable, "-m", "rbmsearch.ais"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mean |error|" in out.stdout


def test_chain_marginals_come_close_to_the_exact_note_marginals_and_beat_the_raw_sample_mean():
    """The best guess's marginals (rbmsearch.scoring.chain_marginals): 10 mixed chains, each
    sample's p(v | h) averaged, land near the exact marginals (by enumerating the hidden units),
    well inside the error of the samples' own 0/1 average."""
    from rbmsearch.scoring import chain_marginals, sample_predictions

    W, bv, bh = (a.astype(np.float32) for a in random_rbm(3, 30, 12, 16, 1.0))
    exact = exact_note_marginals(W.astype(np.float64), bv.astype(np.float64), bh.astype(np.float64))
    samples = sample_predictions(W, bv, bh, 10, 1000, seed=0)
    q = chain_marginals(W, bv, bh, samples, seed=0)
    assert q.shape == exact.shape and q.dtype == np.float64 and np.all((q > 0) & (q < 1))
    error, raw = np.abs(q - exact).mean(), np.abs(samples.mean(0) - exact).mean()
    assert error < 0.06 and error < 0.7 * raw, (error, raw)  # measured: 0.037 against 0.083


def test_a_fitted_base_still_brackets_exact_log_z_and_needs_fewer_temperatures():
    """The evaluation's base (rbmsearch.scoring.fitted_base, from model samples) on the sharp
    RBM above: AIS stays low and RAISE high of the exact log Z, both meet it with many
    temperatures, and at few temperatures AIS is much closer than from the frames' own biases."""
    from rbmsearch.scoring import chain_marginals, fitted_base, sample_predictions

    W, bv, bh = random_rbm(3, 30, 12, 16, 3.0)
    exact = exact_log_z(W, bv, bh)
    v = model_frames(W, bv, bh)
    W32, bv32, bh32 = (a.astype(np.float32) for a in (W, bv, bh))
    samples = sample_predictions(W32, bv32, bh32, 10, 1000, seed=0)
    base = fitted_base(bv32, chain_marginals(W32, bv32, bh32, samples, seed=0), len(samples))
    few_ais = ais_run(W, bv, bh, n_betas=10, base_bv=base).log_z
    few_raise = raise_run(W, bv, bh, v, n_betas=10, base_bv=base).log_z
    own_bv = ais_run(W, bv, bh, n_betas=10).log_z
    assert np.mean(own_bv - exact) < -0.5  # the frames' own biases: far too low, as above
    assert abs(np.mean(few_ais - exact)) < 0.2 * np.mean(exact - own_bv)  # the fitted base: close already
    assert np.mean(few_raise - exact) > 0  # RAISE still errs on its own side
    many_ais = ais_run(W, bv, bh, n_betas=1000, base_bv=base).log_z
    many_raise = raise_run(W, bv, bh, v, n_runs=30, n_betas=3000, base_bv=base).log_z
    assert abs(np.mean(many_ais - exact)) < 0.05 and abs(np.mean(many_raise - exact)) < 0.05
