"""The training benchmarks of `python -m rbmsearch.bench`, and the set-up every TensorFlow benchmark shares.

`bench_train`: training frames/s of full CD-k steps at the paper's size and at the default
configuration, with their exact FLOPs (`rbmsearch.roofline`), the fraction of this machine's rate on
the model's own products (best of several timings, before and after), with a reference trainer run
on the same data, alternating, and with trainings side by side in their own processes as a search
runs its trials (`SideBySide`). `bench_profile`: where a training step's time goes, its pieces each
compiled alone and timed on the same batches. Measured figures and their commands: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rbmsearch.config import TrainConfig
from rbmsearch.errors import BenchError

__all__ = ["PAPER_SIZE", "Setup", "SideBySide", "bench_profile", "bench_train", "load_dataset", "select_device", "set_up"]

# The paper's model for JSB (88 visible, 150 hidden, 100 recurrent, CD-15): the size the
# throughput targets are stated for, whatever TrainConfig's defaults are.
PAPER_SIZE = {"n_hidden": 150, "n_recurrent": 100, "cd_k": 15}


def load_dataset(source: str):
    """A dataset from a .parquet file, or from a source `rbmsearch.data` builds (in memory)."""
    from rbmsearch.data import BuildOptions, load_source, read_dataset

    return read_dataset(source) if source.endswith(".parquet") else load_source(source, BuildOptions(progress=False))


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


def _sizes(config) -> dict:
    """What a benchmark's JSON says of the configuration it trained."""
    return {key: getattr(config, key) for key in ("n_hidden", "n_recurrent", "rnn", "cd_k", "window", "batch_size")}


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

    dataset = load_dataset(source)
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
        "config": _sizes(config),
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


@dataclass(frozen=True)
class Setup:
    """What a TensorFlow benchmark runs on: TF's threads, the threads each op splits over, the
    device summary, and the paper-size configuration with the user's --set."""

    threads: int
    op_threads: int
    devices: str
    config: TrainConfig


def set_up(args: argparse.Namespace) -> Setup:
    """Before any op runs: TF's threads from --threads and --op-threads, as a training or
    generating process with that many CPUs gets them, then --device (`select_device`)."""
    from rbmsearch.workers import SMALL_OP_THREADS, set_tf_threads

    for name, value in (("--threads", args.threads), ("--op-threads", args.op_threads)):
        if value is not None and value < 1:
            raise BenchError(f"{name} must be at least 1, but got {value}.")
    threads, op_threads = args.threads or os.cpu_count() or 1, args.op_threads or SMALL_OP_THREADS
    set_tf_threads(threads, op_threads)
    return Setup(threads, op_threads, select_device(args.device), TrainConfig(**PAPER_SIZE).with_overrides(args.set))


def bench_train(args: argparse.Namespace) -> dict:
    """Training throughput at the paper's size and at the default configuration: frames/s, exact
    FLOPs, the fraction of the model-shaped limit, and (--reference) the ratio to the TF-1 code."""
    from rbmsearch.noise import POOL_STEPS

    if args.reference and not Path(args.reference).is_file():
        raise BenchError(f"--reference {args.reference}: no such file; pass the path of the reference training script.")
    if args.trials < 1:
        raise BenchError(f"--trials must be at least 1, but got {args.trials}.")
    setup = set_up(args)
    threads, op_threads, paper = setup.threads, setup.op_threads, setup.config
    rolls = load_dataset(args.source).rolls("train")
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
    figures["devices"] = setup.devices
    return figures


def _step_pieces(model, step, config, pool) -> dict[str, Callable]:
    """A training step and its pieces, each compiled alone: (v, mask, seed, inputs) -> tensors,
    where `inputs` holds what the pieces after the RNN start from (`_piece_inputs`). The pieces
    run without dropout (the step with `config.dropout`)."""
    import tensorflow as tf

    from rbmsearch.rbm import free_energy, gibbs_chain

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

    from rbmsearch.rbm import gibbs_chain

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

    from rbmsearch.model import ModelConfig, RnnRbm
    from rbmsearch.noise import POOL_STEPS
    from rbmsearch.train import chain_noise_pool, make_optimizer, make_train_step, minibatches

    for name, value in (("--batches", args.batches), ("--passes", args.passes)):
        if value < 1:
            raise BenchError(f"{name} must be at least 1, but got {value}.")
    setup = set_up(args)
    config = setup.config
    rolls = load_dataset(args.source).rolls("train")
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
        "source": args.source, "threads": setup.threads, "op_threads": setup.op_threads, "devices": setup.devices,
        "config": _sizes(config),
        "batches": len(batches), "passes": args.passes, "real_frames_per_batch": round(real, 1),
        "frames_per_s": round(1000 * real / median["step"]),
        "ms_per_batch": {name: round(value, 3) for name, value in median.items()},
        "ms_per_batch_passes": {name: [round(x, 3) for x in runs] for name, runs in ms.items()},
        "noise_pool_steps": POOL_STEPS,  # training draws a table once per this many steps: noise_table_draw / this is its share of a step
        # what the step, the cost (and its gradient) and the chain drew here: training's 1 / POOL_STEPS when --batches is a multiple of it
        "noise_tables_per_batch": round(math.ceil(len(batches) / POOL_STEPS) / len(batches), 4),
    }  # fmt: skip
