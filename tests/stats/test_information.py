"""Tests of analysis_lib.stats.information on hand-made discrete cases with closed forms.

Deterministic T: I(X; T) = H(T); independent T and Y: I = 0; a binary symmetric channel: I = 1 − h(p);
equal-width binning by hand; refusals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis_lib.stats.information import bin_activations, entropy, information_plane, mutual_information
from analysis_lib.validation import ConfigError


def h2(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def test_entropy_of_known_distributions():
    assert entropy(np.array([0, 1, 2, 3])) == pytest.approx(2.0, abs=1e-12)
    assert entropy(np.array([5, 5, 5])) == 0.0
    assert entropy(np.array([0, 0, 0, 1])) == pytest.approx(h2(0.25), abs=1e-12)
    rows = np.array([[0, 1], [0, 1], [1, 0], [1, 1]])  # three symbols: 1/2, 1/4, 1/4
    assert entropy(rows) == pytest.approx(1.5, abs=1e-12)


def test_a_deterministic_function_of_x_has_i_xt_equal_to_h_t():
    x = np.arange(12)
    t = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])  # T = f(X)
    assert mutual_information(x, t) == pytest.approx(entropy(t), abs=1e-12)
    counts = np.array([3, 2, 4, 3]) / 12
    assert entropy(t) == pytest.approx(float(-(counts * np.log2(counts)).sum()), abs=1e-12)


def test_independent_t_and_y_have_zero_information():
    t, y = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")  # every (t, y) pair once: a product joint
    assert mutual_information(t.ravel(), y.ravel()) == pytest.approx(0.0, abs=1e-12)


def test_a_binary_symmetric_channel():
    # 20 samples: Y uniform, T = Y flipped in 2 of every 10 of each class -> I = 1 - h(0.2)
    y = np.repeat([0, 1], 10)
    t = y.copy()
    t[[0, 1, 10, 11]] = 1 - t[[0, 1, 10, 11]]
    assert mutual_information(t, y) == pytest.approx(1 - h2(0.2), abs=1e-12)
    assert mutual_information(y, y) == pytest.approx(1.0, abs=1e-12)


def test_equal_width_bins_by_hand():
    t = np.array([[-1.0, 0.0], [0.5, 1.0], [0.99, -0.5]])  # range [-1, 1], width 0.5 with 4 bins
    assert bin_activations(t, 4).tolist() == [[0, 2], [3, 3], [3, 1]]
    assert bin_activations(np.full((3, 2), 0.7), 10).tolist() == [[0, 0]] * 3


def test_information_plane_of_hand_made_activations():
    # two units, 4 samples; with 2 bins over [0, 1] the binned rows are (0,0), (0,0), (1,1), (1,0)
    t = np.array([[0.0, 0.1], [0.2, 0.3], [0.9, 1.0], [0.8, 0.4]])
    y = np.array([0, 0, 1, 1])
    got = information_plane(t, y, bins=2)
    assert got["I_XT"] == pytest.approx(1.5, abs=1e-12)
    assert got["I_TY"] == pytest.approx(1.0, abs=1e-12)  # T determines Y: I(T; Y) = H(Y)
    fine = information_plane(t, y, bins=100)  # every sample its own bin: log2 n
    assert fine["I_XT"] == pytest.approx(2.0, abs=1e-12)
    assert information_plane(t, y, bins=1) == {"I_XT": 0.0, "I_TY": 0.0}


def test_refusals():
    with pytest.raises(ConfigError, match="bins"):
        bin_activations(np.ones((2, 2)), 0)
    with pytest.raises(ValueError, match="finite"):
        bin_activations(np.array([[np.nan]]), 3)
    with pytest.raises(ValueError, match="number of samples"):
        information_plane(np.ones((3, 2)), np.ones(2), 3)
    with pytest.raises(ValueError, match="number of samples"):
        mutual_information(np.ones(3), np.ones(2))


@pytest.mark.parametrize("kind", ["bins", "wide-bins", "negative", "float", "many-columns"])
def test_row_codes_number_the_distinct_rows_like_numpy_unique(kind):
    """The mixed-radix row codes equal ``np.unique(axis=0)``'s inverse, including past int64 radix overflow."""
    from analysis_lib.stats.information import _codes

    rng = np.random.default_rng(3)
    values = {"bins": lambda: rng.integers(0, 10, size=(400, 6)),
              "wide-bins": lambda: rng.integers(0, 1000, size=(300, 40)),  # 1000^40 >> 2^62: densified on the way
              "negative": lambda: rng.integers(-3, 3, size=(200, 5)),
              "float": lambda: rng.normal(size=(150, 4)).round(1),
              "many-columns": lambda: rng.integers(0, 2, size=(64, 300))}[kind]()
    values[::4] = values[1]  # repeated rows
    expected = np.unique(values, axis=0, return_inverse=True)[1].reshape(-1)
    np.testing.assert_array_equal(_codes(values), expected)
    np.testing.assert_array_equal(_codes(values[:, 0]), np.unique(values[:, 0], return_inverse=True)[1])
