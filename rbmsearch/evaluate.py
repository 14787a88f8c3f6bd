"""Score a run directory honestly: AIS/RAISE log-likelihood and frame-level accuracy.

    python -m rbmsearch.evaluate RUN_DIR [--data DATA.parquet] [--split test] [--ais-runs 100] [--ais-betas 1000]
                                 [--raise-runs 10] [--acc-samples 10] [--acc-gibbs-k 1000] [--seed 0]

Reads a run directory (`rbmsearch.run`) and its dataset; prints one JSON object with `nll`
(nats per frame, AIS with 100 runs as in Boulanger-Lewandowski et al., ICML 2012),
`nll_raise` (reverse AIS, Burda et al. 2015), `acc` (Bay et al. 2009, sampled predictions),
`acc_annealed`, `acc_decoded` (the model's best guess), `acc_repeat` (copying the previous
frame) and the settings. `train` and `tune` score their test split through `score_run`.
What each figure means and when to trust it: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rbmsearch.config import AIS_BETAS, AIS_RUNS
from rbmsearch.console import cli

__all__ = ["EvalSettings", "evaluate", "evaluate_run", "sample_predictions", "score_run"]

log = logging.getLogger(__name__)

MIXING_CHECK_SAMPLES = 2  # chains per frame started at the true frame, for acc_mixing_gap
MIXING_GAP_WARNING = 0.01  # warn when those score this much higher than the chains from silence
NLL_GAP_WARNING = 0.05  # warn when RAISE's NLL and AIS's differ by more (nats per frame)


@dataclass(frozen=True)
class EvalSettings:
    ais_runs: int = AIS_RUNS  # AIS runs per frame, as in the paper
    ais_betas: int = AIS_BETAS  # temperatures; too few flatter sharp models (docs/evaluation.md)
    acc_samples: int = 10
    # Gibbs steps per predicted frame, from silence: generation's 25 do not mix, 1000 do
    # (docs/evaluation.md, "Sampled"); `acc_mixing_gap` checks it on every evaluation.
    acc_gibbs_k: int = 1000
    seed: int = 0
    # RAISE runs per frame for `nll_raise`, a tenth of AIS's cost: fewer runs only make it
    # more cautious (docs/results.md, 3.2).
    raise_runs: int = 10


def sample_predictions(model, bv: np.ndarray, bh: np.ndarray, n_samples: int, k: int, seed: int, start: np.ndarray | None = None) -> np.ndarray:
    """Draw n_samples predictions per frame by k Gibbs steps. Returns (S, N, n_v) bool.

    bv (N, n_v), bh (N, n_h): each frame's RBM. start: (N, n_v) where the chains begin;
    silence when None, which is what a prediction may know.
    """
    import tensorflow as tf

    from rbmsearch.model import long_gibbs_chain

    chain = tf.function(lambda v0, bv, bh, seed: long_gibbs_chain(v0, model.W, bv, bh, k, seed))
    v0 = tf.zeros_like(bv, tf.float32) if start is None else tf.constant(start, tf.float32)
    bv, bh = tf.constant(bv, tf.float32), tf.constant(bh, tf.float32)
    return np.stack([chain(v0, bv, bh, tf.constant([seed, s], tf.int64)).numpy() > 0.5 for s in range(n_samples)])


def evaluate(model, rolls: list[np.ndarray], settings: EvalSettings = EvalSettings(), progress: bool = False) -> dict:
    """NLL (nats/frame) by AIS and RAISE, and frame accuracies, of `model` on `rolls` (T_i, n_v) bool."""
    from rbmsearch import accuracy, ais
    from rbmsearch.model import conditional_rbms

    start = time.perf_counter()
    v, bv, bh = conditional_rbms(model, rolls)  # (N, n_v), (N, n_v), (N, n_h)
    W = model.W.numpy()
    if progress:
        log.info("AIS over %s frames, %d runs (RAISE %d) x %d temperatures ...", f"{len(v):,}", settings.ais_runs, settings.raise_runs, settings.ais_betas)
    marginals = np.zeros(v.shape)  # p(note on) under each frame's RBM, from AIS's weighted final states

    def weigh(frames: slice, states: np.ndarray, log_weights: np.ndarray) -> None:
        marginals[frames] = ais.annealed_marginals(states, log_weights)

    forward = ais.ais_run(W, bv, bh, n_runs=settings.ais_runs, n_betas=settings.ais_betas, seed=settings.seed, on_states=weigh)
    nll = float(-np.mean(ais.frame_log_likelihood(v, W, bv, bh, forward.log_z)))
    log_z = ais.raise_run(W, bv, bh, v, n_runs=settings.raise_runs, n_betas=settings.ais_betas, seed=settings.seed).log_z
    nll_raise = float(-np.mean(ais.frame_log_likelihood(v, W, bv, bh, log_z)))
    if abs(nll_raise - nll) > NLL_GAP_WARNING:
        log.warning("the NLL is not pinned down: AIS gives %.3f and RAISE %.3f nats per frame, and both tend to the "
                    "true value as the annealing lengthens. Raise --ais-betas (now %d) until they agree.",
                    nll, nll_raise, settings.ais_betas)  # fmt: skip
    samples = sample_predictions(model, bv, bh, settings.acc_samples, settings.acc_gibbs_k, settings.seed)
    acc = accuracy.expected_frame_accuracy(v, samples)
    # The mixing check: chains started AT the true frames begin with accuracy 1 and fall to the
    # model's value as they mix; those from silence rise to it. Only the latter are scored.
    from_truth = sample_predictions(model, bv, bh, MIXING_CHECK_SAMPLES, settings.acc_gibbs_k, settings.seed + 1, start=v)
    gap = accuracy.expected_frame_accuracy(v, from_truth) - acc
    if gap > MIXING_GAP_WARNING:
        log.warning("the accuracy's Gibbs chains have not mixed: started at the true frames they score %.3f higher "
                    "than from silence after %d steps, so `acc` is too low. Raise --acc-gibbs-k "
                    "(EvalSettings.acc_gibbs_k), or read `acc_annealed`, which needs no chain to mix.",
                    gap, settings.acc_gibbs_k)  # fmt: skip
    acc_decoded, threshold = accuracy.decoded_accuracy(v, marginals)
    return {
        "nll": nll,
        "nll_raise": nll_raise,
        "acc": acc,
        "acc_frame_mean": accuracy.expected_frame_accuracy(v, samples, per_frame=True),
        "acc_mixing_gap": gap,
        "acc_annealed": accuracy.pooled_accuracy(accuracy.expected_counts(v, marginals)),
        "acc_decoded": acc_decoded,
        "acc_decoded_threshold": threshold,
        "acc_repeat": accuracy.repeat_accuracy(rolls),
        "frames": int(len(v)),
        "sequences": len(rolls),
        **asdict(settings),
        "seconds": round(time.perf_counter() - start, 2),
    }


def score_run(run, rolls: list[np.ndarray], progress: bool = False) -> dict:
    """Evaluate a `run.Run` on `rolls` (the test split) with its configuration's eval_* settings.

    Returns the test_* metrics that metrics.json and best.json hold, with `test_eval` (everything).
    """
    c = run.config
    settings = EvalSettings(ais_runs=c.eval_ais_runs, ais_betas=c.eval_ais_betas, acc_samples=c.eval_acc_samples,
                            acc_gibbs_k=c.eval_acc_gibbs_k, seed=c.seed, raise_runs=c.eval_raise_runs)  # fmt: skip
    result = evaluate(run.model, rolls, settings, progress=progress)
    return {"test_nll": result["nll"], "test_nll_raise": result["nll_raise"], "test_acc": result["acc"],
            "test_acc_decoded": result["acc_decoded"], "test_eval": result}  # fmt: skip


def evaluate_run(run_dir: str | Path, dataset, progress: bool = True) -> dict:
    """Score a run directory on `dataset`'s test split and add the result to its metrics.json.

    Returns the test_* metrics, or {} (with a warning) when the dataset has no test split.
    """
    from rbmsearch.run import load_run, write_metrics

    rolls = dataset.rolls("test")
    if not rolls:
        log.warning("the dataset has no test split: test NLL and ACC are not computed")
        return {}
    run = load_run(run_dir)  # the model validation chose, not simply the last one
    test = score_run(run, rolls, progress)
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
    args = parser.parse_args(argv)

    from rbmsearch.data import DatasetError, read_dataset
    from rbmsearch.run import load_run

    run = load_run(args.run_dir)
    data = args.data or run.data.get("path")
    if not data:
        raise DatasetError(args.run_dir, "records no dataset path; pass --data")
    rolls = read_dataset(data).rolls(args.split)
    if not rolls:
        raise DatasetError(data, f"has no pieces in the {args.split!r} split")
    settings = EvalSettings(args.ais_runs, args.ais_betas, args.acc_samples, args.acc_gibbs_k, args.seed, args.raise_runs)
    try:
        result = evaluate(run.model, rolls, settings, progress=True)
    except ValueError as e:  # settings the AIS code refuses, e.g. --ais-betas 1
        raise SystemExit(f"error: {e}") from e
    print(json.dumps({"run_dir": str(args.run_dir), "data": data, "split": args.split, **result}))


if __name__ == "__main__":
    main()
