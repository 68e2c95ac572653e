"""Tests of analysis_lib.plots.seed_variance on a hand-made table of per-example correctness rates (Agg backend).

plot_correctness_rates: one bar per possible rate k / n_runs, each as high as the number of examples with that
rate, on a log axis with its labels. Every figure is closed.
"""

from __future__ import annotations

import pandas as pd
import pytest

from analysis_lib.plots import seed_variance as V


def test_correctness_rates_one_bar_per_possible_rate():
    rates = pd.DataFrame({"example": range(7), "rate": [0.0, 0.25, 0.25, 1.0, 1.0, 1.0, 0.75]})
    fig = V.plot_correctness_rates(rates, n_runs=4)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "fraction of the 4 runs that classify the example correctly"
    assert ax.get_ylabel() == "test examples" and ax.get_yscale() == "log"
    bars = ax.patches
    assert [bar.get_height() for bar in bars] == [1, 2, 0, 1, 3]  # rates 0, 1/4, 1/2, 3/4, 1
    centres = [bar.get_x() + bar.get_width() / 2 for bar in bars]
    assert centres == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_correctness_rates_of_two_runs():
    fig = V.plot_correctness_rates(pd.DataFrame({"rate": [0.5, 0.5, 1.0]}), n_runs=2)
    assert [bar.get_height() for bar in fig.axes[0].patches] == [0, 2, 1]
    assert "2 runs" in fig.axes[0].get_xlabel()
