"""Frame-level accuracy (Bay, Ehmann & Downie, ISMIR 2009): TP / (TP + FP + FN).

Pooled over frames (`pooled_accuracy`, the count Boulanger-Lewandowski et al. 2012 report),
or frame by frame; for samples (`expected_frame_accuracy`), for the model's best guess
(`decoded_accuracy`) and for copying the previous frame (`repeat_accuracy`, a model-free
floor). Numpy only; every function is pure. What each reading means: docs/evaluation.md.
"""

from __future__ import annotations

import numpy as np

from rbmsearch.arrays import binary_array, float_array

__all__ = ["decoded_accuracy", "expected_counts", "expected_frame_accuracy", "pooled_accuracy", "previous_frames", "repeat_accuracy", "sampled_accuracy"]


def expected_frame_accuracy(v_true: np.ndarray, v_samples: np.ndarray, per_frame: bool = False) -> float:
    """Expected Bay et al. (2009) frame-level accuracy of S model samples.

    For each sample s, counts are summed over all frames and pitches:
    ACC_s = sum_t TP / sum_t (TP + FP + FN), and the result is mean_s ACC_s (the
    expected accuracy of one sample drawn per frame given the true history, as in
    Boulanger-Lewandowski et al. 2012).

    per_frame=True averages instead: ACC_s = mean_t TP_t / (TP_t + FP_t + FN_t), every
    frame weighted equally whatever its number of notes. Some published tables may use
    this reading; on JSB it scores a few points higher than the pooled one, so say which
    one a comparison uses.

    Edge case: if a sample has TP + FP + FN == 0 (the true roll and the sample are
    both silent everywhere, e.g. N == 0 or all-rest frames) the prediction is
    perfect and ACC_s is defined as 1.0; with per_frame, the same holds for each frame.

    Args:
        v_true: (N, n_v) bool or 0/1 true frames.
        v_samples: (S, N, n_v) bool or 0/1 samples, S >= 1 (use v[None] for one).
        per_frame: average per-frame accuracies instead of pooling the counts.

    Returns:
        Python float in [0, 1].
    """
    v_true = binary_array(v_true, "v_true", "(N, n_v)", 2)
    v_samples = binary_array(v_samples, "v_samples", "(S, N, n_v)", 3)
    if v_samples.shape[1:] != v_true.shape or v_samples.shape[0] < 1:
        raise ValueError(
            f"Expected v_samples of shape (S >= 1, N, n_v) = (S, {v_true.shape[0]}, "
            f"{v_true.shape[1]}) to match v_true, but got shape {v_samples.shape}."
        )
    return sampled_accuracy(np.stack([expected_counts(v_true, sample) for sample in v_samples]), per_frame)


def sampled_accuracy(counts: np.ndarray, per_frame: bool = False) -> float:
    """`expected_frame_accuracy` from the samples' counts (S, N, 3) (TP, FP, FN of sample s at
    frame t): counts of frames scored apart (shards) concatenate along N."""
    counts = float_array(counts, "counts", "(S, N, 3)", 3, np.float64)
    if not per_frame:
        return float(np.mean([pooled_accuracy(c) for c in counts]))
    tp, denom = counts[..., 0], counts.sum(axis=-1)
    return float(np.mean(np.where(denom > 0, tp / np.maximum(denom, 1), 1.0))) if denom.size else 1.0


def expected_counts(v_true: np.ndarray, marginals: np.ndarray) -> np.ndarray:
    """Expected TP, FP and FN (N, 3) of a prediction drawn with these note marginals (N, n_v)
    against v_true (N, n_v): sum q v, sum q (1 - v), sum (1 - q) v over each frame's notes.
    For a 0/1 prediction (a sample, a guess) they are its counts."""
    v_true = binary_array(v_true, "v_true", "(N, n_v)", 2)
    q = _marginals(marginals, v_true.shape)
    return np.stack([(q * v_true).sum(1), (q * ~v_true).sum(1), ((1 - q) * v_true).sum(1)], axis=1)


