"""rbmsearch.evaluate: the warnings that say when AIS/RAISE or the accuracy's Gibbs chains are too
short, `evaluate_run` adding test scores to a run's metrics.json, and the evaluate CLI on a run
directory alone."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys

import pytest

from rbmsearch.data import Dataset, read_dataset
from rbmsearch.evaluate import EvalSettings, evaluate, evaluate_run
from rbmsearch.run import load_run


def weak_model():
    from rbmsearch.model import ModelConfig, RnnRbm

    return RnnRbm(ModelConfig(n_hidden=12, n_recurrent=8, init_std=0.05), seed=0)


def test_nll_gap_flags_annealing_that_is_too_short(caplog, toy_dataset, sticky_model):
    """AIS and RAISE disagree by whole nats on a sharp model with 10 temperatures, and a
    warning says so; on a weak model they agree and nothing is logged."""
    rolls = toy_dataset.rolls("valid")
    settings = EvalSettings(ais_runs=4, ais_betas=10, acc_samples=1, acc_gibbs_k=1, raise_runs=4)
    sharp = evaluate(sticky_model, rolls, settings)
    assert abs(sharp["nll_raise"] - sharp["nll"]) > 1.0 and sharp["raise_runs"] == 4
    warnings = [r for r in caplog.records if "not pinned down" in r.getMessage()]
    assert len(warnings) == 1 and "--ais-betas" in warnings[0].getMessage() and "of frames that disagree most" in warnings[0].getMessage()
    assert 0.05 <= sharp["nll_gap_share"] < math.inf  # never below its 5% of frames; above 1 if the rest lean the other way
    assert warnings[0].levelno == logging.WARNING and warnings[0].name.startswith("rbmsearch")
    caplog.clear()
    weak = evaluate(weak_model(), rolls, settings)
    assert abs(weak["nll_raise"] - weak["nll"]) < 0.05
    assert "not pinned down" not in caplog.text


def test_accuracy_mixing_gap_flags_chains_that_have_not_mixed(caplog, toy_dataset, sticky_model):
    """Chains from the true frames and from silence agree once mixed, and not before."""
    rolls = toy_dataset.rolls("valid")
    settings = dict(ais_runs=2, ais_betas=10, acc_samples=2, acc_start="silence")
    stuck = evaluate(sticky_model, rolls, EvalSettings(**settings, acc_gibbs_k=1))
    assert stuck["acc"] < 0.2 and stuck["acc_mixing_gap"] > 0.5  # the truth-started chains remember it
    warning = caplog.text
    assert "have not mixed" in warning and "--acc-gibbs-k" in warning
    caplog.clear()
    mixed = evaluate(weak_model(), rolls, EvalSettings(**settings, acc_gibbs_k=50))
    assert abs(mixed["acc_mixing_gap"]) < 0.03  # a weak RBM mixes in a few steps
    assert "have not mixed" not in caplog.text


def test_evaluate_run_adds_the_test_scores_to_metrics_json(tmp_path, tiny_run, toy_dataset, caplog):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    before = load_run(run_dir).metrics
    assert "test_nll" not in before and before["history"]
    test = evaluate_run(run_dir, toy_dataset, progress=False)
    assert set(test) == {"test_nll", "test_nll_ci95", "test_nll_raise", "test_nll_whole_split", "test_nll_whole_split_ci95", "test_acc", "test_acc_decoded",
                         "test_frames", "test_frames_in_split", "test_eval"}  # fmt: skip
    # The whole split was scored: its estimate is the score itself, and no control ran.
    assert (test["test_nll_whole_split"], test["test_nll_whole_split_ci95"], test["test_eval"]["control"]) == (test["test_nll"], test["test_nll_ci95"], None)
    assert 0 < test["test_nll_ci95"] < 10 and test["test_eval"]["subsample"] is False
    assert test["test_frames"] == test["test_frames_in_split"] == sum(len(r) for r in toy_dataset.rolls("test"))
    assert 0 < test["test_nll"] < 88 * math.log(2) and 0 <= test["test_acc"] <= 1
    # The run's own eval_* settings (tiny_config: 4 AIS runs, 20 temperatures, 2 samples).
    assert (test["test_eval"]["ais_runs"], test["test_eval"]["ais_betas"], test["test_eval"]["acc_samples"]) == (4, 20, 2)
    assert test["test_eval"]["sequences"] == len(toy_dataset.rolls("test"))
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["test_nll"] == test["test_nll"] and after["history"] == before["history"]  # added to, not replaced
    # A dataset without a test split: nothing is scored, metrics.json is left alone, and a warning says why.
    no_test = Dataset(toy_dataset.meta, tuple(p for p in toy_dataset.pieces if p.split != "test"))
    assert evaluate_run(run_dir, no_test, progress=False) == {}
    assert "no test split" in caplog.text
    assert json.loads((run_dir / "metrics.json").read_text()) == after


def test_eval_frames_scores_an_even_subsample_and_the_report_labels_it(tmp_path, tiny_run, toy_dataset):
    """TrainConfig.eval_frames: the final score takes an even spread of that many test frames,
    and the search's result line says so (a whole split says nothing)."""
    from rbmsearch.report import _result_lines

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["eval_frames"] = 30
    (run_dir / "config.json").write_text(json.dumps(config))
    test = evaluate_run(run_dir, toy_dataset, progress=False)
    total = sum(len(r) for r in toy_dataset.rolls("test"))
    assert (test["test_frames"], test["test_frames_in_split"], test["test_eval"]["subsample"]) == (30, total, True)
    line = _result_lines("best", "exp", test, None, None)[0]
    assert f"on an even subsample of 30 of the {total:,} test frames; the whole split {test['test_nll_whole_split']:.3f} \u00b1 " in line
    assert test["test_eval"]["control"]["frames"] == total  # the control (eval_control_betas, on by default) scored every frame
    plain = {**test, "test_nll_whole_split": None}  # without a control
    assert _result_lines("best", "exp", plain, None, None)[0].endswith(f"on an even subsample of 30 of the {total:,} test frames")
    whole = {**test, "test_frames": total}
    assert "subsample" not in _result_lines("best", "exp", whole, None, None)[0]


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rbmsearch.evaluate", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_cli_rebuilds_the_model_from_the_run_directory_alone(tiny_run, tmp_path):
    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")  # the command keeps its shards in RUN_DIR/eval
    out = run_evaluate(str(tiny_run), "--ais-runs", "2", "--ais-betas", "10", "--acc-samples", "1", "--acc-gibbs-k", "5", "--raise-runs", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])  # the last line is one JSON object
    assert result["split"] == "test"  # the default split
    assert (result["ais_runs"], result["ais_betas"], result["acc_samples"], result["acc_gibbs_k"], result["raise_runs"]) == (2, 10, 1, 5, 2)
    assert result["run_dir"] == str(tiny_run) and result["data"] == json.loads((tiny_run / "config.json").read_text())["data"]["path"]
    assert 0 < result["nll"] < 88 * math.log(2) and 0 <= result["acc"] <= 1 and 0 <= result["acc_frame_mean"] <= 1
    assert 0 < result["nll_raise"] < 88 * math.log(2) and 0 <= result["acc_annealed"] <= 1 and result["frames"] > 0
    assert 0 <= result["acc_decoded"] <= 1 and 0 < result["acc_decoded_threshold"] <= 1 and 0 <= result["acc_repeat"] <= 1
    assert not any(line.startswith("{") for line in out.stderr.splitlines())  # messages go to stderr, the result alone to stdout


