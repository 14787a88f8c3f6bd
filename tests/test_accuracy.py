"""rbmsearch.accuracy: Bay et al. (2009) frame accuracy on hand-built rolls: sampled, pooled and per
frame, expected counts from marginals, the decoded best guess (against brute force over every
subset) and the repeat-the-previous-frame floor. Numpy only, and importing it loads no TensorFlow."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from rbmsearch.accuracy import decoded_accuracy, expected_counts, expected_frame_accuracy, pooled_accuracy, repeat_accuracy


def test_importing_accuracy_loads_no_tensorflow():
    code = "import sys, rbmsearch.accuracy; print(sorted(m for m in ('tensorflow', 'ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------
# Sampled predictions
# ---------------------------------------------------------------------------------------


def test_expected_frame_accuracy_hand_counts():
    v_true = np.array(
        [
            [1, 0, 1, 0],
            [0, 0, 0, 0],
            [0, 1, 0, 0],
        ],
        bool,
    )
    # TP=2 (two hits), FP=1 (frame 1 pitch 3), FN=1 (frame 2 pitch 1): 2 / 4.
    half = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    # TP=1, FP=2, FN=2: 1 / 5.
    fifth = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    assert expected_frame_accuracy(v_true, half[None]) == 0.5
    assert expected_frame_accuracy(v_true, fifth[None]) == pytest.approx(0.2, abs=1e-15)
    assert expected_frame_accuracy(v_true, v_true[None]) == 1.0
    # The expectation is the mean over samples, not the pooled ratio (3 / 9).
    both = np.stack([half, fifth, v_true])
    assert expected_frame_accuracy(v_true, both) == pytest.approx((0.5 + 0.2 + 1.0) / 3, abs=1e-15)
    # 0/1 integers and floats are accepted as well as bools.
    assert expected_frame_accuracy(v_true.astype(int), half[None].astype(float)) == 0.5


def test_expected_frame_accuracy_pools_counts_over_frames():
    # Frame 0: 4 hits; frame 1: one wrong note (FP=1, FN=1).  Pooled 4 / 6, whereas the
    # mean of per-frame accuracies would be (1 + 0) / 2.
    v_true = np.array([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0]], bool)
    sample = np.array([[1, 1, 1, 1, 0], [0, 1, 0, 0, 0]], bool)
    assert expected_frame_accuracy(v_true, sample[None]) == pytest.approx(4 / 6, abs=1e-15)


def test_expected_frame_accuracy_per_frame_weighs_frames_equally():
    v_true = np.array([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    sample = np.array([[1, 1, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    # Frames: 4/4, 0/2, and a silent frame predicted silent (perfect): (1 + 0 + 1) / 3.
    assert expected_frame_accuracy(v_true, sample[None], per_frame=True) == pytest.approx(2 / 3, abs=1e-15)
    # Two samples: the second misses everything in frame 0 (0/4) and is right in frame 1.
    other = np.array([[0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    both = np.stack([sample, other])
    assert expected_frame_accuracy(v_true, both, per_frame=True) == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-15)
    assert expected_frame_accuracy(v_true, other[None]) == pytest.approx(1 / 6, abs=1e-15)  # pooled: 1 / (1 + 1 + 4)
    assert expected_frame_accuracy(np.zeros((0, 4)), np.zeros((2, 0, 4)), per_frame=True) == 1.0


def test_expected_frame_accuracy_empty_cases():
    silent = np.zeros((3, 4), bool)
    note = np.zeros((3, 4), bool)
    note[1, 2] = True
    assert expected_frame_accuracy(silent, silent[None]) == 1.0  # TP+FP+FN == 0: perfect
    assert expected_frame_accuracy(silent, note[None]) == 0.0  # only a false positive
    assert expected_frame_accuracy(note, silent[None]) == 0.0  # only a false negative
    assert expected_frame_accuracy(silent, np.stack([silent, note])) == 0.5
    assert expected_frame_accuracy(np.zeros((0, 4)), np.zeros((2, 0, 4))) == 1.0  # no frames


def test_expected_frame_accuracy_rejects_bad_input():
    v = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"v_samples to be a 3-D .* got an array of shape \(3, 4\)"):
        expected_frame_accuracy(v, v)
    with pytest.raises(ValueError, match=r"match v_true, but got shape \(1, 2, 4\)"):
        expected_frame_accuracy(v, np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"only 0 and 1 .* 0.5 at index \(0, 1\)"):
        expected_frame_accuracy(np.array([[0, 0.5], [1, 0]]), np.zeros((1, 2, 2)))


# ---------------------------------------------------------------------------------------
# Expected counts from marginals, and the best guess
# ---------------------------------------------------------------------------------------


def test_expected_counts_and_pooled_accuracy_by_hand():
    truth = np.array([[1, 1, 0, 0]], bool)
    states = np.array([[[1, 0, 0, 0], [1, 1, 1, 1]]], bool)  # TP FP FN: (1, 0, 1) and (2, 2, 0)
    np.testing.assert_array_equal([expected_counts(truth, states[:, r]) for r in range(2)], [[[1, 0, 1]], [[2, 2, 0]]])
    # Marginals: the note-by-note mean of the two states above.
    np.testing.assert_allclose(expected_counts(truth, np.array([[1.0, 0.5, 0.5, 0.5]])), [[1.5, 1.0, 0.5]])
    assert pooled_accuracy(expected_counts(truth, np.array([[1.0, 0.5, 0.5, 0.5]]))) == pytest.approx(1.5 / 3.0)
    assert pooled_accuracy(expected_counts(truth, np.array([[1.0, 0.0, 0.0, 0.0]]))) == pytest.approx(0.5)
    assert pooled_accuracy(np.array([[1.0, 0.0, 1.0], [1.0, 2.0, 0.0]])) == pytest.approx(2 / 5)  # pooled, not per frame
    assert pooled_accuracy(np.zeros((2, 3))) == 1.0  # nothing sounding, nothing predicted
    with pytest.raises(ValueError, match="marginals of shape"):
        expected_counts(truth, states[:, 0, :3])


def test_decoded_accuracy_guesses_what_maximises_the_models_own_expectation():
    """The guess's set beats every other subset of (frame, note) pairs under the model's own
    expected counts (brute force), holds every marginal at or above its threshold, and is
    scored against the truth."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        q = rng.choice([0.0, 0.1, 0.25, 0.5, 0.7, 0.9], size=(2, 5)) if trial % 2 else rng.random((2, 5))
        truth = rng.random((2, 5)) < 0.4
        best = max(
            (q[s].sum() / (s.sum() + q[~s].sum()) for bits in itertools.product([0, 1], repeat=10)
             if (s := np.array(bits, bool).reshape(2, 5)).any()),
            default=0.0,
        )  # fmt: skip
        acc, threshold = decoded_accuracy(truth, q)
        guess = q >= threshold
        assert q[guess].sum() / (guess.sum() + q[~guess].sum()) == pytest.approx(best)
        tp, fp, fn = (guess & truth).sum(), (guess & ~truth).sum(), (~guess & truth).sum()
        assert acc == pytest.approx(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
    truth = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    q = np.array([[0.9, 0.4, 0.3, 0.0], [0.6, 0.05, 0.2, 0.0]])
    assert decoded_accuracy(truth, q) == (pytest.approx(2 / 4), 0.4)  # guess 0.9, 0.6, 0.4: TP 2, FP 1, FN 1
    # p = 1/2 on every note predicts all of them: notes per frame / n_v, the paper's Random row.
    frames = rng.random((500, 88)) < 3.9 / 88
    acc, threshold = decoded_accuracy(frames, np.full(frames.shape, 0.5))
    assert threshold == 0.5 and acc == pytest.approx(frames.sum(1).mean() / 88)
    # A sharp model that ranks the true notes first guesses better than its samples score.
    q = np.where(frames, 0.8, 0.01)
    samples = rng.random((20, *q.shape)) < q
    assert decoded_accuracy(frames, q)[0] > expected_frame_accuracy(frames, samples) + 0.2
    assert decoded_accuracy(frames, np.zeros(q.shape)) == (0.0, 1.0)  # predicts nothing
    assert decoded_accuracy(np.zeros((0, 88), bool), np.zeros((0, 88))) == (1.0, 1.0)  # no frames
    assert decoded_accuracy(frames, np.where(frames, 1 + 1e-15, 0.0)) == (1.0, 1.0)  # rounding is no error
    with pytest.raises(ValueError, match="marginals of shape"):
        decoded_accuracy(frames, q[:, :10])
    with pytest.raises(ValueError, match="marginals in"):
        decoded_accuracy(frames, q + 1.0)


# ---------------------------------------------------------------------------------------
# Repeating the previous frame
# ---------------------------------------------------------------------------------------


def test_repeat_accuracy_copies_the_previous_frame_of_each_piece():
    a, b = [1, 1, 0, 0], [0, 1, 1, 0]
    rolls = [np.array([a, a, b], bool), np.array([b], bool), np.zeros((0, 4), bool)]
    # Guesses: silence, a, a | silence (each piece starts from silence, not from the last one).
    # TP 2 (a after a) + 1 (b after a); FP 1 (b after a); FN 2 (the first a) + 1 (b after a)
    # + 2 (the lone b) -> 3 / 9. Carrying b over from the first piece would give 5 / 9.
    assert repeat_accuracy(rolls) == pytest.approx(3 / 9)
    assert repeat_accuracy([]) == 1.0 and repeat_accuracy([np.array([a], bool)]) == 0.0
