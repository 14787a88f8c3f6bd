"""Score a run directory honestly: AIS/RAISE log-likelihood and frame-level accuracy.

    python -m rbmsearch.evaluate RUN_DIR [--data DATA.parquet] [--split test] [--ais-runs 100] [--ais-betas 1000] [--max-betas 0] [--tail-betas 0]
                                 [--raise-runs 10] [--acc-samples 30] [--acc-gibbs-k 1000] [--acc-start previous] [--seed 0]
                                 [--frames N] [--control-betas 1000] [--shard-frames 500] [--address auto|HOST:PORT|local] [--cpus-per-shard C] [--gpus-per-shard G]

Reads a run directory (`rbmsearch.run`) and its dataset; prints one JSON object with `nll`
(nats per frame, AIS with 100 runs as in Boulanger-Lewandowski et al., ICML 2012),
`nll_raise` (reverse AIS, Burda et al. 2015), `acc` (Bay et al. 2009, sampled predictions),
`acc_annealed`, `acc_decoded` (the model's best guess; `acc_decoded_annealed` from AIS's marginals), `acc_repeat` (copying the previous
frame) and the settings; every NLL comes with its 95% interval over frames (`nll_ci95`).
With --frames, every frame of the split is also scored cheaply (--control-betas), and
`nll_whole_split` estimates the whole split's NLL from the subsample by regression on that
cheap score, with a much narrower interval than the subsample's own.
The frames are scored in shards (`rbmsearch.scoring`), each kept under RUN_DIR/eval/ as it
finishes, so running the same command again redoes only the missing shards. Without
--address the shards run one after another in this process, whose TensorFlow uses every core
(one process needs no Ray start and loads TF once); with it, as Ray tasks on the cluster.
`train` and `tune` score their test split through `score_run`, `tune` on its Ray workers.
What each figure means and when to trust it: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rbmsearch.config import CONTROL_BETAS
from rbmsearch.console import cli, import_tensorflow
from rbmsearch.scoring import (ACC_STARTS, CONTROL_SHARD_FRAMES, SHARD_ARRAYS, SHARD_FRAMES, ControlSettings, EvalSettings, Shard, ShardStore, run_shards,
                               settings_plan)  # fmt: skip
from rbmsearch.workers import Resources, ray_running

__all__ = ["EvalSettings", "evaluate", "evaluate_run", "regression_estimate", "score_run", "subsample"]

log = logging.getLogger(__name__)

MIXING_GAP_WARNING = 0.01  # warn when chains from the truth score this much higher than those of acc_start
NLL_GAP_WARNING = 0.05  # warn when RAISE's NLL and AIS's differ by more (nats per frame)
GAP_FRAMES = 0.05  # `nll_gap_share`: the share of the gap in this fraction of the frames
Z95 = 1.959964  # the normal distribution's two-sided 95% point


def subsample(n_frames: int, wanted: int | None) -> np.ndarray:
    """Indices of an even spread of `wanted` of n_frames frames (all of them for None)."""
    if wanted is None or wanted >= n_frames:
        return np.arange(n_frames)
    if wanted < 2:
        raise ValueError(f"--frames must be at least 2 (an interval needs two frames), but got {wanted}.")
    return np.unique(np.linspace(0, n_frames - 1, wanted).round().astype(np.int64))


def _mean_ci95(values: np.ndarray) -> float:
    """Half-width of the 95% interval of the mean of per-frame `values`: 1.96 standard errors
    over frames (frames taken as independent; docs/evaluation.md says when that errs)."""
    n = len(values)
    return float(Z95 * np.std(values, ddof=1) / np.sqrt(n)) if n >= 2 else float("nan")


def regression_estimate(y: np.ndarray, x: np.ndarray, x_mean: float) -> tuple[float, float, float]:
    """The whole split's mean of y, from y and the control x (both (n,)) on an even subsample and
    x's mean over every frame of the split: the regression estimator ȳ + b (X̄ - x̄), b the
    subsample's least-squares slope (Cochran, Sampling Techniques, ch. 7). Returns (estimate, the
    half-width of its 95% interval, the correlation of y and x). Its variance is the residuals'
    over n, about (1 - rho^2) times the plain mean's: the control takes out the spread between
    frames it shares with y, whatever its own bias. No finite-population correction, as for
    `_mean_ci95`."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    n = len(y)
    if n < 3:
        return float("nan"), float("nan"), float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    sxx = float(dx @ dx)
    b = float(dx @ dy) / sxx if sxx > 0 else 0.0
    residuals = dy - b * dx
    half_width = Z95 * np.sqrt(float(residuals @ residuals) / (n - 2) / n)
    rho = float(dx @ dy) / np.sqrt(sxx * float(dy @ dy)) if sxx > 0 and dy.any() else float("nan")
    return float(y.mean() + b * (x_mean - x.mean())), float(half_width), rho


