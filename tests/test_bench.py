"""rbmsearch.roofline and `bench train`: the FLOP count of a training step, the model-shaped
limit, and the benchmark against a reference implementation run on the same data (a small
NumPy RBM trainer written here, since users have no ../shared)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rbmsearch.roofline import Product, model_limit_gflops, train_products, train_step_flops

# A reference implementation in the TF-1 script's command-line form: it trains an RBM with
# CD-k on the pickle's training frames (NumPy), epoch 0 as warm-up, and reports its own timing.
REFERENCE = textwrap.dedent(
    """
    import argparse, json, pickle, time
    import numpy as np
    p = argparse.ArgumentParser()
    for flag in ("--data", "--n-hidden", "--n-recurrent", "--cd-k", "--epochs"):
        p.add_argument(flag)
    a = p.parse_args()
    songs = pickle.load(open(a.data, "rb"))["train"]
    x = np.zeros((sum(len(s) for s in songs), 88), np.float32)
    row = 0
    for song in songs:
        for frame in song:
            x[row, [n - 21 for n in frame]] = 1
            row += 1
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.01, (88, int(a.n_hidden))).astype(np.float32)
    cpu = []
    for epoch in range(int(a.epochs) + 1):
        start = time.process_time()
        for batch in np.array_split(x, max(1, len(x) // 100)):
            v = batch
            for _ in range(int(a.cd_k)):
                h = (rng.random((len(v), W.shape[1])) < 1 / (1 + np.exp(-v @ W))).astype(np.float32)
                v = (rng.random((len(v), 88)) < 1 / (1 + np.exp(-h @ W.T))).astype(np.float32)
            W += 0.01 * (batch.T @ (1 / (1 + np.exp(-batch @ W))) - v.T @ (1 / (1 + np.exp(-v @ W)))) / len(batch)
        cpu.append(time.process_time() - start)
    frames = len(x) * int(a.epochs)
    print(json.dumps({"frames": frames, "frames_per_s": frames / sum(cpu[1:]), "epoch_cpu_s": cpu}))
    """
)


def test_a_training_step_counts_its_products_exactly():
    # The paper's size (88 visible, 150 hidden, 100 recurrent, CD-15), one frame, no padding:
    fwd = 2 * (88 * 100 + 100 * 100 + 100 * 88 + 100 * 150)  # input projection, recurrence, bias maps
    fwd += 15 * 2 * 2 * 88 * 150  # the chain's two products per step, the first v W also the data's free energy's
    fwd += 2 * 88 * 150  # the free energy of the chain's end
    bwd = 2 * 2 * 88 * 150  # the free energies' weight gradient only: v and the chain's sample are data
    bwd += 2 * 2 * 100 * 238  # the bias maps' weight and input gradients
    bwd += 2 * 2 * 100 * 100  # the recurrence's weight and input gradients
    bwd += 2 * 88 * 100  # the input projection's weight gradient only: its input is the data
    assert fwd + bwd == 1_109_200
    assert train_step_flops(88, 150, 100, 15, frames=1, sequences=1, steps=1) == 1_109_200
    # 800 real frames in 16 windows of 50: every product scales with the frames.
    assert train_step_flops(88, 150, 100, 15, frames=800, sequences=16, steps=50) == 800 * 1_109_200
    # Padding (16 x 50 frames read, 500 real) costs only the RNN's products.
    padded = train_step_flops(88, 150, 100, 15, frames=500, sequences=16, steps=50) - 500 * 1_109_200
    assert padded == 300 * (2 * 88 * 100 * 2 + 2 * 100 * 100 * 3)  # input projection (fwd, dW); recurrence (fwd, dW, du)
    serial = [p for p in train_products(88, 150, 100, 15, 800, 16, 50) if p.serial]
    assert [(p.what, p.count) for p in serial] == [("recurrence u Wuu", 50), ("recurrence du", 50)]


def test_model_limit_times_the_products_it_is_given():
    products = train_products(88, 20, 10, 2, frames=64, sequences=4, steps=16)
    limit = model_limit_gflops(products, repeats=2, best_of=2)
    assert math.isfinite(limit) and limit > 0
    with pytest.raises(ValueError, match="a serial product needs k == n"):
        model_limit_gflops([Product("bad", 3, 4, 5, 6, serial=True)])


@pytest.mark.slow
def test_bench_train_reports_both_configurations_and_the_reference_ratio(tmp_path, toy_parquet):
    script = tmp_path / "reference.py"
    script.write_text(REFERENCE)
    command = [sys.executable, "-m", "rbmsearch.bench", "train", "--source", str(toy_parquet), "--epochs", "1", "--runs", "2", "--threads", "2",
               "--reference", str(script), "--set", "cd_k=2"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.splitlines()[-1])
    assert figures["config"]["cd_k"] == 2 and figures["default_config"]["config"]["cd_k"] == 3
    assert (figures["threads"], figures["op_threads"]) == (2, 1)  # ops side by side on 2 threads, one thread each
    for f in (figures, figures["default_config"]):
        assert f["frames_per_s"] in f["frames_per_s_runs"] and len(f["frames_per_s_runs"]) == 2
        assert f["roofline_fraction"] == pytest.approx(f["achieved_gflops"] / f["limit_gflops"], rel=0.02)  # both rounded
        assert f["limit_gflops"] == max(f["limit_gflops_before_after"]) and len(f["limit_gflops_before_after"]) == 2
        assert f["mflop_per_frame"] > 0
    assert len(figures["reference_ratio_runs"]) == 2 and figures["reference_ratio"] > 0
    assert "reference_ratio" not in figures["default_config"]
    from rbmsearch.bench import main as bench_main  # the refusals in this process: no TensorFlow to start per case

    with pytest.raises(SystemExit, match="nope.py: no such file"):
        bench_main([*command[3:-4], "--reference", str(tmp_path / "nope.py")])
    with pytest.raises(SystemExit, match="--threads must be at least 1, but got 0"):
        bench_main(["train", "--source", str(toy_parquet), "--threads", "0"])
    with pytest.raises(SystemExit, match="--op-threads must be at least 1, but got 0"):
        bench_main(["train", "--source", str(toy_parquet), "--op-threads", "0"])
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):  # on a machine without one, the refusal
        with pytest.raises(SystemExit, match="--device gpu, but TensorFlow sees no GPU"):
            bench_main(["generate", "--device", "gpu", "--steps", "4", "--repeats", "1"])
    else:
        gpu = subprocess.run([sys.executable, "-m", "rbmsearch.bench", "generate", "--device", "gpu", "--steps", "4", "--repeats", "1"], capture_output=True, text=True, timeout=300)
        assert gpu.returncode == 0 and json.loads(gpu.stdout.splitlines()[-1])["frames_per_s"] > 0


@pytest.mark.slow
def test_bench_train_runs_trials_side_by_side_and_sums_their_figures(toy_parquet):
    """--trials 2: two trainings in their own processes, one thread each, as a search on 2 CPUs runs them."""
    from rbmsearch.data import read_dataset

    command = [sys.executable, "-m", "rbmsearch.bench", "train", "--source", str(toy_parquet), "--epochs", "1", "--runs", "2", "--threads", "2", "--paper-only",
               "--set", "cd_k=2", "--trials", "2"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.splitlines()[-1])
    assert (figures["trials"], figures["threads_per_trial"], figures["threads"]) == (2, 1, 2)
    # Each trial trains every training frame once an epoch; the run's frames are both trials' summed.
    train_frames = sum(len(roll) for roll in read_dataset(toy_parquet).rolls("train"))
    assert figures["frames_per_epoch"] == train_frames
    run_seconds = [2 * train_frames / fps for fps in figures["frames_per_s_runs"]]  # both trials' frames over the run's wall time
    assert len(run_seconds) == 2 and all(0 < s < 300 for s in run_seconds) and figures["frames_per_s"] in figures["frames_per_s_runs"]
    assert figures["roofline_fraction"] == pytest.approx(figures["achieved_gflops"] / figures["limit_gflops"], rel=0.02)  # both rounded
    assert figures["mflop_per_frame"] > 0 and "default_config" not in figures
    from rbmsearch.bench import main as bench_main

    with pytest.raises(SystemExit, match="--trials must be at least 1, but got 0"):
        bench_main(["train", "--source", str(toy_parquet), "--trials", "0"])


@pytest.mark.slow
def test_bench_profile_times_a_step_and_each_of_its_pieces(toy_parquet):
    """`bench profile`: the step and its pieces, each timed alone over the same batches; a GRU, so
    that the pieces hold for every RNN, not only the paper's."""
    from rbmsearch.config import TrainConfig
    from rbmsearch.data import read_dataset
    from rbmsearch.train import minibatches

    sizes = ["n_hidden=16", "n_recurrent=8", "cd_k=2", "batch_size=4", "window=8", "rnn=gru"]
    command = [sys.executable, "-m", "rbmsearch.bench", "profile", "--source", str(toy_parquet), "--batches", "3", "--passes", "2", "--threads", "2",
               *[arg for size in sizes for arg in ("--set", size)]]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.splitlines()[-1])
    assert figures["config"] | {"rnn": "gru", "cd_k": 2, "batch_size": 4} == figures["config"]
    pieces = {"step", "cost_and_gradient", "cost", "rnn_and_bias_maps", "rnn_forward_and_backward", "chain", "free_energies_and_gradient", "noise_table_draw"}
    assert set(figures["ms_per_batch"]) == set(figures["ms_per_batch_passes"]) == pieces
    for name, passes in figures["ms_per_batch_passes"].items():
        assert len(passes) == 2 and all(ms > 0 for ms in passes)
        assert figures["ms_per_batch"][name] == pytest.approx(sum(passes) / 2, abs=0.002)  # the median of two
    config = TrainConfig(n_hidden=16, n_recurrent=8, cd_k=2, batch_size=4, window=8, rnn="gru")
    masks = [mask for _, mask in minibatches(read_dataset(toy_parquet).rolls("train"), config, np.random.default_rng(0))]
    assert len(masks) > 3 and figures["batches"] == 3  # the first 3 of the epoch's batches
    masks = masks[:3]
    assert figures["real_frames_per_batch"] == pytest.approx(sum(m.sum() for m in masks) / 3, abs=0.05)
    assert figures["frames_per_s"] == pytest.approx(1000 * figures["real_frames_per_batch"] / figures["ms_per_batch"]["step"], rel=0.01)
    assert figures["noise_tables_per_batch"] == pytest.approx(1 / 3, abs=1e-4)  # each piece draws its own table for its 3 batches
    from rbmsearch.bench import main as bench_main

    with pytest.raises(SystemExit, match="--passes must be at least 1, but got 0"):
        bench_main(["profile", "--source", str(toy_parquet), "--passes", "0"])


@pytest.mark.slow
def test_bench_generate_runs_its_ops_side_by_side_and_reports_the_layout():
    command = [sys.executable, "-m", "rbmsearch.bench", "generate", "--device", "cpu", "--steps", "4", "--k", "2", "--repeats", "1", "--set", "n_hidden=16", "--set", "n_recurrent=8"]
    out = subprocess.run([*command, "--threads", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.splitlines()[-1])
    assert (figures["threads"], figures["op_threads"]) == (2, 1)  # as generation runs: one thread per op
    assert figures["frames_per_s"] > 0 and figures["frames_per_s_16_samples"] > 0
    refused = subprocess.run([*command, "--op-threads", "0"], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "--op-threads must be at least 1, but got 0" in refused.stderr


# Training and scoring a tiny model, with TensorFlow logging where every op is placed.
PLACEMENT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    tf.debugging.set_log_device_placement(True)
    from rbmsearch.config import TrainConfig
    from rbmsearch.evaluate import EvalSettings, evaluate
    from rbmsearch.model import ModelConfig, RnnRbm
    from rbmsearch.train import make_optimizer, make_train_step
    config = TrainConfig(n_hidden=8, n_recurrent=4, cd_k=2, epochs=1)
    model = RnnRbm(ModelConfig.of(config), seed=0)
    step = make_train_step(model, make_optimizer(config, 10), config)
    v = (np.random.default_rng(0).random((2, 6, 88)) < 0.1).astype(np.float32)
    step(v, np.ones((2, 6), np.float32), tf.constant([0, 1], tf.int64)).numpy()
    settings = EvalSettings(ais_runs=2, ais_betas=4, start_betas=2, acc_samples=1, acc_gibbs_k=2, raise_runs=2)
    evaluate(model, [v[0] > 0.5], settings, use_ray=False)
    print("GPU" if tf.config.list_physical_devices("GPU") else "CPU")
    """
)
# The work of training and scoring: each must run on the GPU when there is one.
COMPUTE_OPS = {"MatMul", "BatchMatMulV2", "Sigmoid", "Softplus", "Tanh", "StatelessRandomUniformV2", "AddV2", "Mul", "Sub", "Sum", "Mean", "Less", "Exp", "Log",
               "BitwiseXor", "RightShift", "Log1p", "Greater"}  # the chains' hashed noise, its logistic transform, the training chain's comparison


@pytest.mark.slow
def test_training_and_scoring_place_their_work_on_the_device_present():
    out = subprocess.run([sys.executable, "-c", PLACEMENT], capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    device = out.stdout.strip().splitlines()[-1]
    placed = [(op, dev) for op, dev in re.findall(r": \((\w+)\): /job:localhost/replica:0/task:0/device:(\w+):\d+", out.stderr) if op in COMPUTE_OPS]
    assert {"MatMul", "Sigmoid", "StatelessRandomUniformV2", "BitwiseXor", "Log1p", "Greater"} <= {op for op, _ in placed}  # the log was read
    elsewhere = sorted({op for op, dev in placed if dev != device})
    assert not elsewhere, f"ops placed off the {device}: {elsewhere}"
