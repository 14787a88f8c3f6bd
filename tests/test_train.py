"""rbmsearch.train and rbmsearch.evaluate: tiny end-to-end runs on a dataset built here."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from rbmsearch.data import Dataset, DatasetMeta, Piece, write_dataset
from rbmsearch.midi import NUM_PITCHES
from rbmsearch.arrays import pad_batch
from rbmsearch.config import TrainConfig
from rbmsearch.errors import ConfigError, DivergenceError, RunError
from rbmsearch.run import load_run
from rbmsearch.train import make_optimizer, make_train_step, minibatches, train, windows

TINY = dict(
    n_hidden=12,
    n_recurrent=8,
    pretrain_epochs=1,
    epochs=2,
    cd_k=2,
    window=16,
    batch_size=4,
    eval_ais_runs=4,
    eval_ais_betas=20,
    eval_acc_samples=2,
    monitor_frames=100,
    monitor_ais_runs=4,
    monitor_ais_betas=50,
)


def toy_dataset(n_pieces: int = 12, seed: int = 0) -> Dataset:
    """Arpeggios over a held bass on one of two roots: learnable, a few hundred frames in all."""
    rng = np.random.default_rng(seed)
    pieces = []
    for i in range(n_pieces):
        steps = int(rng.integers(20, 40))
        roll = np.zeros((steps, NUM_PITCHES), dtype=bool)
        root, phase = (36, 43)[i % 2], int(rng.integers(4))
        roll[:, root - 12] = True
        for t in range(steps):
            roll[t, root + (0, 4, 7, 12)[(t + phase) % 4]] = True
        pieces.append(Piece(f"p{i}", ("train", "train", "valid", "test")[i % 4], roll))
    return Dataset(DatasetMeta(source="toy", steps_per_quarter=4, qpm=100.0), tuple(pieces))


@pytest.fixture(scope="module")
def toy_parquet(tmp_path_factory):
    return write_dataset(toy_dataset(), tmp_path_factory.mktemp("data") / "toy.parquet")


def test_windows_cover_every_frame_once():
    rolls = [np.arange(n)[:, None] * np.ones((1, 3)) for n in (5, 23, 40)]
    rng = np.random.default_rng(0)
    cut = windows(rolls, 10, rng)
    assert all(1 <= len(w) <= 10 for w in cut)
    np.testing.assert_array_equal(np.sort(np.concatenate([w[:, 0] for w in cut])), np.sort(np.concatenate([r[:, 0] for r in rolls])))
    assert windows(rolls, 0, rng) == rolls


def test_pad_batch_masks_the_padding():
    v, mask = pad_batch([np.ones((2, 3), bool), np.ones((4, 3), bool)])
    assert v.shape == (2, 4, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(v.sum(axis=2), 3 * mask)


def test_minibatches_use_every_window_each_epoch():
    rolls = toy_dataset().rolls("train")
    config = TrainConfig(**{**TINY, "batch_size": 3})
    total = sum(int(mask.sum()) for _, mask in minibatches(rolls, config, np.random.default_rng(1)))
    assert total == sum(len(r) for r in rolls)


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['n_hiden'\] in my.json"):
        TrainConfig.from_dict({"n_hiden": 10}, "my.json")
    with pytest.raises(ConfigError, match="A positive int must be specified for cd_k, but got 0"):
        TrainConfig(cd_k=0)
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="adagrad")
    assert TrainConfig().with_overrides(["cd_k=3", "learning_rate=1", "rnn=gru"]) == TrainConfig(cd_k=3, learning_rate=1.0, rnn="gru")
    with pytest.raises(ConfigError, match="Unknown key 'lr'"):
        TrainConfig().with_overrides(["lr=0.1"])


def test_tiny_train_then_evaluate_end_to_end(tmp_path, toy_parquet):
    from rbmsearch.data import read_dataset

    reports = []
    run_dir = tmp_path / "run"
    metrics = train(TrainConfig(**TINY), read_dataset(toy_parquet), run_dir, report=lambda e, m, d: reports.append((e, m, d)), data_path=str(toy_parquet))
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

    # The evaluate CLI rebuilds the model from the run directory alone.
    out = subprocess.run(
        [sys.executable, "-m", "rbmsearch.evaluate", str(run_dir), "--split", "valid", "--ais-runs", "4", "--ais-betas", "20", "--acc-samples", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["split"] == "valid" and result["ais_runs"] == 4 and result["ais_betas"] == 20
    assert 0 < result["nll"] < 88 * math.log(2) and 0 <= result["acc"] <= 1 and 0 <= result["acc_frame_mean"] <= 1
    assert 0 < result["nll_raise"] < 88 * math.log(2) and 0 <= result["acc_annealed"] <= 1 and result["raise_runs"] == 10
    assert 0 <= result["acc_decoded"] <= 1 and 0 < result["acc_decoded_threshold"] <= 1 and 0 <= result["acc_repeat"] <= 1


def sticky_model():
    """An RBM whose hidden units copy the visible ones and back: every note has two sticky
    states, so a Gibbs chain stays near where it starts for many steps, and AIS needs many
    temperatures."""
    from rbmsearch.model import ModelConfig, RnnRbm

    sticky = RnnRbm(ModelConfig(n_hidden=NUM_PITCHES, n_recurrent=8), seed=0)
    sticky.W.assign(10.0 * np.eye(NUM_PITCHES, dtype=np.float32))
    for name, value in (("bv", -5.0), ("bh", -5.0), ("Wuv", 0.0), ("Wuh", 0.0)):
        getattr(sticky, name).assign(np.full(getattr(sticky, name).shape, value, np.float32))
    return sticky


def test_repeat_accuracy_copies_the_previous_frame_of_each_piece():
    from rbmsearch.accuracy import repeat_accuracy

    a, b = [1, 1, 0, 0], [0, 1, 1, 0]
    rolls = [np.array([a, a, b], bool), np.array([b], bool), np.zeros((0, 4), bool)]
    # Guesses: silence, a, a | silence (each piece starts from silence, not from the last one).
    # TP 2 (a after a) + 1 (b after a); FP 1 (b after a); FN 2 (the first a) + 1 (b after a)
    # + 2 (the lone b) -> 3 / 9. Carrying b over from the first piece would give 5 / 9.
    assert repeat_accuracy(rolls) == pytest.approx(3 / 9)
    assert repeat_accuracy([]) == 1.0 and repeat_accuracy([np.array([a], bool)]) == 0.0


def test_nll_gap_flags_annealing_that_is_too_short(caplog):
    """AIS and RAISE disagree by whole nats on a sharp model with 10 temperatures, and a
    warning says so; on a weak model they agree and nothing is printed."""
    from rbmsearch.evaluate import EvalSettings, evaluate
    from rbmsearch.model import ModelConfig, RnnRbm

    rolls = toy_dataset().rolls("valid")
    settings = EvalSettings(ais_runs=4, ais_betas=10, acc_samples=1, acc_gibbs_k=1, raise_runs=4)
    sharp = evaluate(sticky_model(), rolls, settings)
    assert abs(sharp["nll_raise"] - sharp["nll"]) > 1.0 and sharp["raise_runs"] == 4
    warning = caplog.text
    assert "not pinned down" in warning and "--ais-betas" in warning
    caplog.clear()
    weak = evaluate(RnnRbm(ModelConfig(n_hidden=12, n_recurrent=8, init_std=0.05), seed=0), rolls, settings)
    assert abs(weak["nll_raise"] - weak["nll"]) < 0.05
    assert "not pinned down" not in caplog.text


def test_accuracy_mixing_gap_flags_chains_that_have_not_mixed(caplog):
    """Chains from the true frames and from silence agree once mixed, and not before."""
    from rbmsearch.evaluate import EvalSettings, evaluate
    from rbmsearch.model import ModelConfig, RnnRbm

    rolls = toy_dataset().rolls("valid")
    settings = dict(ais_runs=2, ais_betas=10, acc_samples=2)
    stuck = evaluate(sticky_model(), rolls, EvalSettings(**settings, acc_gibbs_k=1))
    assert stuck["acc"] < 0.2 and stuck["acc_mixing_gap"] > 0.5  # the truth-started chains remember it
    warning = caplog.text
    assert "have not mixed" in warning and "--acc-gibbs-k" in warning
    caplog.clear()
    model = RnnRbm(ModelConfig(n_hidden=12, n_recurrent=8, init_std=0.05), seed=0)
    mixed = evaluate(model, rolls, EvalSettings(**settings, acc_gibbs_k=50))
    assert abs(mixed["acc_mixing_gap"]) < 0.03  # a weak RBM mixes in a few steps
    assert "have not mixed" not in caplog.text


def test_training_learns_the_toy_data(tmp_path, toy_parquet):
    """More epochs must beat fewer on held-out AIS NLL: the gradient really trains the model."""
    from rbmsearch.data import read_dataset

    data = read_dataset(toy_parquet)
    base = {**TINY, "eval_ais_runs": 20, "eval_ais_betas": 200, "learning_rate": 0.01, "pretrain_epochs": 0}
    short = train(TrainConfig(**{**base, "epochs": 1}), data, tmp_path / "short")
    long = train(TrainConfig(**{**base, "epochs": 25}), data, tmp_path / "long")
    assert long["test_nll"] < short["test_nll"] - 1.0
    assert long["test_acc"] > short["test_acc"]


def test_nll_monitor_tracks_the_exact_nll(tmp_path, toy_parquet):
    """The per-epoch monitor of a trained small model against its exact NLL (log Z by enumeration)."""
    from rbmsearch import ais
    from rbmsearch.data import read_dataset
    from rbmsearch.model import conditional_rbms
    from rbmsearch.train import MonitorSettings, monitor

    data = read_dataset(toy_parquet)
    train(TrainConfig(**{**TINY, "epochs": 15, "learning_rate": 0.01}), data, tmp_path / "run", evaluate_test=False)
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


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, toy_parquet):
    from rbmsearch.data import read_dataset

    data = read_dataset(toy_parquet)
    config = TrainConfig(**{**TINY, "epochs": 4})
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
        train(TrainConfig(**{**TINY, "epochs": 4, "cd_k": 3}), data, tmp_path / "resumed")
    # A run saved before a field existed resumes with that field's default.
    saved = json.loads((tmp_path / "resumed/config.json").read_text())
    del saved["train"]["eval_raise_runs"]
    (tmp_path / "resumed/config.json").write_text(json.dumps(saved))
    assert len(train(config, data, tmp_path / "resumed", evaluate_test=False)["history"]) == 4


def test_divergence_fails_at_once_naming_epoch_and_configuration(tmp_path, toy_parquet):
    from rbmsearch.data import read_dataset

    config = TrainConfig(**{**TINY, "optimizer": "sgd", "learning_rate": 1e30, "pretrain_epochs": 0})
    reports = []
    with pytest.raises(DivergenceError, match=r"training diverged at epoch 1: .* is not finite. Configuration: .*\"learning_rate\": 1e\+30") as info:
        train(config, read_dataset(toy_parquet), tmp_path / "nan", report=lambda *a: reports.append(a))
    assert info.value.epoch == 1 and info.value.config == config
    assert reports == []  # no made-up metric was reported


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(RunError, match="config.json: missing.*python -m rbmsearch.train"):
        load_run(tmp_path)


def test_train_cli_smoke(tmp_path, toy_parquet):
    sets = [a for k, v in TINY.items() if k != "epochs" for a in ("--set", f"{k}={v}")]
    out = subprocess.run(
        [sys.executable, "-m", "rbmsearch.train", "--data", str(toy_parquet), "--out", str(tmp_path / "cli"), "--epochs", "1", *sets],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["best_epoch"] == 1 and math.isfinite(summary["test_nll"])
    bad = subprocess.run([sys.executable, "-m", "rbmsearch.train", "--data", str(toy_parquet), "--out", str(tmp_path / "x"), "--set", "k=1"], capture_output=True, text=True)
    assert bad.returncode == 1 and "Unknown key 'k'" in bad.stderr


def test_weight_decay_shrinks_weight_matrices_only():
    """One SGD step with weight_decay differs from one without by exactly -lr * wd * w on each matrix."""
    from rbmsearch.model import ModelConfig, RnnRbm

    rolls = toy_dataset().rolls("train")[:4]
    v, mask = pad_batch([r[:16] for r in rolls])
    after = {}
    for wd in (0.0, 0.5):
        config = TrainConfig(**{**TINY, "optimizer": "sgd", "learning_rate": 0.1, "lr_schedule": "constant", "weight_decay": wd, "clip_norm": 0.0})
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