def gap_share(ll_ais: np.ndarray, ll_raise: np.ndarray, fraction: float = GAP_FRAMES) -> float:
    """The share of the mean AIS-RAISE gap, in the direction of its sign, held by the `fraction`
    of frames that disagree most that way: near 1 when a few frames hold it all (on Nottingham,
    ones the model finds unlikely, where RAISE from the frame converges slowly; docs/results.md,
    6.14), about `fraction` when it is spread evenly, never less, and above 1 when the other
    frames lean the other way; NaN when there is no gap."""
    gaps = np.asarray(ll_ais, np.float64) - np.asarray(ll_raise, np.float64)
    total = gaps.sum()
    if total == 0:
        return float("nan")
    worst = np.sort(gaps * np.sign(total))[::-1][: max(1, int(round(fraction * len(gaps))))]
    return float(worst.sum() / abs(total))


class _Progress:
    """A tqdm bar over frames whose label is the running NLL (of result[key]) and its interval."""

    def __init__(self, total: int, enabled: bool, desc: str = "scoring", key: str = "ll_ais"):
        from tqdm import tqdm

        self.ll, self.key = [], key
        self.bar = tqdm(total=total, desc=desc, unit="frame", disable=not enabled, file=sys.stderr, smoothing=0.1)

    def __call__(self, shard: Shard, result: dict) -> None:
        self.ll.append(result[self.key])
        ll = np.concatenate(self.ll)
        # Frames done so far are a part of the split, not an even spread: the interval is indicative.
        self.bar.set_postfix_str(f"NLL {-ll.mean():.3f} \u00b1 {_mean_ci95(ll):.3f}", refresh=False)
        self.bar.update(shard.stop - shard.start)

    def close(self) -> None:
        self.bar.close()


def _count_nodes(results) -> dict[str, int]:
    """Shards per Ray node (or host, in-process) that scored them."""
    nodes: dict[str, int] = {}
    for r in results:
        node = r["where"].get("node_id") or r["where"]["host"]
        nodes[node] = nodes.get(node, 0) + 1
    return nodes