def test_evaluate_cli_scores_another_split_with_the_default_raise_runs(tiny_run, tmp_path, capsys):
    from rbmsearch.evaluate import main

    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")
    main([str(tiny_run), "--split", "valid", "--ais-runs", "4", "--ais-betas", "20", "--acc-samples", "2", "--acc-gibbs-k", "20"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["split"] == "valid" and result["ais_runs"] == 4 and result["ais_betas"] == 20 and result["raise_runs"] == 10
    assert result["frames"] == sum(len(r) for r in read_dataset(result["data"]).rolls("valid"))


def test_evaluate_cli_refuses_settings_the_annealing_cannot_use(tiny_run, tmp_path, capsys):
    from rbmsearch.evaluate import main

    tiny_run = shutil.copytree(tiny_run, tmp_path / "run")
    with pytest.raises(SystemExit) as info:
        main([str(tiny_run), "--ais-betas", "1", "--acc-samples", "1", "--acc-gibbs-k", "1"])
    assert str(info.value.code).startswith("error: ") and "n_betas" in str(info.value.code)
    assert capsys.readouterr().out.strip() == ""
    with pytest.raises(SystemExit) as info:
        main([str(tiny_run), "--ais-betas", "100", "--max-betas", "50"])
    assert "max_betas to be 0 or at least ais_betas (100), but got 50" in str(info.value.code)
    with pytest.raises(SystemExit) as info:
        main([str(tiny_run), "--frames", "10", "--control-betas", "1"])
    assert str(info.value.code) == "error: --control-betas must be 0 (off) or at least 2, but got 1"


@pytest.mark.slow
def test_evaluate_cli_interrupted_then_resumed_recomputes_no_finished_shard(tiny_run, tmp_path, capsys):
    """Ctrl-C after the first shards are stored; the same command again reuses them, shows the
    running NLL with its interval, and gives one uninterrupted run's figures."""
    import signal
    import time

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    shutil.rmtree(run_dir / "eval", ignore_errors=True)  # other tests' shards in tiny_run would end the wait below at once
    # Long enough after its first shard (about 3x that shard's time) that Ctrl-C lands mid-run on a busy machine.
    args = [sys.executable, "-m", "rbmsearch.evaluate", str(run_dir), "--split", "train", "--ais-runs", "8", "--ais-betas", "1200",
            "--start-betas", "1200", "--acc-samples", "2", "--acc-gibbs-k", "200", "--shard-frames", "30"]  # fmt: skip
    # SIGINT as a terminal's Ctrl-C sends it, even when this run of the tests was started in the
    # background (a shell then starts its children with SIGINT ignored, and Python keeps that).
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    deadline = time.monotonic() + 240
    while not list(run_dir.glob("eval/*/shard-*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-2000:]
    stored = {p: p.stat().st_mtime_ns for p in run_dir.glob("eval/*/shard-*.npz")}
    assert stored, err[-2000:]
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.splitlines()[-1])
    assert result["shards_reused"] == len(stored) < result["shards"]  # interrupted before the end
    assert {p: p.stat().st_mtime_ns for p in stored} == stored  # reused, not written again
    assert "NLL " in resumed.stderr and "\u00b1" in resumed.stderr  # the bar's running estimate
    shutil.rmtree(run_dir / "eval")
    from rbmsearch.evaluate import main as evaluate_main  # the uninterrupted run in this process: TensorFlow is up already

    capsys.readouterr()
    evaluate_main(args[3:])
    fresh = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {k: fresh[k] for k in ("nll", "nll_raise", "acc", "acc_decoded")} == {k: result[k] for k in ("nll", "nll_raise", "acc", "acc_decoded")}


def test_gap_share_tells_a_gap_held_by_a_few_frames_from_one_spread_over_all():
    import numpy as np

    from rbmsearch.evaluate import gap_share

    ll_raise = np.zeros(100)
    few = np.r_[np.full(5, 2.0), np.full(95, 0.001)]  # 5 frames 2 nats apart, the rest nearly agreed
    assert gap_share(few, ll_raise) > 0.95
    assert gap_share(np.full(100, 0.1), ll_raise) == pytest.approx(0.05)  # spread evenly: 5% of frames, 5% of it
    assert gap_share(-few, ll_raise) == gap_share(few, ll_raise)  # RAISE below AIS: the same share, the other way
    assert np.isnan(gap_share(ll_raise, ll_raise))  # agreed: no gap to share


def test_regression_estimate_narrows_the_interval_as_far_as_the_control_follows_the_frames():
    """On synthetic frames whose whole-split mean is known: a control that follows the frames
    (rho 0.99) narrows the interval about 7x and the intervals still cover the mean in about 95%
    of subsamples; a control of pure noise leaves about the plain interval; a biased control
    (offset, scaled) gives the same estimate as an unbiased one."""
    import numpy as np

    from rbmsearch.evaluate import _mean_ci95, regression_estimate, subsample

    rng = np.random.default_rng(0)
    covered, ratios = 0, []
    for _ in range(200):
        x = rng.normal(-2.5, 2.8, 20_000)  # the control: each frame's cheap score
        y = x + rng.normal(0.3, 0.4, len(x))  # the full score: the control plus errors of its own
        chosen = subsample(len(x), 500)[rng.permutation(500)[:400]]  # 400 of an even 500, in a random order
        estimate, half_width, rho = regression_estimate(y[chosen], x[chosen], x.mean())
        covered += abs(estimate - y.mean()) <= half_width
        ratios.append(_mean_ci95(y[chosen]) / half_width)
        assert rho > 0.98
    assert 180 <= covered <= 199  # a 95% interval: 190 expected, 180 to 199 holds 99.7% of the time
    assert 6 < np.median(ratios) < 8.5  # 1 / sqrt(1 - rho^2) = 7.1
    noise = rng.normal(0, 1, len(x))
    e_noise, hw_noise, rho_noise = regression_estimate(y[chosen], noise[chosen], noise.mean())
    assert abs(rho_noise) < 0.2 and 0.9 < hw_noise / _mean_ci95(y[chosen]) < 1.1
    biased = regression_estimate(y[chosen], 3.0 * x[chosen] - 7.0, 3.0 * x.mean() - 7.0)
    assert biased[:2] == pytest.approx((estimate, half_width))
    assert regression_estimate(y[chosen], np.zeros(len(chosen)), 0.0)[0] == pytest.approx(y[chosen].mean())  # a constant control: the plain mean
    assert all(np.isnan(regression_estimate(y[:2], x[:2], 0.0)))  # too few frames for an interval


def test_a_subsample_with_its_control_estimates_the_whole_splits_nll_and_resumes(tmp_path, toy_dataset):
    """evaluate(frames=N) with the control: the whole-split estimate lies within its interval of
    the whole split's own score, with a narrower interval than the subsample's; the control's
    shards are stored and reused; control_betas 0 turns it off."""
    rolls = toy_dataset.rolls("train")
    settings = EvalSettings(ais_runs=8, ais_betas=50, acc_samples=1, acc_gibbs_k=5, raise_runs=4, gap_tolerance=0)
    model = weak_model()
    whole = evaluate(model, rolls, settings)
    assert whole["nll_whole_split"] == whole["nll"] and whole["control"] is None
    sub = evaluate(model, rolls, settings, frames=40, store_root=tmp_path, control_betas=50, split="train")
    control = sub["control"]
    assert control["frames"] == whole["frames"] > 40 and control["betas"] == 50 and control["correlation"] > 0.9
    assert abs(sub["nll_whole_split"] - whole["nll"]) <= sub["nll_whole_split_ci95"] < sub["nll_ci95"]
    assert abs(sub["nll_raise_whole_split"] - whole["nll_raise"]) <= sub["nll_raise_whole_split_ci95"]
    stored = sorted(tmp_path.glob("train-control-*/shard-*.npz"))
    assert len(stored) == control["shards"] and control["shards_reused"] == 0
    again = evaluate(model, rolls, settings, frames=40, store_root=tmp_path, control_betas=50, split="train")
    assert again["control"]["shards_reused"] == control["shards"] and again["nll_whole_split"] == sub["nll_whole_split"]
    off = evaluate(model, rolls, settings, frames=40, control_betas=0)
    assert off["nll_whole_split"] is None and off["control"] is None and off["nll"] == sub["nll"]
