"""rbmsearch.train: windows and minibatches, tiny end-to-end training runs on the toy dataset,
the per-epoch monitor, resuming, divergence, weight decay and the train CLI. The tests that
train for many epochs, train several times, or run the CLI in a subprocess are marked `slow`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from rbmsearch.arrays import pad_batch
from rbmsearch.config import TrainConfig
from rbmsearch.data import read_dataset
from rbmsearch.errors import ConfigError, DivergenceError
from rbmsearch.run import load_run
from rbmsearch.train import ParameterAverage, chain_length, make_optimizer, make_train_step, minibatches, monitor, MonitorSettings, pretrain_rnn, train, windows


def test_windows_cover_every_frame_once():
    rolls = [np.arange(n)[:, None] * np.ones((1, 3)) for n in (5, 23, 40)]
    rng = np.random.default_rng(0)
    cut = windows(rolls, 10, rng)
    assert all(1 <= len(w) <= 10 for w in cut)
    np.testing.assert_array_equal(np.sort(np.concatenate([w[:, 0] for w in cut])), np.sort(np.concatenate([r[:, 0] for r in rolls])))
    assert windows(rolls, 0, rng) == rolls


def test_minibatches_use_every_window_each_epoch(toy_dataset, tiny_config):
    rolls = toy_dataset.rolls("train")
    config = TrainConfig(**{**tiny_config, "batch_size": 3})
    total = sum(int(mask.sum()) for _, mask in minibatches(rolls, config, np.random.default_rng(1)))
    assert total == sum(len(r) for r in rolls)


@pytest.mark.slow
def test_tiny_train_end_to_end(tmp_path, toy_parquet, tiny_config):
    """Two epochs with the test evaluation: reports, metrics, and what the run directory holds."""
    reports = []
    run_dir = tmp_path / "run"
    metrics = train(TrainConfig(**tiny_config), read_dataset(toy_parquet), run_dir, report=lambda e, m, d: reports.append((e, m, d)), data_path=str(toy_parquet))
    assert [e for e, _, _ in reports] == [1, 2] and all(d == run_dir for _, _, d in reports)
    assert all(math.isfinite(m["valid_monitor"]) for _, m, _ in reports)
    assert 0 < metrics["test_nll"] < 88 * math.log(2) and 0 <= metrics["test_acc"] <= 1
    assert metrics["test_eval"]["ais_runs"] == 4 and metrics["test_eval"]["ais_betas"] == 20

    with np.load(run_dir / "params.npz") as params:
        shapes = {k: params[k].shape for k in params}
    assert shapes == {"W": (88, 12), "bv": (88,), "bh": (12,), "Wuv": (8, 88), "Wuh": (8, 12), "Wvu": (88, 8), "Wuu": (8, 8), "bu": (8,), "u0": (8,)}
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"] == {"path": str(toy_parquet), "source": "toy", "steps_per_quarter": 4, "qpm": 100.0}
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["test_nll"] == metrics["test_nll"] and len(on_disk["history"]) == 2


@pytest.mark.slow
def test_training_learns_the_toy_data(tmp_path, toy_parquet, tiny_config):
    """More epochs must beat fewer on held-out AIS NLL: the gradient really trains the model."""
    data = read_dataset(toy_parquet)
    base = {**tiny_config, "eval_ais_runs": 20, "eval_ais_betas": 200, "learning_rate": 0.01, "pretrain_epochs": 0}
    short = train(TrainConfig(**{**base, "epochs": 1}), data, tmp_path / "short")
    long = train(TrainConfig(**{**base, "epochs": 25}), data, tmp_path / "long")
    assert long["test_nll"] < short["test_nll"] - 1.0
    assert long["test_acc"] > short["test_acc"]


@pytest.mark.slow
def test_nll_monitor_tracks_the_exact_nll(tmp_path, toy_parquet, tiny_config):
    """The per-epoch monitor of a trained small model against its exact NLL (log Z by enumeration)."""
    from rbmsearch import ais
    from rbmsearch.model import conditional_rbms
    from rbmsearch.train import MonitorSettings, monitor

    data = read_dataset(toy_parquet)
    train(TrainConfig(**{**tiny_config, "epochs": 15, "learning_rate": 0.01}), data, tmp_path / "run", evaluate_test=False)
    model = load_run(tmp_path / "run").model
    rolls = data.rolls("valid")
    v, bv, bh = conditional_rbms(model, rolls)
    W = model.W.numpy()
    exact = -np.mean(ais.frame_log_likelihood(v, W, bv, bh, ais.exact_log_z(W, bv, bh)))
    every_frame = MonitorSettings(frames=len(v))
    assert every_frame.kind == "raise" and monitor(model, rolls, every_frame) == pytest.approx(exact, abs=0.05)
    assert monitor(model, rolls, MonitorSettings(kind="nll", frames=len(v))) == pytest.approx(exact, abs=0.05)
    # A subset of frames is an even spread: close to the whole, and the same every call.
    subset = MonitorSettings(frames=len(v) // 3)
    assert monitor(model, rolls, subset) == monitor(model, rolls, subset)
    assert monitor(model, rolls, subset) == pytest.approx(exact, abs=1.0)
    pll = monitor(model, rolls, MonitorSettings(kind="pll", frames=len(v)))
    assert pll == pytest.approx(ais.monitor_cost(v, W, bv, bh), abs=1e-3)  # the pseudo-likelihood option
    with pytest.raises(ValueError, match="monitor kind"):
        monitor(model, rolls, MonitorSettings(kind="cd"))


@pytest.mark.slow
@pytest.mark.parametrize("average_epochs", [0.0, 1.0])
def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, toy_parquet, tiny_config, average_epochs):
    """Also with the parameter average, which the checkpoint carries."""
    data = read_dataset(toy_parquet)
    config = TrainConfig(**{**tiny_config, "epochs": 4, "average_epochs": average_epochs})
    straight = train(config, data, tmp_path / "straight", evaluate_test=False)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, metrics, run_dir):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(config, data, tmp_path / "resumed", report=stop_after_two, evaluate_test=False)
    assert len(json.loads((tmp_path / "resumed/metrics.json").read_text())["history"]) == 2
    seen = []
    resumed = train(config, data, tmp_path / "resumed", report=lambda e, m, d: seen.append(e), evaluate_test=False)
    assert seen == [3, 4]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    for a, b in zip(straight["history"], resumed["history"]):
        assert a["valid_monitor"] == pytest.approx(b["valid_monitor"], rel=1e-4)
    p, q = load_run(tmp_path / "straight").model.to_params(), load_run(tmp_path / "resumed").model.to_params()
    for name in p:
        np.testing.assert_allclose(p[name], q[name], rtol=1e-4, atol=1e-5)

    with pytest.raises(ConfigError, match=r"differs in \['cd_k'\]"):
        train(TrainConfig(**{**tiny_config, "epochs": 4, "cd_k": 3, "average_epochs": average_epochs}), data, tmp_path / "resumed")
    # A run saved before a field existed resumes with that field's default.
    saved = json.loads((tmp_path / "resumed/config.json").read_text())
    del saved["train"]["eval_raise_runs"]
    (tmp_path / "resumed/config.json").write_text(json.dumps(saved))
    assert len(train(config, data, tmp_path / "resumed", evaluate_test=False)["history"]) == 4


def test_divergence_fails_at_once_naming_epoch_and_configuration(tmp_path, toy_parquet, tiny_config):
    config = TrainConfig(**{**tiny_config, "optimizer": "sgd", "learning_rate": 1e30, "pretrain_epochs": 0})
    reports = []
    with pytest.raises(DivergenceError, match=r"training diverged at epoch 1: .* is not finite. Configuration: .*\"learning_rate\": 1e\+30") as info:
        train(config, read_dataset(toy_parquet), tmp_path / "nan", report=lambda *a: reports.append(a))
    assert info.value.epoch == 1 and info.value.config == config
    assert info.value.what and info.value.what in str(info.value)  # what stopped being finite, without parsing the message
    assert reports == []  # no made-up metric was reported


@pytest.mark.slow
def test_train_cli_smoke(tmp_path, toy_parquet, tiny_config):
    sets = [a for k, v in tiny_config.items() if k != "epochs" for a in ("--set", f"{k}={v}")]
    out = subprocess.run(
        [sys.executable, "-m", "rbmsearch.train", "--data", str(toy_parquet), "--out", str(tmp_path / "cli"), "--epochs", "1", *sets],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["best_epoch"] == 1 and math.isfinite(summary["test_nll"])
    from rbmsearch.train import main as train_main  # the refusal in this process: no TensorFlow to start again

    with pytest.raises(SystemExit, match="Unknown key 'k'"):
        train_main(["--data", str(toy_parquet), "--out", str(tmp_path / "x"), "--set", "k=1"])


def test_weight_decay_shrinks_weight_matrices_only(toy_dataset, tiny_config):
    """One SGD step with weight_decay differs from one without by exactly -lr * wd * w on each matrix."""
    from rbmsearch.model import ModelConfig, RnnRbm

    rolls = toy_dataset.rolls("train")[:4]
    v, mask = pad_batch([r[:16] for r in rolls])
    after = {}
    for wd in (0.0, 0.5):
        config = TrainConfig(**{**tiny_config, "optimizer": "sgd", "learning_rate": 0.1, "lr_schedule": "constant", "weight_decay": wd, "clip_norm": 0.0})
        model = RnnRbm(ModelConfig.of(config), seed=config.seed)
        before = model.to_params()
        make_train_step(model, make_optimizer(config, 1), config)(v, mask, np.array([1, 2], dtype=np.int64))
        after[wd] = model.to_params()
    for name, w in before.items():
        expected = -0.1 * 0.5 * w if w.ndim == 2 else np.zeros_like(w)
        np.testing.assert_allclose(after[0.5][name] - after[0.0][name], expected, atol=1e-6, err_msg=name)
    assert np.abs(before["W"]).max() > 1e-3  # the check above is not vacuous
    with pytest.raises(ConfigError, match="weight_decay"):
        TrainConfig(weight_decay=-1.0)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ConfigError, match="dropout"):
            TrainConfig(dropout=bad)


def test_the_parameter_average_follows_each_step_with_its_decay(toy_dataset, tiny_config):
    """After each step n the average is d * average + (1 - d) * parameters, d = min(exp(-1 / steps), (1 + n) / (10 + n));
    in_model() puts it in the model for a block and the trained values back after."""
    from rbmsearch.model import ModelConfig, RnnRbm

    rolls = toy_dataset.rolls("train")[:4]
    v, mask = pad_batch([r[:16] for r in rolls])
    config = TrainConfig(**{**tiny_config, "optimizer": "sgd", "learning_rate": 0.5, "lr_schedule": "constant", "clip_norm": 0.0})
    model = RnnRbm(ModelConfig.of(config), seed=config.seed)
    average = ParameterAverage(model, steps=20.0)
    step = make_train_step(model, make_optimizer(config, 1), config, average=average)
    expected = model.to_params()
    for n in range(1, 31):
        step(v, mask, np.array([1, n], dtype=np.int64))
        d = min(math.exp(-1 / 20), (1 + n) / (10 + n))
        trained = model.to_params()
        expected = {name: d * expected[name] + (1 - d) * trained[name] for name in trained}
    with average.in_model():
        averaged = model.to_params()
    for name in trained:
        np.testing.assert_allclose(averaged[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(model.to_params()[name], trained[name])
    assert np.abs(averaged["W"] - trained["W"]).max() > 1e-4  # the average lags the steps: the check is not vacuous
    for bad in (-1.0, math.inf, True):
        with pytest.raises(ConfigError, match="average_epochs"):
            TrainConfig(average_epochs=bad)


def test_a_run_with_the_average_monitors_and_keeps_the_average_not_the_trained_parameters(tmp_path, toy_dataset, tiny_config):
    import tensorflow as tf

    from rbmsearch.model import ModelConfig, RnnRbm

    config = TrainConfig(**{**tiny_config, "epochs": 3, "average_epochs": 2.0, "monitor_every": 1})
    metrics = train(config, toy_dataset, tmp_path / "run", evaluate_test=False)
    readings, valid, settings = [h["valid_monitor"] for h in metrics["history"]], toy_dataset.rolls("valid"), MonitorSettings.of(config)
    assert metrics["best_epoch"] == 1 + int(np.argmin(readings))
    assert monitor(load_run(tmp_path / "run").model, valid, settings) == pytest.approx(readings[metrics["best_epoch"] - 1], rel=1e-5)
    model = RnnRbm(ModelConfig.of(config), seed=99)  # the last epoch's trained parameters and average, from the checkpoint
    average = ParameterAverage(model, 1.0)
    tf.train.Checkpoint(model=model, average=average.trackable).restore(tf.train.latest_checkpoint(str(tmp_path / "run/ckpt"))).expect_partial()
    trained = monitor(model, valid, settings)
    with average.in_model():
        assert monitor(model, valid, settings) == pytest.approx(readings[-1], rel=1e-5)
    assert abs(trained - readings[-1]) > 1e-3  # the monitor read the average, not the trained parameters


# ---------------------------------------------------------------------------- the paper's training aids


def test_rnn_pretraining_fits_independent_outputs_and_hands_on_only_the_recurrence(toy_dataset, tiny_config):
    """Epochs of the independent-output RNN lower its cross-entropy; they change the recurrence
    and u0, never the RBM or its bias maps (the temporary output layer is dropped)."""
    from rbmsearch.model import ModelConfig, RnnRbm

    config = TrainConfig(**{**tiny_config, "rnn_pretrain_epochs": 15, "rnn_pretrain_learning_rate": 0.03})
    model = RnnRbm(ModelConfig.of(config), seed=config.seed)
    before = model.to_params()
    costs = pretrain_rnn(model, toy_dataset.rolls("train"), config)
    after = model.to_params()
    assert len(costs) == 15 and all(math.isfinite(c) for c in costs)
    assert costs[-1] < 0.6 * costs[0], costs  # the toy arpeggios are predictable from the history
    recurrent = {"Wvu", "Wuu", "bu", "u0"}
    assert {n for n in before if not np.array_equal(before[n], after[n])} == recurrent
    assert pretrain_rnn(model, toy_dataset.rolls("train"), TrainConfig(**tiny_config)) == []  # 0 epochs: off


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_rnn_pretraining_covers_the_gated_variants(toy_dataset, tiny_config, rnn):
    from rbmsearch.model import ModelConfig, RnnRbm

    config = TrainConfig(**{**tiny_config, "rnn": rnn, "rnn_pretrain_epochs": 2})
    model = RnnRbm(ModelConfig.of(config), seed=config.seed)
    before = model.to_params()
    assert len(pretrain_rnn(model, toy_dataset.rolls("train"), config)) == 2
    changed = {n for n, w in model.to_params().items() if not np.array_equal(before[n], w)}
    assert changed == {f"{rnn}_Wx", f"{rnn}_Wu", f"{rnn}_b", "u0"}


def test_longer_chains_late_switch_cd_k_for_the_last_fraction_of_epochs(tmp_path, toy_dataset, tiny_config):
    config = TrainConfig(**{**tiny_config, "epochs": 8, "cd_k_late": 7, "late_fraction": 0.25})
    assert [chain_length(config, e) for e in range(8)] == [2] * 6 + [7] * 2
    assert [chain_length(TrainConfig(**{**tiny_config, "epochs": 8}), e) for e in range(8)] == [2] * 8
    config = TrainConfig(**{**tiny_config, "epochs": 4, "cd_k_late": 5, "late_fraction": 0.5, "rnn_pretrain_epochs": 1})
    metrics = train(config, toy_dataset, tmp_path / "run", evaluate_test=False)
    assert [h["cd_k"] for h in metrics["history"]] == [2, 2, 5, 5]
    assert len(metrics["rnn_pretrain_costs"]) == 1
    for bad in ({"late_fraction": 0.0}, {"late_fraction": 1.5}, {"cd_k_late": -1}, {"rnn_pretrain_epochs": -2}, {"rnn_pretrain_learning_rate": 0.0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


def test_the_monitor_reads_every_few_epochs_and_always_the_last(tmp_path, toy_dataset, tiny_config):
    """monitor_every: readings, reports and the best epoch only where the monitor read (and at
    `read_at`, a search's ASHA rungs); 0 sizes the interval from the training frames, with at
    least MIN_READINGS per run."""
    from rbmsearch.train import MIN_READINGS, MONITOR_TRAIN_FRAMES, monitor_interval

    reports = []
    config = TrainConfig(**{**tiny_config, "epochs": 5, "monitor_every": 2})
    metrics = train(config, toy_dataset, tmp_path / "run", report=lambda e, m, d: reports.append(e), evaluate_test=False, read_at=(3,))
    assert reports == [2, 3, 4, 5]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5]
    assert [h["epoch"] for h in metrics["history"] if "valid_monitor" in h] == [2, 3, 4, 5]
    assert metrics["best_epoch"] in (2, 3, 4, 5)
    auto = TrainConfig(**{**tiny_config, "epochs": 200})
    assert monitor_interval(auto, 13_807) == round(MONITOR_TRAIN_FRAMES / 13_807)  # JSB: 14 epochs apart
    assert monitor_interval(auto, 176_561) == 1  # Nottingham: every epoch
    assert monitor_interval(auto, 10) == 200 // MIN_READINGS  # tiny data: still MIN_READINGS readings
    assert monitor_interval(TrainConfig(**{**tiny_config, "epochs": 5}), 10) == 1
    with pytest.raises(ConfigError):
        TrainConfig(monitor_every=-1)


@pytest.mark.parametrize("optimizer", ["nesterov", "nadam"])
def test_nesterov_and_nadam_train_and_differ_from_their_plain_forms(toy_dataset, tiny_config, optimizer):
    """Two steps of each: finite, moving the weights, and not the same update as SGD momentum / Adam."""
    from rbmsearch.model import ModelConfig, RnnRbm

    v, mask = pad_batch([r[:16] for r in toy_dataset.rolls("train")[:4]])
    plain = {"nesterov": "sgd", "nadam": "adam"}[optimizer]
    after = {}
    for name in (optimizer, plain):
        config = TrainConfig(**{**tiny_config, "optimizer": name, "learning_rate": 0.05, "lr_schedule": "constant"})
        model = RnnRbm(ModelConfig.of(config), seed=config.seed)
        step = make_train_step(model, make_optimizer(config, 1), config)
        for i in range(2):
            assert math.isfinite(float(step(v, mask, np.array([1, i], dtype=np.int64))))
        after[name] = model.to_params()["W"]
    assert not np.allclose(after[optimizer], after[plain], atol=1e-7)
    assert np.abs(after[optimizer] - RnnRbm(ModelConfig.of(config), seed=config.seed).to_params()["W"]).max() > 1e-4


def test_train_writes_tensorboard_scalars_for_every_epoch(tmp_path, toy_dataset, tiny_config):
    import tensorflow as tf

    from rbmsearch.train import TENSORBOARD_DIR, TENSORBOARD_SCALARS

    metrics = train(TrainConfig(**{**tiny_config, "epochs": 3}), toy_dataset, tmp_path / "run", evaluate_test=False)
    events = sorted((tmp_path / "run" / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert events
    seen: dict[str, dict[int, float]] = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = value.simple_value if value.WhichOneof("value") == "simple_value" else float(tf.make_ndarray(value.tensor))
                seen.setdefault(value.tag, {})[event.step] = number
    assert set(seen) == set(TENSORBOARD_SCALARS)
    for name in TENSORBOARD_SCALARS:
        assert seen[name] == {h["epoch"]: pytest.approx(h[name], rel=1e-5) for h in metrics["history"]}, name  # float32 in the file