def evaluate(
    model,
    rolls: list[np.ndarray],
    settings: EvalSettings = EvalSettings(),
    progress: bool = False,
    frames: int | None = None,
    store_root: str | Path | None = None,
    use_ray: bool | None = None,
    resources: Resources = Resources(),
    shard_frames: int = SHARD_FRAMES,
    split: str = "test",
    control_betas: int = CONTROL_BETAS,
) -> dict:
    """NLL (nats/frame) by AIS and RAISE with its 95% interval, and frame accuracies, of `model`
    on `rolls` (T_i, n_v) bool.

    frames: score an even spread of this many frames (None: all). store_root: keep each
    finished shard under this directory (in a folder named after `split` and a digest of
    the inputs) and reuse what is there. use_ray: one Ray task per
    shard with `resources` (default: when a Ray is running in this process). control_betas:
    with a subsample, score every frame of the split cheaply at this many temperatures
    (`ControlSettings`) for the whole-split estimate (`_whole_split`); 0: not.
    """
    from rbmsearch import accuracy
    from rbmsearch.model import conditional_rbms

    start = time.perf_counter()
    control = ControlSettings(betas=control_betas, seed=settings.seed) if control_betas else None  # refused here, before an hour of scoring
    v_all, bv_all, bh_all = conditional_rbms(model, rolls)  # (N, n_v), (N, n_v), (N, n_h)
    chosen = subsample(len(v_all), frames)
    v, bv, bh = v_all[chosen], bv_all[chosen], bh_all[chosen]
    previous = accuracy.previous_frames(rolls)[chosen]  # where the predictions' chains start, and the repeat floor
    W = model.W.numpy()
    shards = [Shard(i, a, min(a + shard_frames, len(v))) for i, a in enumerate(range(0, len(v), shard_frames))]
    store = None
    if store_root is not None:
        plan = settings_plan(settings, shards, chosen)
        store = ShardStore.for_inputs(store_root, split if frames is None else f"{split}-{len(chosen)}-frames", [W, v, bv, bh, previous], plan)
    use_ray = ray_running() if use_ray is None else use_ray
    where = f"{resources.cpus:g} CPU and {resources.gpus:g} GPU each as Ray tasks" if use_ray else "in this process"
    if progress:
        log.info("scoring %s of %s frames in %d shards (%s): AIS %d runs, RAISE %d, %s temperatures",
                 f"{len(v):,}", f"{len(v_all):,}", len(shards), where, settings.ais_runs, settings.raise_runs,
                 settings.ais_betas if settings.gap_tolerance == 0 else f"{min(settings.start_betas, settings.ais_betas)} doubled up to {settings.cap} until AIS and RAISE agree within {settings.gap_tolerance}"
                 + (f", then RAISE on a shard's 5% furthest apart up to {settings.tail_betas}" if settings.tail_betas else ""))  # fmt: skip
    bar = _Progress(len(v), progress)
    try:
        results, counts = run_shards(shards, lambda s: (W, v[s.start : s.stop], bv[s.start : s.stop], bh[s.start : s.stop], previous[s.start : s.stop]),
                                     settings, store, use_ray, resources, on_done=bar)  # fmt: skip
    finally:
        bar.close()
    joined = {key: np.concatenate([results[s.index][key] for s in shards], axis=1 if key.endswith("counts") else 0)
              for key in SHARD_ARRAYS if key not in ("betas", "tail", "sweeps")}  # fmt: skip
    nll, nll_raise = float(-joined["ll_ais"].mean()), float(-joined["ll_raise"].mean())
    share = gap_share(joined["ll_ais"], joined["ll_raise"])
    if abs(nll_raise - nll) > NLL_GAP_WARNING:
        log.warning("the NLL is not pinned down: AIS gives %.3f and RAISE %.3f nats per frame, and both tend to the "
                    "true value as the annealing lengthens; %.0f%% of the gap lies in the %.0f%% of frames that disagree most. "
                    "Raise --ais-betas (now %d), --max-betas (now %d) or --tail-betas (now %d) until they agree.",
                    nll, nll_raise, 100 * share, 100 * GAP_FRAMES, settings.ais_betas, settings.max_betas, settings.tail_betas)  # fmt: skip
    acc = accuracy.sampled_accuracy(joined["acc_counts"])
    # The mixing check: chains started AT the true frames begin with accuracy 1 and fall to the
    # model's value as they mix; those from the history (acc_start) rise to it. Only the latter are scored.
    checked = ~np.isnan(joined["mixing_counts"][0, :, 0])
    gap = accuracy.sampled_accuracy(joined["mixing_counts"][:, checked]) - accuracy.sampled_accuracy(joined["acc_counts"][:, checked])
    if gap > MIXING_GAP_WARNING:
        log.warning("the accuracy's Gibbs chains have not mixed: started at the true frames they score %.3f higher "
                    "than from %s after %d steps, so `acc` is too low. Raise --acc-gibbs-k "
                    "(EvalSettings.acc_gibbs_k), or read `acc_annealed`, which needs no chain to mix.",
                    gap, "the previous frame" if settings.acc_start == "previous" else "silence", settings.acc_gibbs_k)  # fmt: skip
    whole = _whole_split(joined, chosen, (W, v_all, bv_all, bh_all), control, store_root, split, use_ray, resources, progress)
    marginals = joined["marginals"].astype(np.float64)
    # The best guess reads the marginals of the predictions' chains, good where they mix; AIS's
    # are biased on sharp models whose annealing has not converged (docs/results.md, 6.12).
    acc_decoded, threshold = accuracy.decoded_accuracy(v, joined["chain_marginals"].astype(np.float64))
    return {
        "nll": nll,
        "nll_ci95": _mean_ci95(joined["ll_ais"]),
        "nll_raise": nll_raise,
        "nll_raise_ci95": _mean_ci95(joined["ll_raise"]),
        "nll_gap": nll_raise - nll,
        "nll_gap_share": share,
        **whole,
        "acc": acc,
        "acc_frame_mean": accuracy.sampled_accuracy(joined["acc_counts"], per_frame=True),
        "acc_mixing_gap": gap,
        "acc_annealed": accuracy.pooled_accuracy(accuracy.expected_counts(v, marginals)),
        "acc_decoded": acc_decoded,
        "acc_decoded_threshold": threshold,
        "acc_decoded_annealed": accuracy.decoded_accuracy(v, marginals)[0],
        "acc_repeat": accuracy.pooled_accuracy(accuracy.expected_counts(v, previous)),
        "frames": int(len(v)),
        "frames_in_split": int(len(v_all)),
        "subsample": bool(len(v) < len(v_all)),
        "sequences": len(rolls),
        **asdict(settings),
        "shards": len(shards),
        "shards_reused": counts["reused"],
        "shards_resent": counts["resent"],
        "workers": "ray" if use_ray else "in-process",
        "shards_by_node": _count_nodes(results.values()),
        "betas_by_shard": [[int(b) for b in results[s.index]["betas"]] for s in shards],  # [AIS, RAISE]
        "tail_by_shard": [[int(b) for b in results[s.index]["tail"]] for s in shards],  # [RAISE's betas, frames] past the cap
        "gibbs_sweeps_per_frame": round(sum(float(results[s.index]["sweeps"]) * (s.stop - s.start) for s in shards) / len(v)),
        "store": str(store.directory) if store is not None else None,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _whole_split(joined: dict, chosen: np.ndarray, split_rbms: tuple, control: ControlSettings | None, store_root, split: str, use_ray: bool,
                 resources: Resources, progress: bool) -> dict:  # fmt: skip
    """The whole split's NLL by AIS and RAISE (`nll_whole_split`, `nll_raise_whole_split`, each
    with its 95% interval): the scores themselves when every frame was scored; from a subsample,
    `regression_estimate` on `control`'s cheap score of every frame (`control` describes it), or
    None without a control. The control's shards are kept in the store as the full score's are."""
    W, v_all, bv_all, bh_all = split_rbms
    ll_ais, ll_raise = joined["ll_ais"], joined["ll_raise"]
    if len(chosen) == len(v_all):
        return {"nll_whole_split": float(-ll_ais.mean()), "nll_whole_split_ci95": _mean_ci95(ll_ais), "nll_raise_whole_split": float(-ll_raise.mean()),
                "nll_raise_whole_split_ci95": _mean_ci95(ll_raise), "control": None}  # fmt: skip
    if control is None:
        return {"nll_whole_split": None, "nll_whole_split_ci95": None, "nll_raise_whole_split": None, "nll_raise_whole_split_ci95": None, "control": None}
    start = time.perf_counter()
    every = np.arange(len(v_all))
    shards = [Shard(i, a, min(a + CONTROL_SHARD_FRAMES, len(v_all))) for i, a in enumerate(range(0, len(v_all), CONTROL_SHARD_FRAMES))]
    store = None
    if store_root is not None:
        store = ShardStore.for_inputs(store_root, f"{split}-control", [W, v_all, bv_all, bh_all], settings_plan(control, shards, every), control.arrays)
    bar = _Progress(len(v_all), progress, desc="control", key="ll_control")
    try:
        results, counts = run_shards(shards, lambda s: (W, v_all[s.start : s.stop], bv_all[s.start : s.stop], bh_all[s.start : s.stop], None),
                                     control, store, use_ray, resources, on_done=bar)  # fmt: skip
    finally:
        bar.close()
    x_all = np.concatenate([results[s.index]["ll_control"] for s in shards])
    nll, nll_ci95, rho = regression_estimate(ll_ais, x_all[chosen], float(x_all.mean()))
    nll_raise, nll_raise_ci95, rho_raise = regression_estimate(ll_raise, x_all[chosen], float(x_all.mean()))
    return {
        "nll_whole_split": -nll,
        "nll_whole_split_ci95": nll_ci95,
        "nll_raise_whole_split": -nll_raise,
        "nll_raise_whole_split_ci95": nll_raise_ci95,
        "control": {**asdict(control), "nll": float(-x_all.mean()), "frames": int(len(x_all)), "correlation": rho, "correlation_raise": rho_raise,
                    "shards": len(shards), "shards_reused": counts["reused"], "gibbs_sweeps_per_frame": round(float(results[0]["sweeps"])),
                    "store": str(store.directory) if store is not None else None, "seconds": round(time.perf_counter() - start, 2)},  # fmt: skip
    }


def score_run(run, rolls: list[np.ndarray], progress: bool = False, store_root: str | Path | None = None, resources: Resources = Resources()) -> dict:
    """Evaluate a `run.Run` on `rolls` (the test split) with its configuration's eval_* settings
    (eval_frames > 0: an even subsample of that many frames).

    Returns the test_* metrics that metrics.json and best.json hold, with `test_eval` (everything).
    """
    c = run.config
    settings = EvalSettings(ais_runs=c.eval_ais_runs, ais_betas=c.eval_ais_betas, acc_samples=c.eval_acc_samples,
                            acc_gibbs_k=c.eval_acc_gibbs_k, seed=c.seed, raise_runs=c.eval_raise_runs, max_betas=c.eval_max_betas, tail_betas=c.eval_tail_betas)  # fmt: skip
    result = evaluate(run.model, rolls, settings, progress=progress, frames=c.eval_frames or None, store_root=store_root, resources=resources,
                      control_betas=c.eval_control_betas)  # fmt: skip
    return {"test_nll": result["nll"], "test_nll_ci95": result["nll_ci95"], "test_nll_raise": result["nll_raise"],
            "test_nll_whole_split": result["nll_whole_split"], "test_nll_whole_split_ci95": result["nll_whole_split_ci95"],
            "test_acc": result["acc"], "test_acc_decoded": result["acc_decoded"], "test_frames": result["frames"],
            "test_frames_in_split": result["frames_in_split"], "test_eval": result}  # fmt: skip


def evaluate_run(run_dir: str | Path, dataset, progress: bool = True, store_root: str | Path | None = None, resources: Resources = Resources()) -> dict:
    """Score a run directory on `dataset`'s test split and add the result to its metrics.json.

    Finished shards are kept under store_root (default RUN_DIR/eval), so a rerun resumes.
    Returns the test_* metrics, or {} (with a warning) when the dataset has no test split.
    """
    from rbmsearch.run import load_run, write_metrics

    rolls = dataset.rolls("test")
    if not rolls:
        log.warning("the dataset has no test split: test NLL and ACC are not computed")
        return {}
    run = load_run(run_dir)  # the model validation chose, not simply the last one
    test = score_run(run, rolls, progress, store_root or Path(run_dir) / "eval", resources)
    write_metrics(run_dir, {**run.metrics, **test})
    return test


@cli
def main(argv: list[str] | None = None) -> None:
    from rbmsearch.data import SPLITS

    parser = argparse.ArgumentParser(prog="python -m rbmsearch.evaluate", description="AIS NLL and frame accuracy of a trained run.")
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="Parquet dataset (default: the one the run was trained on)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    defaults = EvalSettings()
    parser.add_argument("--ais-runs", type=int, default=defaults.ais_runs)
    parser.add_argument("--ais-betas", type=int, default=defaults.ais_betas)
    parser.add_argument("--acc-samples", type=int, default=defaults.acc_samples)
    parser.add_argument("--acc-gibbs-k", type=int, default=defaults.acc_gibbs_k)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--raise-runs", type=int, default=defaults.raise_runs)
    parser.add_argument("--start-betas", type=int, default=defaults.start_betas, help="temperatures a shard starts with; doubled until AIS and RAISE agree")
    parser.add_argument("--gap-tolerance", type=float, default=defaults.gap_tolerance, help="agreement of AIS and RAISE (nats/frame) that stops the doubling; 0: always --ais-betas")
    parser.add_argument("--max-betas", type=int, default=defaults.max_betas, help="past --ais-betas, double on to this many temperatures with "
                        "proportionally fewer AIS runs, for sharp models such as Nottingham's (0: --ais-betas is the cap)")  # fmt: skip
    parser.add_argument("--tail-betas", type=int, default=defaults.tail_betas, help="past the cap, RAISE on the 5%% of a shard's frames that "
                        "disagree most goes on to this many temperatures, until the shard agrees (0: off)")  # fmt: skip
    parser.add_argument("--base", choices=("fitted", "own-bv"), default=defaults.base, help="the annealing's base distribution (docs/evaluation.md)")
    parser.add_argument("--acc-start", choices=ACC_STARTS, default=defaults.acc_start, help="where the predictions' Gibbs chains start: the previous frame, or silence")
    parser.add_argument("--frames", type=int, help="score an even spread of this many frames, for a quick estimate with its interval (default: all)")
    parser.add_argument("--control-betas", type=int, default=CONTROL_BETAS, help="with --frames, also score every frame of the split by a short AIS of this "
                        f"many temperatures, for the whole-split estimate (nll_whole_split); 0: not (default {CONTROL_BETAS})")  # fmt: skip
    parser.add_argument("--address", help="score the shards as Ray tasks: 'auto' or HOST:PORT joins a running cluster, 'local' starts a Ray "
                        "here (one task per GPU on a GPU machine); default: in this process, with every core")  # fmt: skip
    parser.add_argument("--shard-frames", type=int, default=SHARD_FRAMES, help=f"frames per shard, the unit of resuming and of Ray tasks (default {SHARD_FRAMES})")
    parser.add_argument("--cpus-per-shard", type=float, default=1, help="with --address: CPUs each shard's task asks for (default 1)")
    parser.add_argument("--gpus-per-shard", type=float, help="with --address: GPUs each shard's task asks for (default: 1 when the cluster has GPUs)")
    args = parser.parse_args(argv)
    import_tensorflow()  # here, without its start-up lines, before any stage loads it

    from rbmsearch.data import DatasetError, read_dataset
    from rbmsearch.run import load_run
    from rbmsearch.workers import cluster_gpus, ray_session

    run = load_run(args.run_dir)
    data = args.data or run.data.get("path")
    if not data:
        raise DatasetError(args.run_dir, "records no dataset path; pass --data")
    rolls = read_dataset(data).rolls(args.split)
    if not rolls:
        raise DatasetError(data, f"has no pieces in the {args.split!r} split")
    try:
        settings = EvalSettings(ais_runs=args.ais_runs, ais_betas=args.ais_betas, acc_samples=args.acc_samples, acc_gibbs_k=args.acc_gibbs_k,
                                seed=args.seed, raise_runs=args.raise_runs, start_betas=args.start_betas, gap_tolerance=args.gap_tolerance,
                                max_betas=args.max_betas, tail_betas=args.tail_betas, base=args.base, acc_start=args.acc_start)  # fmt: skip
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    if args.shard_frames < 1:
        raise SystemExit(f"error: --shard-frames must be at least 1, but got {args.shard_frames}")
    if args.control_betas == 1 or args.control_betas < 0:
        raise SystemExit(f"error: --control-betas must be 0 (off) or at least 2, but got {args.control_betas}")
    options = dict(progress=True, frames=args.frames, store_root=Path(args.run_dir) / "eval", split=args.split, shard_frames=args.shard_frames,
                   control_betas=args.control_betas)  # fmt: skip
    try:
        if args.address is None:
            result = evaluate(run.model, rolls, settings, use_ray=False, **options)
        else:
            with ray_session(None if args.address == "local" else args.address):
                gpus = args.gpus_per_shard if args.gpus_per_shard is not None else float(cluster_gpus() > 0)
                result = evaluate(run.model, rolls, settings, use_ray=True, resources=Resources(args.cpus_per_shard, gpus), **options)
    except ValueError as e:  # settings the AIS code refuses, e.g. --ais-betas 1
        raise SystemExit(f"error: {e}") from e
    print(json.dumps({"run_dir": str(args.run_dir), "data": data, "split": args.split, **result}))

if __name__ == "__main__":
    main()
