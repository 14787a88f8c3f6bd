"""Benchmarks that users run on their own hardware.

    python -m rbmsearch.bench NAME [options]      # NAME: data, train, profile, generate, evaluate, tune, render, fuzz

Each benchmark logs progress to stderr and ends with its figures as one JSON line on stdout.
`train` and `profile` live in `rbmsearch.trainbench`, with the set-up the others share.
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
from pathlib import Path

from rbmsearch.console import cli, import_tensorflow
from rbmsearch.files import write_json
from rbmsearch.trainbench import PAPER_SIZE, bench_profile, bench_train, set_up


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


def bench_generate(args: argparse.Namespace) -> dict:
    from rbmsearch.model import ModelConfig, RnnRbm

    setup = set_up(args)
    model = RnnRbm(ModelConfig.of(setup.config), seed=0)
    figures = {"gibbs_k": args.k, "steps": args.steps, "threads": setup.threads, "op_threads": setup.op_threads, "devices": setup.devices}
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
