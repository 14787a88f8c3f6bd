"""Tests for rbmsearch.model: the RNN-RBM math, its sampling, and its compiled paths.

    python -m pytest tests/test_model.py -q      # ~30 s on 2 CPU cores

Tiny sizes throughout. Each test targets one property of the paper's model or one bug seen
in earlier implementations (per-row free energy, bias timing, init std, padding).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from rbmsearch.model import ModelConfig, RnnRbm, configure_devices
from rbmsearch.rbm import free_energy, gibbs_chain, gibbs_step, long_gibbs_chain
from rbmsearch.noise import NoisePool

TINY = dict(n_visible=6, n_hidden=5, n_recurrent=4)


def _model(rnn: str = "tanh", seed: int = 0, init_std: float = 0.3, **sizes) -> RnnRbm:
    """A tiny model with weights large enough that every path has visible effects."""
    model = RnnRbm(ModelConfig(**(TINY | sizes), rnn=rnn, init_std=init_std), seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name in ("bv", "bh", "u0"):  # non-zero biases and initial state: nothing hides
        var = getattr(model, name)
        var.assign(rng.normal(0.0, 0.5, var.shape).astype(np.float32))
    return model


def _rolls(shape, seed: int = 0, p: float = 0.4) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


# -----------------------------------------------------------------------------
# ModelConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_hidden=0), "n_hidden must be a positive int, but got 0."),
        (dict(n_visible=-3), "n_visible must be a positive int, but got -3."),
        (dict(n_recurrent=2.5), "n_recurrent must be a positive int, but got 2.5."),
        (dict(n_hidden=True), "n_hidden must be a positive int, but got True."),
        (dict(rnn="relu"), "rnn must be one of 'tanh', 'lstm', 'gru', but got 'relu'."),
        (dict(init_std=0.0), "init_std must be a positive finite float, but got 0.0."),
        (dict(init_std=float("nan")), "init_std must be a positive finite float, but got nan."),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError) as info:
        ModelConfig(**kwargs)
    assert str(info.value) == message


def test_config_defaults_are_the_papers_jsb_sizes():
    config = ModelConfig()
    assert (config.n_visible, config.n_hidden, config.n_recurrent, config.rnn) == (
        88, 150, 100, "tanh"
    )
    with pytest.raises(AttributeError):  # frozen
        config.n_hidden = 10  # type: ignore[misc]


# -----------------------------------------------------------------------------
# Parameters and initialisation


def test_to_params_names_and_shapes_for_tanh():
    params = RnnRbm(ModelConfig(**TINY), seed=0).to_params()
    n_v, n_h, n_u = 6, 5, 4
    expected = {
        "W": (n_v, n_h), "bv": (n_v,), "bh": (n_h,), "Wuv": (n_u, n_v), "Wuh": (n_u, n_h),
        "Wvu": (n_v, n_u), "Wuu": (n_u, n_u), "bu": (n_u,), "u0": (n_u,),
    }  # fmt: skip
    assert {name: value.shape for name, value in params.items()} == expected
    assert all(value.dtype == np.float32 for value in params.values())


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_gated_rnns_keep_the_rbm_and_bias_maps(rnn):
    params = RnnRbm(ModelConfig(**TINY, rnn=rnn), seed=0).to_params()
    gates = 4 if rnn == "lstm" else 3
    assert {"W", "bv", "bh", "Wuv", "Wuh", "u0"} <= set(params)
    assert params[f"{rnn}_Wx"].shape == (6, gates * 4)
    assert params[f"{rnn}_Wu"].shape == (4, gates * 4)
    assert params[f"{rnn}_b"].shape == (gates * 4,)


def test_init_std_is_the_std_not_the_mean():
    """An earlier implementation passed the mean where the std was meant."""
    params = RnnRbm(ModelConfig(), seed=3).to_params()  # W has 88 * 150 = 13,200 entries
    W = params["W"]
    assert abs(W.std() - 0.01) < 0.0005
    assert abs(W.mean()) < 0.0005  # the standard error of the mean is ~0.0001
    for name in ("Wuv", "Wuh", "Wvu", "Wuu"):
        assert abs(params[name].std() - 0.01) < 0.001, name
    for name in ("bv", "bh", "bu", "u0"):
        np.testing.assert_array_equal(params[name], 0.0)
    wide = RnnRbm(ModelConfig(init_std=0.05), seed=3).to_params()["W"]
    assert abs(wide.std() - 0.05) < 0.0025


def test_init_is_deterministic_in_the_seed():
    a, b = RnnRbm(ModelConfig(**TINY), seed=7), RnnRbm(ModelConfig(**TINY), seed=7)
    c = RnnRbm(ModelConfig(**TINY), seed=8)
    for name, value in a.to_params().items():
        np.testing.assert_array_equal(value, b.to_params()[name])
    assert not np.array_equal(a.to_params()["W"], c.to_params()["W"])
    assert not np.array_equal(a.to_params()["W"], a.to_params()["Wuh"][:, :5].T)


def test_load_params_round_trip_and_errors():
    source, target = _model(seed=1), _model(seed=2)
    target.load_params(source.to_params())
    for name, value in source.to_params().items():
        np.testing.assert_array_equal(target.to_params()[name], value)
    params = source.to_params()
    with pytest.raises(ValueError, match="must have exactly the keys"):
        target.load_params({k: v for k, v in params.items() if k != "u0"})
    with pytest.raises(ValueError, match=r"params\['W'\] must have shape \(6, 5\)"):
        target.load_params(params | {"W": np.zeros((5, 6))})


# -----------------------------------------------------------------------------
# RBM math: free energy and Gibbs sampling


def test_free_energy_is_per_row_with_per_row_biases():
    """Each row uses its own biases; `v @ bv.T` on per-row biases would mix rows."""
    rng = np.random.default_rng(0)
    n, n_v, n_h = 7, 6, 5
    v = _rolls((n, n_v))
    W = rng.normal(0, 1, (n_v, n_h)).astype(np.float32)
    bv = rng.normal(0, 1, (n, n_v)).astype(np.float32)
    bh = rng.normal(0, 1, (n, n_h)).astype(np.float32)
    expected = [
        -v[r] @ bv[r] - np.sum(np.logaddexp(0.0, bh[r] + v[r] @ W)) for r in range(n)
    ]
    np.testing.assert_allclose(free_energy(v, W, bv, bh).numpy(), expected, rtol=1e-5)
    # the same with leading (B, T) dims
    got = free_energy(v.reshape(1, n, n_v), W, bv.reshape(1, n, n_v), bh.reshape(1, n, n_h))
    np.testing.assert_allclose(got.numpy(), [expected], rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_free_energys_softplus_is_tensorflows_and_its_gradient_the_sigmoid(dtype):
    """`_softplus` (max(x, 0) + log1p(e^-|x|), the free energy's) agrees with tf.nn.softplus to a few
    units in the last place over the whole range (tf.nn.softplus drops the e^2x / 2 of log1p(e^x)
    below x = -14, ours keeps it), is exact at the extremes and keeps NaN; its gradient is
    sigmoid(x), as tf.nn.softplus's."""
    from rbmsearch.rbm import _softplus

    x = np.concatenate([np.linspace(-120, 120, 4001), [-1e30, -88.8, -1e-30, 0.0, 1e-30, 88.8, 1e30, -np.inf, np.inf, np.nan]]).astype(dtype)
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got, want = _softplus(x), tf.nn.softplus(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=8 * np.finfo(dtype).eps, atol=0)  # NaN matches NaN
    assert got.numpy()[-3:-1].tolist() == [0.0, np.inf] and got.numpy()[-4] == x.numpy()[-4]
    np.testing.assert_array_equal(tape.gradient(got, x).numpy(), tf.sigmoid(x).numpy())
    np.testing.assert_allclose(tape.gradient(got, x).numpy(), tape.gradient(want, x).numpy(), rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)


def test_free_energy_matches_brute_force_sum_over_hidden_states():
    rng = np.random.default_rng(1)
    n_v, n_h = 3, 4
    W = rng.normal(0, 1, (n_v, n_h))
    bv, bh = rng.normal(0, 1, n_v), rng.normal(0, 1, n_h)
    hs = np.array(list(itertools.product([0, 1], repeat=n_h)), dtype=np.float64)  # (16, n_h)
    vs = np.array(list(itertools.product([0, 1], repeat=n_v)), dtype=np.float64)  # (8, n_v)
    for v in vs:
        energies = -(v @ bv) - hs @ bh - hs @ (v @ W)  # E(v, h) for every h
        expected = -np.log(np.sum(np.exp(-energies)))
        got = free_energy(v[None].astype(np.float32), W.astype(np.float32),
                          bv.astype(np.float32), bh.astype(np.float32))  # fmt: skip
        np.testing.assert_allclose(got.numpy(), [expected], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chain", ["gibbs_chain", "gibbs_chain_pooled", "long_gibbs_chain"])
def test_gibbs_chain_samples_the_rbm_distribution(chain):
    """Many chains of a tiny RBM reach P(v) ∝ exp(-F(v)) (catches transposed W, swapped
    layers, or a sampler comparing the wrong way), with fresh or pooled noise."""
    rng = np.random.default_rng(2)
    n_v, n_h, n_chains = 3, 2, 20_000
    W = rng.normal(0, 1.5, (n_v, n_h)).astype(np.float32)
    bv = rng.normal(0, 1, n_v).astype(np.float32)
    bh = rng.normal(0, 1, n_h).astype(np.float32)
    vs = np.array(list(itertools.product([0, 1], repeat=n_v)), dtype=np.float32)  # (8, 3)
    logits = -free_energy(vs, W, bv, bh).numpy()
    exact = np.exp(logits - logits.max())
    exact /= exact.sum()
    v0 = np.zeros((n_chains, n_v), np.float32)
    if chain.startswith("gibbs_chain"):
        pool = NoisePool(n_v, n_h, rows=30 * n_chains) if chain.endswith("pooled") else None
        v_k, p_k = gibbs_chain(v0, W, bv, bh, k=30, seed=5, pool=pool)
        assert np.all((p_k.numpy() > 0) & (p_k.numpy() < 1))
    else:
        v_k = long_gibbs_chain(v0, W, bv, bh, k=tf.constant(30, tf.int64), seed=5)
    assert set(np.unique(v_k.numpy())) <= {0.0, 1.0}
    index = v_k.numpy().astype(int) @ (2 ** np.arange(n_v)[::-1])  # row -> state number
    freq = np.bincount(index, minlength=2**n_v) / n_chains
    np.testing.assert_allclose(freq, exact, atol=0.015)


def test_gibbs_chain_reads_the_same_noise_for_any_batch_layout_eagerly_or_compiled():
    rng = np.random.default_rng(4)
    W = rng.normal(0, 0.5, (88, 30)).astype(np.float32)
    v0 = (rng.random((3, 37, 88)) < 0.1).astype(np.float32)  # 111 rows, as a (3, 37) batch or flat
    bv, bh = rng.normal(0, 1, (3, 37, 88)).astype(np.float32), rng.normal(0, 1, 30).astype(np.float32)  # per-row and shared biases
    seed = tf.constant([9, 1], tf.int64)
    samples = []
    for pool in (None, NoisePool(88, 30, rows=500)):
        batch, p_batch = gibbs_chain(v0, W, bv, bh, k=4, seed=seed, pool=pool)
        assert batch.shape == p_batch.shape == (3, 37, 88)
        flat, p_flat = gibbs_chain(v0.reshape(111, 88), W, bv.reshape(111, 88), bh, k=4, seed=seed, pool=pool)
        np.testing.assert_array_equal(flat.numpy(), batch.numpy().reshape(111, 88))  # a row's noise is its flat index's
        np.testing.assert_array_equal(p_flat.numpy(), p_batch.numpy().reshape(111, 88))
        compiled = tf.function(lambda v0, seed: gibbs_chain(v0, W, bv, bh, k=4, seed=seed, pool=pool)[0])
        assert np.mean(compiled(tf.constant(v0), seed).numpy() == batch.numpy()) > 0.999  # only a last bit may differ
        samples.append(batch.numpy())
    assert np.mean(samples[0] != samples[1]) > 0.01  # the pool's noise is not the fresh noise of the same seed


def test_the_chain_samples_above_logistic_noise():
    """A unit is on when its pre-activation exceeds the pool's noise: the hidden layer's, seen
    through a visible unit that copies it, and the visible layer's alone."""
    pool, seed = NoisePool(1, 1, rows=1), tf.constant([0, 0], tf.int64)
    hidden, visible, starts = pool.tables(seed, 1, 1)
    noise_h, noise_v = float(hidden[starts[0, 0], 0]), float(visible[starts[1, 0], 0])
    v0, W = np.zeros((1, 1), np.float32), np.array([[10.0]], np.float32)  # an active hidden unit adds 10
    bv = np.array([noise_v - 5.0], np.float32)  # so the visible unit is on exactly when the hidden one is
    for above, want in ((0.01, 1.0), (-0.01, 0.0)):  # the hidden pre-activation just above or below its noise
        v, p_v = gibbs_chain(v0, W, bv, np.array([noise_h + above], np.float32), k=1, seed=seed, pool=pool)
        assert v.numpy().tolist() == [[want]]
        np.testing.assert_allclose(p_v.numpy(), [[1 / (1 + np.exp(-(noise_v - 5.0 + 10.0 * want)))]], rtol=1e-5)
    for above, want in ((0.01, 1.0), (-0.01, 0.0)):  # W = 0: the visible pre-activation is its bias alone
        v, _ = gibbs_chain(v0, 0 * W, np.array([noise_v + above], np.float32), np.zeros(1, np.float32), k=1, seed=seed, pool=pool)
        assert v.numpy().tolist() == [[want]]


def test_gibbs_chain_is_deterministic_in_the_seed_and_checks_k():
    W = np.ones((3, 2), np.float32) * 0.1
    v0 = np.zeros((50, 3), np.float32)
    a = gibbs_chain(v0, W, 0.0, 0.0, k=2, seed=1)[0].numpy()
    b = gibbs_chain(v0, W, 0.0, 0.0, k=2, seed=tf.constant([1, 0]))[0].numpy()
    c = gibbs_chain(v0, W, 0.0, 0.0, k=2, seed=2)[0].numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="k \\(Gibbs steps\\) must be a positive int"):
        gibbs_chain(v0, W, 0.0, 0.0, k=0, seed=1)
    with pytest.raises(ValueError, match="seed must be an int or a \\(2,\\) integer tensor"):
        gibbs_chain(v0, W, 0.0, 0.0, k=1, seed=tf.constant([1, 2, 3]))


def test_gibbs_step_compares_uniforms_below_the_probability():
    W = np.zeros((2, 3), np.float32)
    bv, bh = np.array([0.0, 0.0], np.float32), np.zeros(3, np.float32)  # p = 0.5 everywhere
    v, p_v = gibbs_step(np.zeros((1, 2), np.float32), W, bv, bh,
                        noise_h=np.full((1, 3), 0.2, np.float32),
                        noise_v=np.array([[0.49, 0.51]], np.float32))  # fmt: skip
    np.testing.assert_array_equal(v.numpy(), [[1.0, 0.0]])
    np.testing.assert_allclose(p_v.numpy(), [[0.5, 0.5]])


# -----------------------------------------------------------------------------
# RNN and conditional biases


@pytest.mark.parametrize("rnn", ["tanh", "lstm", "gru"])
def test_biases_of_frame_t_come_from_u_t_minus_1(rnn):
    """Changing v_t must not change frame t's biases (an earlier implementation used u_t,
    leaking v_t into its own distribution) but must change frame t+1's."""
    model = _model(rnn)
    v = _rolls((2, 5, 6))
    bv, bh = (x.numpy() for x in model.conditional_biases(v))
    assert bv.shape == (2, 5, 6) and bh.shape == (2, 5, 5)
    t = 2
    w = v.copy()
    w[:, t] = 1.0 - w[:, t]
    bv2, bh2 = (x.numpy() for x in model.conditional_biases(w))
    np.testing.assert_array_equal(bv2[:, : t + 1], bv[:, : t + 1])
    np.testing.assert_array_equal(bh2[:, : t + 1], bh[:, : t + 1])
    assert np.all(np.abs(bv2[:, t + 1] - bv[:, t + 1]).max(axis=-1) > 1e-4)
    assert np.all(np.abs(bh2[:, t + 1] - bh[:, t + 1]).max(axis=-1) > 1e-4)
    # frame 0 uses the learned initial state u0
    p = model.to_params()
    np.testing.assert_allclose(bv[:, 0], np.broadcast_to(p["bv"] + p["u0"] @ p["Wuv"], (2, 6)),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(bh[:, 0], np.broadcast_to(p["bh"] + p["u0"] @ p["Wuh"], (2, 5)),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_tanh_rnn_matches_the_papers_recurrence():
    model = _model("tanh")
    p = model.to_params()
    v = _rolls((1, 4, 6), seed=3)
    u, expected_bv, expected_bh = p["u0"], [], []
    for t in range(4):  # bv_t = bv + u_{t-1} Wuv, u_t = tanh(bu + v_t Wvu + u_{t-1} Wuu)
        expected_bv.append(p["bv"] + u @ p["Wuv"])
        expected_bh.append(p["bh"] + u @ p["Wuh"])
        u = np.tanh(p["bu"] + v[0, t] @ p["Wvu"] + u @ p["Wuu"])
    bv, bh = model.conditional_biases(v)
    np.testing.assert_allclose(bv.numpy()[0], expected_bv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bh.numpy()[0], expected_bh, rtol=1e-5, atol=1e-6)
    u_prev, final = model.run_rnn(v)
    np.testing.assert_allclose(final.numpy()[0], u, rtol=1e-5, atol=1e-6)
    # continuing from a state equals running the whole sequence at once
    _, half = model.run_rnn(v[:, :2])
    bv_rest, _ = model.conditional_biases(v[:, 2:], state0=half)
    np.testing.assert_allclose(bv_rest.numpy(), bv.numpy()[:, 2:], rtol=1e-5, atol=1e-6)


# -----------------------------------------------------------------------------
# CD-k training cost


@pytest.mark.parametrize("rnn", ["tanh", "lstm", "gru"])
def test_cd_loss_gradient_reaches_every_variable(rnn):
    model = _model(rnn)
    v, mask = _rolls((3, 6, 6)), np.ones((3, 6), np.float32)
    with tf.GradientTape() as tape:
        loss = model.cd_loss(v, mask, k=2, seed=0)
    assert loss.shape == () and np.isfinite(loss.numpy())
    variables = {var.name.split(":")[0]: var for var in model.trainable_variables}
    grads = dict(zip(variables, tape.gradient(loss, list(variables.values()))))
    rnn_names = {"tanh": ["Wuu", "Wvu", "bu"], "lstm": ["lstm_Wx", "lstm_Wu", "lstm_b"],
                 "gru": ["gru_Wx", "gru_Wu", "gru_b"]}[rnn]  # fmt: skip
    for name in ["W", "bv", "bh", "Wuv", "Wuh", "u0", *rnn_names]:
        assert grads[name] is not None, name
        assert np.abs(tf.convert_to_tensor(grads[name]).numpy()).max() > 1e-6, name


def test_cd_loss_ignores_padded_frames():
    model = _model()
    lengths = [5, 3]
    v = _rolls((2, 7, 6), seed=4)
    mask = (np.arange(7)[None] < np.array(lengths)[:, None]).astype(np.float32)
    loss = model.cd_loss(v, mask, k=3, seed=11).numpy()
    garbage = v.copy()
    garbage[mask == 0] = 1.0 - garbage[mask == 0]  # anything may sit in the padding
    np.testing.assert_allclose(model.cd_loss(garbage, mask, k=3, seed=11).numpy(), loss)
    # a single sequence scores the same padded or not
    alone = model.cd_loss(v[:1, :5], np.ones((1, 5), np.float32), k=3, seed=11).numpy()
    padded = model.cd_loss(v[:1], mask[:1], k=3, seed=11).numpy()
    np.testing.assert_allclose(padded, alone, rtol=1e-6)
    assert model.cd_loss(v, mask, k=3, seed=12).numpy() != loss  # the seed matters


def test_cd_loss_dropout_reaches_the_history_never_the_scored_frame():
    model = _model()
    v, mask = _rolls((2, 6, 6), seed=6), np.ones((2, 6), np.float32)
    plain = model.cd_loss(v, mask, k=2, seed=3).numpy()
    assert model.cd_loss(v, mask, k=2, seed=3, dropout=0.0).numpy() == plain  # 0 is exactly off
    assert model.cd_loss(v, mask, k=2, seed=3, dropout=0.5).numpy() != plain  # the history is thinned
    # With the bias maps at zero no frame's RBM depends on the history: the cost is then the
    # same with or without dropout, so the frames scored and the chains are never dropped.
    for name in ("Wuv", "Wuh"):
        getattr(model, name).assign(tf.zeros_like(getattr(model, name)))
    np.testing.assert_allclose(
        model.cd_loss(v, mask, k=2, seed=3, dropout=0.5).numpy(), model.cd_loss(v, mask, k=2, seed=3).numpy(), rtol=1e-6
    )


def test_dropout_zeroes_at_its_rate_and_keeps_the_mean():
    from rbmsearch.model import _dropout

    x = _dropout(tf.ones([200, 500]), 0.3, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_allclose(np.unique(x), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((x == 0).mean() - 0.3) < 0.005 and abs(x.mean() - 1.0) < 0.01


def test_cd_loss_is_the_mean_free_energy_gap_to_the_chain():
    """Rebuild the cost from the public pieces: the chain starts at the data, uses the
    frame's conditional biases, and the cost is mean(F(v) - F(v~)) over real frames."""
    model = _model(init_std=2.0)  # strong weights: where the chain starts shows after k=1
    v, mask = _rolls((2, 4, 6), seed=5), np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float32)
    bv, bh = model.conditional_biases(v)
    real = mask > 0.5
    v_r, bv_r, bh_r = v[real], bv.numpy()[real], bh.numpy()[real]
    v_neg, _ = gibbs_chain(v_r, model.W, bv_r, bh_r, k=1, seed=9)
    expected = np.mean(free_energy(v_r, model.W, bv_r, bh_r).numpy()
                       - free_energy(v_neg, model.W, bv_r, bh_r).numpy())  # fmt: skip
    np.testing.assert_allclose(model.cd_loss(v, mask, k=1, seed=9).numpy(), expected, rtol=1e-5)
    # The cost computes v W once, for the data's free energy and the chain's first step: the same bits.
    vW = tf.matmul(tf.constant(v_r, tf.float32), model.W)
    np.testing.assert_array_equal(gibbs_chain(v_r, model.W, bv_r, bh_r, k=1, seed=9, v0W=vW)[0].numpy(), v_neg.numpy())
    np.testing.assert_array_equal(free_energy(v_r, model.W, bv_r, bh_r, vW).numpy(), free_energy(v_r, model.W, bv_r, bh_r).numpy())


def test_rbm_pretrain_gradient_is_the_cd_k_estimate():
    """d cost / d W = -(<v p_h>_data - <v~ p~_h>_chain), d cost / d bv = -(<v> - <v~>)."""
    model = _model(init_std=2.0)
    v = _rolls((40, 6), seed=6)
    with tf.GradientTape() as tape:
        loss = model.rbm_pretrain_loss(v, k=1, seed=4)
    grads = dict(zip(["W", "bv", "bh", "Wuu"],
                     tape.gradient(loss, [model.W, model.bv, model.bh, model.Wuu])))  # fmt: skip
    assert grads["Wuu"] is None  # only the static RBM is trained
    W, bv, bh = (x.numpy() for x in (model.W, model.bv, model.bh))
    v_neg = gibbs_chain(v, W, bv, bh, k=1, seed=4)[0].numpy()
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    ph, ph_neg = sig(v @ W + bh), sig(v_neg @ W + bh)
    np.testing.assert_allclose(grads["W"].numpy(), -(v.T @ ph - v_neg.T @ ph_neg) / 40,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(grads["bv"].numpy(), -(v - v_neg).mean(0), atol=1e-6)
    np.testing.assert_allclose(grads["bh"].numpy(), -(ph - ph_neg).mean(0), atol=1e-6)


# -----------------------------------------------------------------------------
# Eager vs compiled


@pytest.mark.parametrize("rnn", ["tanh", "lstm"])
def test_conditional_biases_eager_graph_and_xla_agree(rnn):
    model = _model(rnn)
    v = _rolls((2, 5, 6), seed=7)
    eager = [x.numpy() for x in model.conditional_biases(v)]
    for jit in (False, True):
        compiled = tf.function(model.conditional_biases, jit_compile=jit)
        for got, want in zip(compiled(tf.constant(v)), eager):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_the_tanh_recurrence_back_propagates_as_autodiff_of_its_scan():
    """run_rnn's hand-written gradient (`recurrence.tanh_recurrence`) against TensorFlow's own gradient of
    the same recurrence as a plain `tf.scan` over `_cell`, for every RNN variable and u0."""
    model = _model()
    v = tf.constant(_rolls((3, 7, 6), seed=3))
    weights = tf.constant(np.random.default_rng(5).normal(size=(3, 7, 4)).astype(np.float32))
    variables = [model.Wvu, model.Wuu, model.bu, model.u0]

    def by_hand():
        u_prev, final = model.run_rnn(v)
        return u_prev, final

    def by_autodiff():
        state0 = model.initial_state(3)
        states = tf.scan(model._cell, tf.transpose(model._input_projection(v), [1, 0, 2]), initializer=state0)
        u_prev = tf.transpose(tf.concat([state0[None], states[:-1]], axis=0), [1, 0, 2])
        return u_prev, states[-1]

    results = []
    for run in (by_hand, by_autodiff, tf.function(by_hand)):
        with tf.GradientTape() as tape:
            u_prev, final = run()
            loss = tf.reduce_sum(tf.tanh(u_prev) * weights) + tf.reduce_sum(final**2)
        results.append((u_prev.numpy(), [g.numpy() for g in tape.gradient(loss, variables)]))
    for u_prev, grads in results[1:]:
        np.testing.assert_allclose(u_prev, results[0][0], rtol=1e-6, atol=1e-7)
        for got, want in zip(grads, results[0][1]):
            assert np.abs(want).max() > 1e-3  # every variable's gradient is there to compare
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length", [1, 9, 10, 11, 23])
@pytest.mark.parametrize("reverse", [False, True])
def test_the_rnn_loop_in_chunks_is_tf_scan_bit_for_bit(length, reverse):
    """`_scan_in_chunks` writes RNN_CHUNK steps out per loop iteration and pads the sequence to a
    multiple of them: at any length, forward or reversed, with one tensor or a tuple to scan, its
    outputs are tf.scan's exactly, eagerly and compiled."""
    from rbmsearch.recurrence import RNN_CHUNK, _scan_in_chunks

    assert RNN_CHUNK > 1
    rng = np.random.default_rng(length)
    x, y = (tf.constant(rng.normal(size=(length, 3, 5)).astype(np.float32)) for _ in range(2))
    w, start = tf.constant(rng.normal(size=(5, 5)).astype(np.float32)), tf.constant(rng.normal(size=(3, 5)).astype(np.float32))
    cases = [
        (lambda u, x_t: tf.tanh(x_t + tf.matmul(u, w)), x),  # the paper's RNN
        (lambda u, g: (g[0] + tf.matmul(u, w, transpose_b=True)) * g[1] + 0.5 * u, (x, y)),  # a carry that counts every step
    ]
    for step, elems in cases:
        want = tf.scan(step, elems, initializer=start, reverse=reverse).numpy()
        assert want.shape == (length, 3, 5)
        for run in (_scan_in_chunks, tf.function(_scan_in_chunks)):
            got = run(step, elems, start, reverse=reverse)
            assert np.array_equal(got.numpy(), want)


@pytest.mark.parametrize("pooled", [False, True])
def test_cd_loss_and_its_gradient_eager_and_graph_agree(pooled):
    model = _model()
    v, mask = _rolls((2, 5, 6), seed=8), np.array([[1] * 5, [1] * 3 + [0] * 2], np.float32)
    pool = NoisePool(6, 5, rows=40) if pooled else None  # 2 sequences of 5 frames, CD-3: 24 of its rows a step

    def loss_and_grads(v, mask, seed):
        with tf.GradientTape() as tape:
            loss = model.cd_loss(v, mask, k=3, seed=seed, pool=pool)
        return loss, tape.gradient(loss, model.trainable_variables)

    seed = tf.constant([3, 4], tf.int64)
    eager = loss_and_grads(tf.constant(v), tf.constant(mask), seed)
    graph = tf.function(loss_and_grads)(tf.constant(v), tf.constant(mask), seed)
    np.testing.assert_allclose(graph[0].numpy(), eager[0].numpy(), rtol=1e-5)
    for g, e in zip(graph[1], eager[1]):
        g, e = tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(e).numpy()
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def test_generate_eager_and_xla_agree():
    model = _model()
    primer = _rolls((3, 6), seed=9) > 0.5
    eager = model.generate(2, 4, k=3, seed=5, primer=primer, compiled=False)
    xla = model.generate(2, 4, k=3, seed=5, primer=primer)
    np.testing.assert_array_equal(xla, eager)


# -----------------------------------------------------------------------------
# Generation


def test_generate_shape_dtype_determinism_and_prefix():
    model = _model()
    out = model.generate(3, 10, k=2, seed=1)
    assert out.shape == (3, 10, 6) and out.dtype == np.bool_
    np.testing.assert_array_equal(model.generate(3, 10, k=2, seed=1), out)
    assert not np.array_equal(model.generate(3, 10, k=2, seed=2), out)
    assert not np.array_equal(out[0], out[1])  # the samples are independent chains
    np.testing.assert_array_equal(model.generate(3, 4, k=2, seed=1), out[:, :4])
    # longer than one chunk: the chunks chain up
    long = model.generate(3, 150, k=2, seed=1)
    np.testing.assert_array_equal(long[:, :10], out)
    assert 0.05 < long.mean() < 0.95


def _copy_model() -> RnnRbm:
    """A hand-set model whose next frame copies the previous one (with prob ~0.99995 per
    note): u_t = tanh(20 v_t - 10) ~ +-1 and bv_t = -10 + 20 u_{t-1}; W = 0."""
    model = RnnRbm(ModelConfig(n_visible=6, n_hidden=3, n_recurrent=6), seed=0)
    eye = np.eye(6, dtype=np.float32)
    model.load_params(
        {"W": np.zeros((6, 3)), "bv": np.full(6, -10.0), "bh": np.zeros(3),
         "Wuv": 20 * eye, "Wuh": np.zeros((6, 3)), "Wvu": 20 * eye, "Wuu": np.zeros((6, 6)),
         "bu": np.full(6, -10.0), "u0": np.full(6, -1.0)}  # fmt: skip
    )
    return model


def test_generate_continues_after_the_primer_and_excludes_it():
    model = _copy_model()
    primer = np.zeros((3, 6), bool)
    primer[0, 0] = True
    primer[-1, [1, 4]] = True
    out = model.generate(4, 5, k=2, seed=0, primer=primer)
    assert out.shape == (4, 5, 6)
    expected = np.broadcast_to(primer[-1], (4, 5, 6))  # the last primer frame, held
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(model.generate(4, 5, k=2, seed=0), False)  # u0: silence
    with pytest.raises(ValueError, match=r"primer must be a \(P, 6\) piano roll"):
        model.generate(1, 2, k=1, seed=0, primer=np.zeros((3, 5), bool))


def test_generate_rejects_bad_sizes():
    model = _model()
    with pytest.raises(ValueError, match="n_steps must be a positive int, but got 0."):
        model.generate(1, 0, k=1, seed=0)
    with pytest.raises(ValueError, match="k must be a positive int, but got 0."):
        model.generate(1, 2, k=0, seed=0)


# -----------------------------------------------------------------------------
# Devices


def test_configure_devices_describes_the_devices():
    text = configure_devices()
    assert text.startswith("GPUs: ") and "CPU devices: " in text


def test_cli_prints_the_parameter_shapes(capsys):
    from rbmsearch.model import _main

    _main(["--rnn", "gru"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("GPUs: ")
    names_and_shapes = [line.split()[:2] for line in lines[1:4]]
    assert names_and_shapes == [["W", "(88,"], ["bv", "(88,)"], ["bh", "(150,)"]]
    assert any(line.startswith("gru_Wu   (100, 300)") for line in lines)