def pooled_accuracy(counts: np.ndarray) -> float:
    """sum_t TP / sum_t (TP + FP + FN) of per-frame counts (N, 3), expected or not; 1.0 when
    nothing is sounding or predicted anywhere."""
    counts = float_array(counts, "counts", "(N, 3)", 2, np.float64)
    if counts.shape[1] != 3:
        raise ValueError(f"Expected counts of shape (N, 3) (TP, FP, FN), but got {counts.shape}.")
    total = counts.sum(axis=0)
    return float(total[0] / total.sum()) if total.sum() > 0 else 1.0


def decoded_accuracy(v_true: np.ndarray, marginals: np.ndarray) -> tuple[float, float]:
    """Accuracy of the model's best guess: every note whose marginal p(v_ti = 1 | history)
    reaches a threshold, chosen to maximise the model's OWN expected accuracy.

    Predicting a set S of (frame, note) pairs has, under the model, expected counts TP =
    sum_S q, FP = |S| - TP and FN = sum_(not S) q, so the ratio R = sum_S q / (|S| +
    sum_(not S) q) (a ratio of expected counts, which over thousands of frames is the
    expected pooled accuracy). For a fixed |S|, R grows with sum_S q, so the best S of each
    size holds the largest marginals; adding a pair with marginal q raises R exactly when
    q > R / (1 + R), so along the sorted marginals R rises to one peak and falls, and the
    best guess keeps the marginals above R* / (1 + R*) (the analogue of F1's F* / 2). The
    function scans the sorted marginals for that peak; the truth is used only to score the
    guess. The threshold is chosen over all the frames given, so it depends on which.

    A guess commits to the likeliest notes where a sample (`expected_frame_accuracy`) spreads
    over the model's uncertainty, so for a model that ranks notes well the guess scores
    higher. For p = 1/2 on every note it predicts all of them, which scores notes per frame
    / n_v (the paper's Random row).

    Args:
        v_true: (N, n_v) bool or 0/1 true frames.
        marginals: (N, n_v) note probabilities in [0, 1] (`annealed_marginals`).

    Returns:
        (accuracy, threshold): the pooled TP / (TP + FP + FN) of the guess against v_true,
        and the smallest marginal it includes (1.0 also when it predicts nothing).
    """
    v_true = binary_array(v_true, "v_true", "(N, n_v)", 2)
    q = _marginals(marginals, v_true.shape)
    if not q.size or q.max() == 0:  # nothing to guess
        return pooled_accuracy(expected_counts(v_true, np.zeros(q.shape))), 1.0
    flat = np.sort(q, axis=None)[::-1]
    included = np.cumsum(flat)  # expected TP of the largest 1, 2, ... marginals
    ratio = included / (np.arange(1, q.size + 1) + included[-1] - included)
    threshold = float(flat[int(np.argmax(ratio))])
    return pooled_accuracy(expected_counts(v_true, q >= threshold)), threshold  # ties all in or all out


def _marginals(marginals: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    q = float_array(marginals, "marginals", "(N, n_v)", 2, np.float64)
    if q.shape != shape:
        raise ValueError(f"Expected marginals of shape {shape} to match v_true, but got shape {q.shape}.")
    if np.any(q < -1e-9) or np.any(q > 1 + 1e-9):
        raise ValueError(f"Expected marginals in [0, 1], but got values from {q.min():.6g} to {q.max():.6g}.")
    return np.clip(q, 0.0, 1.0)  # rounding


def repeat_accuracy(rolls: list[np.ndarray]) -> float:
    """Pooled accuracy of predicting every frame as a copy of the one before it (silence before
    a piece's first frame): a floor that a model's accuracy should clear.

    rolls: sequences (T_i, n_v) bool or 0/1. 1.0 for no sequences.
    """
    if not rolls:
        return 1.0
    return pooled_accuracy(expected_counts(np.concatenate(rolls).astype(bool), previous_frames(rolls)))


def previous_frames(rolls: list[np.ndarray]) -> np.ndarray:
    """(N, n_v) bool: the frame before each frame of the concatenated rolls (silence before a
    piece's first), the prediction `repeat_accuracy` scores."""
    return np.concatenate([np.concatenate([np.zeros_like(r[:1]), r[:-1]]) for r in rolls]).astype(bool)
