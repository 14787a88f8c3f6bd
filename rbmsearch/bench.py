"""Benchmarks that users run on their own hardware.

    python -m rbmsearch.bench NAME [options]      # NAME: data, train, profile, generate, evaluate, tune, render, fuzz

Each benchmark logs progress to stderr and ends with its figures as one JSON line on stdout.
`data`: import speed and Parquet load time. `train`: training frames/s of full CD-k steps at
the paper's size and at the default configuration, with their exact FLOPs, the fraction of
this machine's rate on the model's own products (`rbmsearch.roofline`, best of several
timings before and after), and with --reference the ratio per CPU-second to another
implementation run on the same data, alternating; with --trials N, N trainings side by side in
their own processes, as a search runs its trials, summed. `profile`: where a training step's
time goes, its pieces each compiled alone and timed on the same batches. `generate`: generation
frames/s, one chain and 16 in a batch. `evaluate`: scoring a test split (AIS, RAISE and the
sampled accuracy) in frames/s, with its FLOPs and random draws per frame and the share of this
machine's rate on the same products, and the NLL with its interval. `tune`: Ray Tune's overhead per trial, and concurrent
against sequential trials per hour. `render`: rendering 8 samples, and building a 50-trial
gallery page. `fuzz`: importing generated pathological MIDI files (`rbmsearch.fuzz`):
crashes, files/s and peak memory. Measured figures and their commands: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rbmsearch.console import cli, import_tensorflow
from rbmsearch.errors import BenchError
from rbmsearch.files import write_json

# The paper's model for JSB (88 visible, 150 hidden, 100 recurrent, CD-15): the size the
# throughput targets are stated for, whatever TrainConfig's defaults are.
PAPER_SIZE = {"n_hidden": 150, "n_recurrent": 100, "cd_k": 15}


def bench_data(args: argparse.Namespace) -> dict:
    from rbmsearch.data import BuildOptions, build, read_dataset

    options = BuildOptions(workers=args.workers, progress=False, steps_per_quarter=args.steps_per_quarter)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.parquet"
        start = time.perf_counter()
        built = build(args.source, out, options)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = read_dataset(out)
        load_s = time.perf_counter() - start
        size = out.stat().st_size
    frames = sum(len(p.roll) for p in loaded.pieces)
    files = len(built.pieces) + len(built.skipped)
    return {
        "source": args.source,
        "workers": args.workers,
        "files": files,  # for a pickle: its pieces
        "pieces": len(built.pieces),
        "skipped": len(built.skipped),
        "frames": frames,
        "build_s": round(build_s, 3),
        "files_per_s": round(files / build_s, 1),
        "frames_per_s": round(frames / build_s),
        "load_s": round(load_s, 4),
        "load_frames_per_s": round(frames / load_s),
        "parquet_bytes": size,
    }


def _load_dataset(source: str):
    from rbmsearch.data import BuildOptions, load_source, read_dataset

    return read_dataset(source) if source.endswith(".parquet") else load_source(source, BuildOptions(progress=False))


def bench_evaluate(args: argparse.Namespace) -> dict:
    """The test split's score of a run (or of the default configuration, trained first)."""
    from rbmsearch.config import TrainConfig
    from rbmsearch.data import read_dataset
    from rbmsearch.evaluate import EvalSettings, evaluate
    from rbmsearch.model import configure_devices
    from rbmsearch.roofline import chain_matmul_gflops
    from rbmsearch.run import load_run
    from rbmsearch.train import train

    devices = configure_devices()
    dataset = read_dataset(args.source)
    with tempfile.TemporaryDirectory(prefix="rbmsearch-bench-") as tmp:
        run_dir = args.run
        if run_dir is None:
            run_dir = Path(tmp) / "run"
            train(TrainConfig(), dataset, run_dir, data_path=args.source, evaluate_test=False)
        model = load_run(run_dir).model
        n_v, n_h = model.W.shape
        settings = EvalSettings(ais_runs=args.ais_runs, ais_betas=args.ais_betas, seed=args.seed, gap_tolerance=args.gap_tolerance, base=args.base)
        limit_before = chain_matmul_gflops(n_v, n_h)
        # The full score's own cost per frame: without the whole-split control, which a subsample would add.
        result = evaluate(model, dataset.rolls("test"), settings, progress=True, frames=args.frames, use_ray=False, control_betas=0)
        limit = max(limit_before, chain_matmul_gflops(n_v, n_h))
    frames, seconds, steps = result["frames"], result["seconds"], result["gibbs_sweeps_per_frame"]
    flops = 4 * n_v * n_h * steps  # per frame: the two products of every Gibbs sweep
    keys = ("nll", "nll_raise", "nll_ci95", "nll_gap", "nll_gap_share", "acc", "acc_decoded", "acc_mixing_gap", "frames", "frames_in_split", "subsample",
            "ais_runs", "ais_betas", "raise_runs", "gap_tolerance", "base", "betas_by_shard", "tail_by_shard", "gibbs_sweeps_per_frame")  # fmt: skip
    return {
        "source": args.source,
        "run": str(args.run) if args.run else "the default configuration, trained first",
        **{k: result[k] for k in keys},
        "seconds": seconds,
        "frames_per_s": round(frames / seconds, 2),
        "random_draws_per_frame": steps * (n_v + n_h),
        "mflop_per_frame": round(flops / 1e6, 1),
        "achieved_gflops": round(frames * flops / seconds / 1e9, 1),
        "limit_gflops": round(limit, 1),
        "limit_fraction": round(frames * flops / seconds / 1e9 / limit, 3),
        "devices": devices,
    }


