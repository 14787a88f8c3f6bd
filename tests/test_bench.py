"""rbmsearch.roofline and `bench train`: the FLOP count of a training step, the model-shaped
limit, and the benchmark against a reference implementation run on the same data (a small
NumPy RBM trainer written here, since users have no ../shared)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

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
    fwd += 15 * 2 * 2 * 88 * 150 + 2 * 2 * 88 * 150  # the chain's two products per step, two free energies
    bwd = 2 * 2 * 88 * 150  # the free energies' weight gradient only: v and the chain's sample are data
    bwd += 2 * 2 * 100 * 238  # the bias maps' weight and input gradients
    bwd += 2 * 2 * 100 * 100  # the recurrence's weight and input gradients
    bwd += 2 * 88 * 100  # the input projection's weight gradient only: its input is the data
    assert fwd + bwd == 1_135_600
    assert train_step_flops(88, 150, 100, 15, frames=1, sequences=1, steps=1) == 1_135_600
    # 800 real frames in 16 windows of 50: every product scales with the frames.
    assert train_step_flops(88, 150, 100, 15, frames=800, sequences=16, steps=50) == 800 * 1_135_600
    # Padding (16 x 50 frames read, 500 real) costs only the RNN's products.
    padded = train_step_flops(88, 150, 100, 15, frames=500, sequences=16, steps=50) - 500 * 1_135_600
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
    command = [sys.executable, "-m", "rbmsearch.bench", "train", "--source", str(toy_parquet), "--epochs", "1", "--runs", "2", "--reference", str(script), "--set", "cd_k=2"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.splitlines()[-1])
    assert figures["config"]["cd_k"] == 2 and figures["default_config"]["config"]["cd_k"] == 3
    for f in (figures, figures["default_config"]):
        assert f["frames_per_s"] in f["frames_per_s_runs"] and len(f["frames_per_s_runs"]) == 2
        assert f["roofline_fraction"] == pytest.approx(f["achieved_gflops"] / f["limit_gflops"], abs=0.002)
        assert f["limit_gflops"] == max(f["limit_gflops_before_after"]) and len(f["limit_gflops_before_after"]) == 2
        assert f["mflop_per_frame"] > 0
    assert len(figures["reference_ratio_runs"]) == 2 and figures["reference_ratio"] > 0
    assert "reference_ratio" not in figures["default_config"]
    missing = subprocess.run(command[:-4] + ["--reference", str(tmp_path / "nope.py")], capture_output=True, text=True, timeout=600)
    assert missing.returncode == 1 and "nope.py: no such file" in missing.stderr
    gpu = subprocess.run([sys.executable, "-m", "rbmsearch.bench", "generate", "--device", "gpu", "--steps", "4", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):  # on a machine without one, the refusal
        assert gpu.returncode == 1 and "--device gpu, but TensorFlow sees no GPU" in gpu.stderr
    else:
        assert gpu.returncode == 0 and json.loads(gpu.stdout.splitlines()[-1])["frames_per_s"] > 0
