"""Slice summaries on known curves, and the direction-averaged summary table.

A quadratic and a bumpy path give known curvature, rise and roughness; the summary table is the mean and the
bootstrap CI computed directly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.landscape.slices import slice_summaries, summary_table
from analysis_lib.stats.effects import bootstrap_ci


def _slice(values, alphas, **labels) -> pd.DataFrame:
    return pd.DataFrame({"run_id": "r", "direction_seed": 0, "split": "train", **labels,
                         "alpha": alphas, "beta": 0.0, "metric": "loss", "value": values})


def test_summaries_of_a_known_quadratic():
    alphas = np.linspace(-1, 1, 11)
    k = 3.0
    slice_ = _slice(2.0 + 0.4 * alphas + 0.5 * k * alphas**2, alphas)
    got = slice_summaries(slice_, fit_fraction=0.5, rise_fraction=0.6).set_index("metric")["value"]
    assert got["curvature"] == pytest.approx(k, rel=1e-10)
    assert got["second_difference"] == pytest.approx(k, rel=1e-10)
    assert got["rise"] == pytest.approx(0.5 * k * 0.6**2, rel=1e-10)
    assert got["roughness"] == pytest.approx(0.0, abs=1e-12)


def test_roughness_counts_bumps():
    # Total variation 6 against a unimodal variation of (3 - 1) + (3 - 1) = 4: roughness 0.5.
    bumpy = _slice(np.array([3.0, 2, 1, 2, 1, 2, 3]), np.linspace(-3, 3, 7))
    got = slice_summaries(bumpy).set_index("metric")["value"]
    assert got["roughness"] == pytest.approx(0.5)
    assert got["second_difference"] == pytest.approx(-2.0)  # the centre is a local maximum
    with pytest.raises(ValueError, match="alpha = 0"):
        slice_summaries(_slice(np.ones(4), np.linspace(-1, 1, 4)))


def test_summary_table_is_the_mean_and_bootstrap_ci_over_directions():
    alphas = np.linspace(-1, 1, 9)
    curvatures = [1.0, 2.0, 4.0, 7.0]
    frames = [_slice(0.5 * c * alphas**2, alphas).assign(direction_seed=i) for i, c in enumerate(curvatures)]
    table = summary_table(slice_summaries(pd.concat(frames)), n_boot=500, seed=3)
    row = table[table["metric"] == "curvature"].iloc[0]
    assert row["mean"] == pytest.approx(np.mean(curvatures)) and row["n"] == 4
    low, high = bootstrap_ci(np.array(curvatures), n_boot=500, seed=3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert "direction_seed" not in table.columns
