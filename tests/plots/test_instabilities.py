"""Tests of analysis_lib.plots.instabilities on hand-made tables (Agg backend): what each figure draws.

plot_capped_loss_curves: one line per arm through its capped losses on a log-lr axis;
plot_survival: a step curve per arm; plot_ratio_over_training: the geometric mean over seeds per
step on a log axis with the factor line. Empty input gives the "Nothing to draw" note figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.plots import instabilities as P


def test_capped_loss_curves_one_line_per_arm():
    curves = pd.DataFrame({"arm": ["a", "a", "b", "b"], "lr": [0.1, 0.01, 0.01, 0.1],
                           "capped_loss": [2.0, 1.0, 1.5, 1.6], "ci_low": [1.9, 0.9, 1.4, 1.5],
                           "ci_high": [2.1, 1.1, 1.6, 1.7]})
    fig = P.plot_capped_loss_curves(curves, loss_unit="nats")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and "nats" in ax.get_ylabel()
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert list(lines[0].get_xdata()) == [0.01, 0.1] and list(lines[0].get_ydata()) == [1.0, 2.0]


def test_survival_steps_per_arm():
    km = pd.DataFrame({"arm": ["a", "a", "b"], "step": [0.0, 5.0, 0.0], "survival": [1.0, 0.5, 1.0],
                       "ci_low": [1.0, 0.1, 1.0], "ci_high": [1.0, 0.9, 1.0]})
    lines = P.plot_survival(km).axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert list(lines[0].get_ydata()) == [1.0, 0.5]


def test_ratio_over_training_geometric_mean_and_factor():
    spread = pd.DataFrame({"run_id": ["r0", "r0", "r1", "r1"], "seed": [0, 0, 1, 1], "step": [0, 10, 0, 10],
                           "ratio": [10.0, 100.0, 1000.0, np.nan]})
    ax = P.plot_ratio_over_training(spread, ylabel="max / min", factor=5.0).axes[0]
    assert ax.get_yscale() == "log"
    mean = next(line for line in ax.get_lines() if line.get_label() == "geometric mean over seeds")
    assert list(mean.get_xdata()) == [0, 10]
    assert mean.get_ydata() == pytest.approx([100.0, 100.0])  # sqrt(10 * 1000); the NaN ratio is left out
    assert any(line.get_label() == "factor 5" for line in ax.get_lines())


@pytest.mark.parametrize("plot", [P.plot_capped_loss_curves, P.plot_survival])
def test_empty_tables_give_a_note(plot):
    with pytest.warns(UserWarning):
        fig = plot(pd.DataFrame())
    assert "Nothing to draw" in fig.axes[0].texts[0].get_text()


def test_no_finite_ratio_gives_a_note():
    spread = pd.DataFrame({"run_id": ["r0"], "seed": [0], "step": [0], "ratio": [np.nan]})
    with pytest.warns(UserWarning):
        fig = P.plot_ratio_over_training(spread, ylabel="max / min")
    assert "Nothing to draw" in fig.axes[0].texts[0].get_text()
