"""rbmsearch.arrays: the padded batch layout the model reads, and the array checks with their messages."""

from __future__ import annotations

import numpy as np
import pytest

from rbmsearch.arrays import binary_array, float_array, pad_batch


def test_pad_batch_masks_the_padding():
    v, mask = pad_batch([np.ones((2, 3), bool), np.ones((4, 3), bool)])
    assert v.shape == (2, 4, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(v.sum(axis=2), 3 * mask)


def test_array_checks_say_what_was_expected_and_found():
    assert float_array([[1, 2]], "W", "(n_v, n_h)", 2, np.float64).dtype == np.float64
    with pytest.raises(ValueError, match=r"W to be a 2-D array of shape \(n_v, n_h\), but got an array of shape \(2,\)"):
        float_array([1, 2], "W", "(n_v, n_h)", 2, np.float64)
    with pytest.raises(ValueError, match=r"found 1 NaN/inf entries \(first at index \(1, 0\)\)"):
        float_array([[0.0], [np.inf]], "W", "(n_v, n_h)", 2, np.float64)
    np.testing.assert_array_equal(binary_array([[0, 1]], "v", "(N, n_v)", 2), [[False, True]])
    with pytest.raises(ValueError, match=r"only 0 and 1 .* 2 at index \(0, 1\)"):
        binary_array([[0, 2]], "v", "(N, n_v)", 2)
    with pytest.raises(ValueError, match="bool or 0/1 array"):
        binary_array([["a"]], "v", "(N, n_v)", 2)