def select_device(device: str) -> str:
    """Make `device` ("auto", "cpu" or "gpu") the one TensorFlow uses, before any op runs; returns
    the device summary. "gpu" with no GPU visible raises BenchError; "cpu" hides the GPUs."""
    import tensorflow as tf

    from rbmsearch.model import configure_devices

    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise BenchError("--device gpu, but TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty); install TensorFlow's CUDA build (pip install -e '.[gpu]') or use --device cpu.")
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    return configure_devices()


def _epochs(step, rolls, config, epochs: range, n_v: int) -> dict:
    """Train `epochs` epochs through `step`: frames, the FLOPs done (`roofline.train_step_flops`
    of each batch's real shapes), wall and CPU seconds."""
    import numpy as np
    import tensorflow as tf

    from rbmsearch.roofline import train_step_flops
    from rbmsearch.train import minibatches

    frames = flops = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for e in epochs:
        for i, (v, mask) in enumerate(minibatches(rolls, config, np.random.default_rng([0, e]))):
            step(v, mask, tf.constant([0, e * 100_003 + i], tf.int64)).numpy()
            n, (b, t) = int(mask.sum()), mask.shape
            frames += n
            flops += train_step_flops(n_v, config.n_hidden, config.n_recurrent, config.cd_k, n, b, t)
    return {"frames": frames, "flops": flops, "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def _reference_run(path: str, pickle_path: str, config, epochs: int) -> dict:
    """One run of the TF-1 reference script at `config`'s sizes: its JSON line, which ends its stdout."""
    import subprocess
    import sys

    command = [sys.executable, path, "--data", pickle_path, "--n-hidden", str(config.n_hidden), "--n-recurrent", str(config.n_recurrent), "--cd-k", str(config.cd_k), "--epochs", str(epochs)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise BenchError(f"the reference {path} failed (exit {out.returncode}): {(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise BenchError(f"the reference {path} did not end with a JSON line ({e.msg}): {lines[-1][:200]!r}") from e


def _as_pickle(source: str, tmp: Path) -> str:
    """A benchmark pickle of `source` for the reference: the source itself if it is one."""
    if source.endswith(".pickle"):
        return source
    import pickle

    import numpy as np

    from rbmsearch.midi import MIN_MIDI_PITCH

    dataset = _load_dataset(source)
    splits = {s: [[tuple(int(p) + MIN_MIDI_PITCH for p in np.flatnonzero(frame)) for frame in roll] for roll in dataset.rolls(s)] for s in ("train", "valid", "test")}
    path = tmp / "reference.pickle"
    path.write_bytes(pickle.dumps(splits))
    return str(path)


def _timed_runs(config, rolls, epochs: int, runs: int, between: Callable[[int], None]) -> list[dict]:
    """Build `config`'s model and training step, warm it up for an epoch (the trace), then time
    `runs` runs of `epochs` epochs each (`_epochs`), calling `between(r)` before run r and after the last."""
    from rbmsearch.model import ModelConfig, RnnRbm
    from rbmsearch.train import ParameterAverage, make_optimizer, make_train_step

    model = RnnRbm(ModelConfig.of(config), seed=config.seed)
    steps_per_epoch = 100  # only the schedules and the average read it; the timing does not depend on it
    average = ParameterAverage(model, config.average_epochs * steps_per_epoch) if config.average_epochs else None
    step = make_train_step(model, make_optimizer(config, steps_per_epoch), config, average=average)
    n_v = model.config.n_visible
    _epochs(step, rolls, config, range(0, 1), n_v)  # trace and warm up
    out = []
    for r in range(runs):
        between(r)
        out.append(_epochs(step, rolls, config, range(1 + r * epochs, 1 + (r + 1) * epochs), n_v))
    between(runs)
    return out


@dataclass(frozen=True)
class SideBySide:
    """`bench train --trials`: `count` trainings in their own processes, each on `threads` TF threads
    (ops on `op_threads` each) and `device`."""

    count: int
    threads: int
    op_threads: int
    device: str


def _trial_process(trials: SideBySide, config, rolls, epochs: int, runs: int, barrier, results) -> None:
    """One of `trials` in its own process, as a search trial with that many CPUs; each run starts
    with the others' (`barrier`: ready, then go). Puts its runs on `results`."""
    from rbmsearch.workers import set_tf_threads

    set_tf_threads(trials.threads, trials.op_threads)
    select_device(trials.device)
    results.put(_timed_runs(config, rolls, epochs, runs, lambda r: (barrier.wait(), barrier.wait())))


def _side_by_side(trials: SideBySide, config, rolls, epochs: int, runs: int, between: Callable[[int], None]) -> list[dict]:
    """The trainings of `trials`, run r of each started together, `between(r)` while they wait; per
    run their frames, FLOPs and CPU seconds summed, and the seconds of the slowest (each times its own run)."""
    import multiprocessing
    import queue
    import threading

    context = multiprocessing.get_context("spawn")  # fresh interpreters: each sets its own TF threads
    barrier, results = context.Barrier(trials.count + 1), context.Queue()
    processes = [context.Process(target=_trial_process, args=(trials, config, rolls, epochs, runs, barrier, results), daemon=True) for _ in range(trials.count)]
    for p in processes:
        p.start()
    ended = threading.Event()

    def failed() -> bool:
        return any(p.exitcode not in (None, 0) for p in processes)

    def watch() -> None:  # a trial that dies would leave the others waiting for it: break the barrier
        while not ended.wait(1.0):
            if failed():
                barrier.abort()
                return

    threading.Thread(target=watch, daemon=True).start()
    try:
        for r in range(runs + 1):
            barrier.wait()  # every trial is ready for run r (or has ended the last)
            between(r)  # the limit and the reference run while the trials wait
            barrier.wait()  # go
        per_trial = []
        while len(per_trial) < trials.count:
            try:
                per_trial.append(results.get(timeout=1.0))
            except queue.Empty:
                if failed():
                    raise
    except (threading.BrokenBarrierError, queue.Empty) as e:
        codes = [p.exitcode for p in processes]
        raise BenchError(f"--trials {trials.count}: a training process failed (exit codes {codes}); run with --trials 1 to see its error.") from e
    finally:  # on any error here too (the reference's, Ctrl-C): release the trials, then end them
        ended.set()
        barrier.abort()
        for p in processes:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return [
        {"frames": sum(t[r]["frames"] for t in per_trial), "flops": sum(t[r]["flops"] for t in per_trial), "cpu_seconds": sum(t[r]["cpu_seconds"] for t in per_trial), "seconds": max(t[r]["seconds"] for t in per_trial)}
        for r in range(runs)
    ]


def _median_batch(rolls, config) -> tuple[int, int, int]:
    """The model's own shapes: (frames, sequences, steps) of the median batch of an epoch."""
    import numpy as np

    from rbmsearch.train import minibatches

    shapes = sorted((int(mask.sum()), *mask.shape) for _, mask in minibatches(rolls, config, np.random.default_rng([0, 0])))
    return shapes[len(shapes) // 2]


def _train_figures(config, rolls, epochs: int, runs: int, reference: tuple[str, str] | None, trials: SideBySide | None = None) -> dict:
    """`runs` timed runs of `epochs` epochs at `config` (after a warm-up epoch), alternating with the
    reference when one is given; the model-shaped limit before and after; the figures. With
    `trials`, that many trainings side by side, their figures summed."""
    import statistics

    import numpy as np

    from rbmsearch.model import ModelConfig
    from rbmsearch.roofline import model_limit_gflops, train_products

    n_v = ModelConfig.of(config).n_visible
    n, b, t = _median_batch(rolls, config)
    products = train_products(n_v, config.n_hidden, config.n_recurrent, config.cd_k, n, b, t)
    limits, theirs = [], []

    def between(r: int) -> None:  # the reference after each run; the limit before the first run and after all
        if r > 0 and reference is not None:
            theirs.append(_reference_run(*reference, config, epochs))
        if r == 0 or r == runs:
            limits.append(model_limit_gflops(products))

    if trials is None:
        ours = _timed_runs(config, rolls, epochs, runs, between)
    else:
        ours = _side_by_side(trials, config, rolls, epochs, runs, between)
    limit = max(limits)
    fps = [o["frames"] / o["seconds"] for o in ours]
    gflops = [o["flops"] / o["seconds"] / 1e9 for o in ours]
    median = int(np.argsort(fps)[runs // 2])  # the run whose frames/s is the median
    figures = {
        "config": {k: getattr(config, k) for k in ("n_hidden", "n_recurrent", "rnn", "cd_k", "window", "batch_size")},
        "frames_per_epoch": ours[0]["frames"] // epochs // (trials.count if trials else 1),
        "frames_per_s": round(fps[median]),
        "frames_per_s_runs": [round(f) for f in fps],
        "frames_per_cpu_s": round(ours[median]["frames"] / ours[median]["cpu_seconds"]),
        "mflop_per_frame": round(ours[0]["flops"] / ours[0]["frames"] / 1e6, 4),
        "achieved_gflops": round(gflops[median], 1),
        "limit_gflops": round(limit, 1),
        "limit_gflops_before_after": [round(x, 1) for x in limits],
        "limit_shape": {"frames": n, "sequences": b, "steps": t},
        "roofline_fraction": round(gflops[median] / limit, 3),
    }
    if theirs:
        per_cpu_s = [th["frames"] / sum(th["epoch_cpu_s"][1:]) for th in theirs]  # its timed epochs (0 is its warm-up)
        ratios = [(o["frames"] / o["cpu_seconds"]) / ref for o, ref in zip(ours, per_cpu_s)]
        figures["reference_frames_per_cpu_s_runs"] = [round(x) for x in per_cpu_s]
        figures["reference_frames_per_s_runs"] = [th["frames_per_s"] for th in theirs]
        figures["reference_ratio_runs"] = [round(x, 2) for x in ratios]
        figures["reference_ratio"] = round(statistics.median(ratios), 2)
    return figures


def _set_threads(args: argparse.Namespace) -> tuple[int, int]:
    """Before any op runs: TF's threads from --threads and --op-threads, as a training or
    generating process with that many CPUs gets them. Returns (threads, threads per op)."""
    from rbmsearch.workers import SMALL_OP_THREADS, set_tf_threads

    for name, value in (("--threads", args.threads), ("--op-threads", args.op_threads)):
        if value is not None and value < 1:
            raise BenchError(f"{name} must be at least 1, but got {value}.")
    threads, op_threads = args.threads or os.cpu_count() or 1, args.op_threads or SMALL_OP_THREADS
    set_tf_threads(threads, op_threads)
    return threads, op_threads


def bench_train(args: argparse.Namespace) -> dict:
    """Training throughput at the paper's size and at the default configuration: frames/s, exact
    FLOPs, the fraction of the model-shaped limit, and (--reference) the ratio to the TF-1 code."""
    from rbmsearch.config import TrainConfig
    from rbmsearch.noise import POOL_STEPS

    if args.reference and not Path(args.reference).is_file():
        raise BenchError(f"--reference {args.reference}: no such file; pass the path of the reference training script.")
    if args.trials < 1:
        raise BenchError(f"--trials must be at least 1, but got {args.trials}.")
    threads, op_threads = _set_threads(args)
    devices = select_device(args.device)
    rolls = _load_dataset(args.source).rolls("train")
    paper = TrainConfig(**PAPER_SIZE).with_overrides(args.set)
    # With --trials N the limit is this process's (all --threads), and each training gets an Nth of them.
    trials = SideBySide(args.trials, max(1, threads // args.trials), op_threads, args.device) if args.trials > 1 else None
    with tempfile.TemporaryDirectory(prefix="rbmsearch-bench-") as tmp:
        reference = (args.reference, _as_pickle(args.source, Path(tmp))) if args.reference else None
        figures = {"source": args.source, "device": args.device, "threads": threads, "op_threads": op_threads, "runs": args.runs, "epochs_per_run": args.epochs}
        figures.update({"trials": args.trials, "threads_per_trial": trials.threads if trials else threads})
        figures["noise_pool_steps"] = POOL_STEPS  # training steps that share one table of the chain's noise (rbmsearch.noise)
        figures.update(_train_figures(paper, rolls, args.epochs, args.runs, reference, trials))
        if not args.paper_only:
            figures["default_config"] = _train_figures(TrainConfig(), rolls, args.epochs, args.runs, None, trials)
    figures["devices"] = devices
    return figures


def _step_pieces(model, step, config, pool) -> dict[str, Callable]:
    """A training step and its pieces, each compiled alone: (v, mask, seed, inputs) -> tensors,
    where `inputs` holds what the pieces after the RNN start from (`_piece_inputs`). The pieces
    run without dropout (the step with `config.dropout`)."""
    import tensorflow as tf

    from rbmsearch.model import free_energy, gibbs_chain

    k, recurrent = config.cd_k, model.recurrent_variables

    def with_tape(cost: Callable, sources) -> Callable:
        def gradient(v, mask, seed, inputs):
            with tf.GradientTape() as tape:
                tape.watch(sources(inputs))
                value = cost(v, mask, seed, inputs)
            return tape.gradient(value, sources(inputs))

        return gradient

    def cost(v, mask, seed, inputs):
        return model.cd_loss(v, mask, k, seed, config.dropout, pool)

    def rnn_and_bias_maps(v, mask, seed, inputs):
        u_prev, _ = model.run_rnn(v)
        return model.biases_from_u(tf.boolean_mask(u_prev, mask > 0.5))

    def chain(v, mask, seed, inputs):
        return gibbs_chain(inputs["v"], model.W, inputs["bv"], inputs["bh"], k, seed, pool)[0]

    def free_energies(v, mask, seed, inputs):
        W, bv, bh = model.W, inputs["bv"], inputs["bh"]
        return tf.reduce_mean(free_energy(inputs["v"], W, bv, bh) - free_energy(inputs["v_neg"], W, bv, bh))

    def noise_table(v, mask, seed, inputs):  # a new key each call: the table is drawn every time
        return pool.tables(seed * tf.constant([1, pool.steps], tf.int64), tf.shape(inputs["v"])[0], k)[2]

    pieces = {
        "cost_and_gradient": with_tape(cost, lambda inputs: model.trainable_variables),
        "cost": cost,
        "rnn_and_bias_maps": rnn_and_bias_maps,
        "rnn_forward_and_backward": with_tape(lambda v, mask, seed, inputs: tf.reduce_sum(model.run_rnn(v)[0]), lambda inputs: recurrent),
        "chain": chain,
        "free_energies_and_gradient": with_tape(free_energies, lambda inputs: [model.W, inputs["bv"], inputs["bh"]]),
        "noise_table_draw": noise_table,
    }
    compiled = {name: tf.function(piece, reduce_retracing=True) for name, piece in pieces.items()}
    return {"step": lambda v, mask, seed, inputs: step(v, mask, seed), **compiled}  # the step is compiled already


def _piece_inputs(model, batch, config, pool) -> dict:
    """What the pieces after the RNN start from, for one batch: its real frames, their biases and
    a negative sample (computed once, untimed)."""
    import tensorflow as tf

    from rbmsearch.model import gibbs_chain

    (v, mask), seed = batch, tf.constant([0, 0], tf.int64)
    u_prev, _ = model.run_rnn(v)
    real = tf.constant(mask) > 0.5
    bv, bh = model.biases_from_u(tf.boolean_mask(u_prev, real))
    v_real = tf.boolean_mask(tf.constant(v), real)
    return {"v": v_real, "bv": bv, "bh": bh, "v_neg": gibbs_chain(v_real, model.W, bv, bh, config.cd_k, seed, pool)[0]}


def bench_profile(args: argparse.Namespace) -> dict:
    """Where a training step's time goes: the step and its pieces, each compiled alone and timed
    on the same batches in turn, in ms per batch (median of --passes)."""
    import itertools
    import math
    import statistics

    import numpy as np
    import tensorflow as tf

    from rbmsearch.config import TrainConfig
    from rbmsearch.model import ModelConfig, RnnRbm
    from rbmsearch.noise import POOL_STEPS
    from rbmsearch.train import chain_noise_pool, make_optimizer, make_train_step, minibatches

    for name, value in (("--batches", args.batches), ("--passes", args.passes)):
        if value < 1:
            raise BenchError(f"{name} must be at least 1, but got {value}.")
    threads, op_threads = _set_threads(args)
    devices = select_device(args.device)
    config = TrainConfig(**PAPER_SIZE).with_overrides(args.set)
    rolls = _load_dataset(args.source).rolls("train")
    batches = list(itertools.islice(minibatches(rolls, config, np.random.default_rng(0)), args.batches))
    if not batches:
        raise BenchError(f"{args.source} has no training frames to profile on; pass a dataset with a train split.")
    model = RnnRbm(ModelConfig.of(config), seed=config.seed)
    step = make_train_step(model, make_optimizer(config, len(batches)), config)
    pool = chain_noise_pool(model, config, config.cd_k)
    pieces = _step_pieces(model, step, config, pool)
    inputs = [_piece_inputs(model, batch, config, pool) for batch in batches]
    batches = [(tf.constant(v), tf.constant(mask)) for v, mask in batches]
    ms: dict[str, list[float]] = {name: [] for name in pieces}
    for p in range(args.passes + 1):  # pass 0 traces and warms up
        for j, (name, piece) in enumerate(pieces.items()):
            start = time.perf_counter()
            for i, ((v, mask), given) in enumerate(zip(batches, inputs)):  # every piece and pass its own seeds: tables drawn anew
                out = piece(v, mask, tf.constant([p * len(pieces) + j, i], tf.int64), given)
            tf.nest.map_structure(lambda x: x.numpy(), out)
            tf.test.experimental.sync_devices()  # on a GPU, what is still queued
            if p:
                ms[name].append(1000 * (time.perf_counter() - start) / len(batches))
    median = {name: statistics.median(runs) for name, runs in ms.items()}
    real = sum(len(given["v"]) for given in inputs) / len(inputs)
    return {
        "source": args.source, "threads": threads, "op_threads": op_threads, "devices": devices,
        "config": {key: getattr(config, key) for key in ("n_hidden", "n_recurrent", "rnn", "cd_k", "window", "batch_size")},
        "batches": len(batches), "passes": args.passes, "real_frames_per_batch": round(real, 1),
        "frames_per_s": round(1000 * real / median["step"]),
        "ms_per_batch": {name: round(value, 3) for name, value in median.items()},
        "ms_per_batch_passes": {name: [round(x, 3) for x in runs] for name, runs in ms.items()},
        "noise_pool_steps": POOL_STEPS,  # training draws a table once per this many steps: noise_table_draw / this is its share of a step
        # what the step, the cost (and its gradient) and the chain drew here: training's 1 / POOL_STEPS when --batches is a multiple of it
        "noise_tables_per_batch": round(math.ceil(len(batches) / POOL_STEPS) / len(batches), 4),
    }  # fmt: skip


def bench_generate(args: argparse.Namespace) -> dict:
    from rbmsearch.model import ModelConfig, RnnRbm
    from rbmsearch.config import TrainConfig

    threads, op_threads = _set_threads(args)
    devices = select_device(args.device)
    config = TrainConfig(**PAPER_SIZE).with_overrides(args.set)
    model = RnnRbm(ModelConfig.of(config), seed=0)
    figures = {"gibbs_k": args.k, "steps": args.steps, "threads": threads, "op_threads": op_threads, "devices": devices}
    for n in (1, 16):
        model.generate(n, args.steps, args.k, seed=0)  # trace and warm up
        start = time.perf_counter()
        for r in range(args.repeats):
            model.generate(n, args.steps, args.k, seed=r + 1)
        seconds = (time.perf_counter() - start) / args.repeats
        key = "frames_per_s" if n == 1 else f"frames_per_s_{n}_samples"
        figures[key] = round(n * args.steps / seconds)
    return figures


def bench_render(args: argparse.Namespace) -> dict:
    import resource
    import shutil
    import tracemalloc

    import numpy as np

    from rbmsearch.data import Dataset, DatasetMeta, Piece
    from rbmsearch.midi import NUM_PITCHES
    from rbmsearch.render import find_fluidsynth, render_run
    from rbmsearch.gallery import build_page
    from rbmsearch.config import TrainConfig
    from rbmsearch.train import train

    with tempfile.TemporaryDirectory(prefix="rbmsearch-bench-") as tmp:
        tmp = Path(tmp)
        # A real run directory at the paper's size: 1 epoch on random 4-note chords is enough to time rendering.
        rng = np.random.default_rng(0)
        pieces = []
        for i in range(8):
            roll = np.zeros((64, NUM_PITCHES), bool)
            for t in range(64):
                roll[t, rng.choice(np.arange(30, 60), 4, replace=False)] = True
            pieces.append(Piece(f"p{i}", "valid" if i == 7 else "train", roll))
        dataset = Dataset(DatasetMeta(source="bench", steps_per_quarter=4, qpm=100.0), tuple(pieces))
        config = TrainConfig(**PAPER_SIZE, epochs=1, pretrain_epochs=1, monitor_frames=50, monitor_ais_runs=2, monitor_ais_betas=10)
        train(config, dataset, tmp / "run", evaluate_test=False)
        render_run(tmp / "run", tmp / "warm", num=1, steps=16, synth=args.synth)  # compile generation once
        start = time.perf_counter()
        result = render_run(tmp / "run", tmp / "samples", num=args.num, steps=args.steps, synth=args.synth)
        render_s = time.perf_counter() - start

        # A 50-trial experiment as `rbmsearch.tune.finish` leaves it, with 3 trials rendered.
        exp = tmp / "exp"
        trials = []
        for i in range(args.trials):
            history = {str(e): float(9 - 2 * (1 - np.exp(-e / 10)) + 0.01 * i) for e in range(1, 28)}
            trials.append({"trial_id": f"t{i:03d}", "status": "TERMINATED", "params": {"n_hidden": 100 + i, "learning_rate": 1e-3},
                           "epochs": 27, "best": {"epoch": 27, "valid_monitor": history["27"], "valid_acc": 0.3}, "error": "",
                           "checkpoint": None, "history": history})  # fmt: skip
            if i < 3:
                shutil.copytree(tmp / "samples", exp / "samples" / f"trial_t{i:03d}")
        write_json(exp / "trials.json", trials)
        write_json(exp / "best.json", {"trial_id": "t000", "metrics": trials[0]["best"], "config": {"n_hidden": 100}})
        tracemalloc.start()
        start = time.perf_counter()
        build_page(exp)
        page_s = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        page_bytes = (exp / "index.html").stat().st_size
    return {
        "num": args.num,
        "steps": args.steps,
        "synth": result["synth"],
        "fluidsynth_installed": find_fluidsynth() is not None,
        "render_s": round(render_s, 2),
        "render_s_per_sample": round(render_s / args.num, 3),
        "page_trials": args.trials,
        "page_s": round(page_s, 3),
        "page_peak_python_mib": round(peak / 2**20, 1),
        "page_bytes": page_bytes,
        "process_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m rbmsearch.bench tune`."""
    parser.add_argument("--source", required=True, help="a dataset: .parquet, .pickle, MIDI folder, or bach-chorales")
    parser.add_argument("--trials", type=int, default=4, help="trials per search")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once in the parallel search")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field of the benchmarked trial")  # fmt: skip


def _benchmark_space(args: argparse.Namespace, concurrent: int, cpus: float):
    """Identical trials except the seed (the searched parameter), so both searches do the same work."""
    from dataclasses import asdict

    from rbmsearch.config import TrainConfig
    from rbmsearch.space import SearchSpace

    base = TrainConfig(n_hidden=100, n_recurrent=64, cd_k=5, pretrain_epochs=1, eval_ais_runs=2, eval_ais_betas=10, eval_acc_samples=1)
    config = base.with_overrides(args.set)
    fixed = {k: v for k, v in asdict(config).items() if k not in ("epochs", "seed")}
    raw = {
        "search": {"num_samples": args.trials, "max_epochs": args.epochs, "grace_period": args.epochs, "max_concurrent": concurrent,
                   "cpus_per_trial": cpus, "max_failures": 0, "keep_checkpoints": 1, "samples": 0, "reuse_actors": False},
        "fixed": fixed,
        "params": {"seed": {"type": "int", "low": 0, "high": 1_000_000}},
    }  # fmt: skip
    return SearchSpace.from_dict(raw, "the tune benchmark", "bench")


def bench_tune(args: argparse.Namespace) -> dict:
    """Ray/Tune overhead beyond training, and trials per hour with `--concurrent` trials vs one at a time.

    Overhead = wall time of the sequential search minus the trials' own time in `train`
    (reports and checkpoint uploads excluded): process start-up, imports, scheduling,
    checkpointing. The sequential search gives each trial all the machine's cores.
    """
    from rbmsearch.tune import run_search
    from rbmsearch.workers import ray_session

    cpus = os.cpu_count() or 1
    start = time.perf_counter()
    with ray_session():
        figures: dict = {"source": args.source, "trials": args.trials, "epochs": args.epochs, "ray_init_s": round(time.perf_counter() - start, 2)}
        with tempfile.TemporaryDirectory(prefix="rbmsearch-bench-") as storage:
            for label, concurrent, per_trial in (("sequential", 1, float(cpus)), ("concurrent", args.concurrent, max(1.0, cpus / args.concurrent))):
                space = _benchmark_space(args, concurrent, per_trial)
                start = time.perf_counter()
                _, results = run_search(space, args.source, storage, name=label, progress=False, finish_search=False)
                wall = time.perf_counter() - start
                train_s = sum(float(r.metrics.get("train_s", 0.0)) for r in results)
                figures[label] = {
                    "max_concurrent": concurrent,
                    "cpus_per_trial": per_trial,
                    "wall_s": round(wall, 2),
                    "train_s": round(train_s, 2),
                    "overhead_s": round(wall - train_s / concurrent, 2),
                    "trials_per_hour": round(args.trials / wall * 3600, 1),
                    "busy_fraction": round(train_s / (wall * concurrent), 3),  # of the trial slots
                    "errors": results.num_errors,
                }
    seq, par = figures["sequential"], figures["concurrent"]
    figures["overhead_fraction"] = round(seq["overhead_s"] / seq["wall_s"], 3)
    figures["overhead_s_per_trial"] = round(seq["overhead_s"] / args.trials, 2)
    figures["speedup"] = round(par["trials_per_hour"] / seq["trials_per_hour"], 2)
    return figures


def bench_fuzz(args: argparse.Namespace) -> dict:
    """Import a generated folder of good and pathological MIDI files (`rbmsearch.fuzz`)."""
    import resource

    from rbmsearch.fuzz import check_import, make_corpus

    with tempfile.TemporaryDirectory(prefix="rbmsearch-fuzz-") as folder:
        start = time.perf_counter()
        corpus = make_corpus(folder, args.files, args.seed)
        made_s = time.perf_counter() - start
        start = time.perf_counter()
        try:
            report, crash = check_import(folder, corpus, workers=args.workers), ""
        except Exception as e:  # a crash is the figure this benchmark exists to count
            report, crash = None, f"{type(e).__name__}: {e}"
        import_s = time.perf_counter() - start
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {
        "files": args.files,
        "seed": args.seed,
        "generate_s": round(made_s, 2),
        "import_s": round(import_s, 2),
        "files_per_s": round(args.files / import_s, 1),
        "crashes": int(bool(crash)),
        "crash": crash,
        "problems": len(report.problems) if report else None,
        "first_problems": report.problems[:5] if report else [],
        "imported": report.imported if report else None,
        "skipped": report.skipped if report else None,
        "skipped_by_kind": report.skipped_by_kind if report else {},
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


BENCHMARKS = {"evaluate": bench_evaluate, "profile": bench_profile, "fuzz": bench_fuzz, "data": bench_data, "train": bench_train, "generate": bench_generate, "tune": bench_tune, "render": bench_render}


def _thread_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="TensorFlow's threads, as a process with that many CPUs has (default: every core)")
    parser.add_argument("--op-threads", type=int, help="threads each op splits over (default 1, as training and generation run; ops run side by side on --threads)")


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.bench", description="Measure rbmsearch on this machine.")
    commands = parser.add_subparsers(dest="name", required=True)
    data = commands.add_parser("data", help="import a source to Parquet and load it back")
    data.add_argument("--source", required=True, help="a folder of MIDI files, a .pickle file, or bach-chorales")
    data.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    data.add_argument("--steps-per-quarter", type=int)
    train = commands.add_parser("train", help="training throughput at the paper's size and the default configuration")
    train.add_argument("--source", required=True, help="a dataset: .parquet, .pickle, folder, or bach-chorales")
    train.add_argument("--epochs", type=int, default=2, help="timed epochs per run, after one warm-up epoch")
    train.add_argument("--runs", type=int, default=3, help="timed runs (the median is reported; with --reference, alternating with it)")
    train.add_argument("--reference", metavar="PATH", help="a reference training script to run on the same data, alternating (e.g. the TF-1 RNN-RBM)")
    train.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="gpu: refuse when none is visible; cpu: hide the GPUs")
    train.add_argument("--paper-only", action="store_true", help="skip the default configuration")
    train.add_argument("--trials", type=int, default=1, help="trainings side by side, one process each on an Nth of --threads, as a search runs its trials; figures summed over them")
    _thread_arguments(train)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field of the paper-size run")
    profile = commands.add_parser("profile", help="where a training step's time goes: the step and its pieces, each timed alone")
    profile.add_argument("--source", required=True, help="a dataset: .parquet, .pickle, folder, or bach-chorales")
    profile.add_argument("--batches", type=int, default=32, help="training batches, each piece timed over all of them in turn")
    profile.add_argument("--passes", type=int, default=5, help="timed passes over the batches (the median is reported), after one warm-up")
    profile.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="gpu: refuse when none is visible; cpu: hide the GPUs")
    _thread_arguments(profile)
    profile.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field of the paper-size model")
    generate = commands.add_parser("generate", help="generation throughput")
    generate.add_argument("--steps", type=int, default=500, help="frames per sample")
    generate.add_argument("--k", type=int, default=25, help="Gibbs steps per frame")
    generate.add_argument("--repeats", type=int, default=3)
    generate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field")
    generate.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="gpu: refuse when none is visible; cpu: hide the GPUs")
    _thread_arguments(generate)
    _tune_arguments(commands.add_parser("tune", help="Ray Tune overhead, and concurrent vs sequential trials"))
    evaluate = commands.add_parser("evaluate", help="scoring a test split: frames/s, the share of this machine's limit, the NLL")
    evaluate.add_argument("--source", required=True, help="a Parquet dataset with a test split")
    evaluate.add_argument("--run", help="a run directory to score (default: train the default configuration first)")
    evaluate.add_argument("--frames", type=int, help="an even spread of this many test frames (default: all)")
    evaluate.add_argument("--ais-runs", type=int, default=100)
    evaluate.add_argument("--ais-betas", type=int, default=1000)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--gap-tolerance", type=float, default=0.05, help="0: always --ais-betas temperatures (the earlier protocol)")
    evaluate.add_argument("--base", choices=("fitted", "own-bv"), default="fitted")
    fuzz = commands.add_parser("fuzz", help="import good and pathological MIDI files: crashes, problems, speed, peak memory")
    fuzz.add_argument("--files", type=int, default=1000)
    fuzz.add_argument("--seed", type=int, default=0)
    fuzz.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    render = commands.add_parser("render", help="rendering samples and building the gallery page")
    render.add_argument("--num", type=int, default=8, help="samples")
    render.add_argument("--steps", type=int, default=256, help="steps per sample")
    render.add_argument("--trials", type=int, default=50, help="trials in the gallery's search")
    render.add_argument("--synth", choices=("auto", "fluidsynth", "builtin"), default="auto")
    args = parser.parse_args(argv)
    if args.name != "fuzz":
        import_tensorflow()  # here, without its start-up lines, before a benchmark loads it
    figures = BENCHMARKS[args.name](args)
    figures = {"benchmark": args.name, **figures, "cpus": os.cpu_count(), "machine": platform.machine()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
