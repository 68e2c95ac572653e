"""Tests of analysis_lib.plots.trajectories on small hand-made PCA tables, drawn with the Agg backend.

plot_explained_variance: one panel per window with the measured ratios (mean over runs), the dashed random-walk
reference at the same steps and the dotted limit 6/(π²k²), on a log axis with its labels;
plot_trajectory_projections: one panel per run up to max_runs, each the path in the plane of PC1 and PC2 with one
point per step coloured by step. Every figure is closed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.plots import trajectories as TR
from analysis_lib.trajectories.pca import (
    PCA_COLUMNS,
    PROJECTION_COLUMNS,
    asymptotic_random_walk_ratios,
    random_walk_ratios,
)

K = 4


def _pca() -> pd.DataFrame:
    """Three runs × two windows × K components; the references as pca.py computes them."""
    walk, limit = random_walk_ratios(np.arange(10.0), K), asymptotic_random_walk_ratios(K)
    rows = [(f"r{r}", fs, k, 0.6 / k + 0.01 * r, walk[k - 1], limit[k - 1])
            for r in range(3) for fs in (0, 100) for k in range(1, K + 1)]
    return pd.DataFrame(rows, columns=PCA_COLUMNS)


def test_explained_variance_draws_the_measured_ratios_and_both_references():
    table = _pca()
    fig = TR.plot_explained_variance(table)
    assert [ax.get_title() for ax in fig.axes] == ["from_step = 0", "from_step = 100"]
    assert fig.axes[0].get_xlabel() == "principal component k"
    assert fig.axes[0].get_ylabel() == "explained-variance ratio"
    for ax in fig.axes:
        assert ax.get_yscale() == "log"
        (measured,) = [line for line in ax.lines if line.get_linestyle() == "-"]
        (walk,) = [line for line in ax.lines if line.get_linestyle() == "--"]
        (limit,) = [line for line in ax.lines if line.get_linestyle() == ":"]
        ks = np.arange(1, K + 1)
        assert list(measured.get_xdata()) == list(ks)
        assert measured.get_ydata() == pytest.approx(0.6 / ks + 0.01)  # mean over the three runs
        assert walk.get_ydata() == pytest.approx(random_walk_ratios(np.arange(10.0), K))
        assert limit.get_ydata() == pytest.approx(6 / (np.pi ** 2 * ks ** 2))
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in ks]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["trajectories", "random walk, same steps", "6/(π²k²)"]


def test_explained_variance_by_another_column():
    table = _pca().assign(optimizer=lambda d: np.where(d["run_id"] == "r0", "sgd", "adam"))
    fig = TR.plot_explained_variance(table[table["from_step"] == 0], col="optimizer")
    assert [ax.get_title() for ax in fig.axes] == ["sgd", "adam"]
    assert all(len([line for line in ax.lines if line.get_linestyle() == "--"]) == 1 for ax in fig.axes)


def _projections(n_runs: int = 5, n_steps: int = 6) -> pd.DataFrame:
    rows = [(f"run{r}-0123456789", step, c, step * (c == 1) + r + 0.5 * step * step * (c == 2))
            for r in range(n_runs) for step in range(n_steps) for c in (1, 2)]
    return pd.DataFrame(rows, columns=PROJECTION_COLUMNS)


def test_trajectory_projections_one_panel_per_run_up_to_max_runs():
    fig = TR.plot_trajectory_projections(_projections(), max_runs=4)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == [f"run run{r}-012" for r in range(4)]  # first 8 characters
    for r, ax in enumerate(panels):
        assert ax.get_xlabel() == "PC1" and ax.get_ylabel() == "PC2"
        (path,) = ax.lines
        steps = np.arange(6)
        assert list(path.get_xdata()) == list(steps + r)
        assert list(path.get_ydata()) == pytest.approx(list(r + 0.5 * steps ** 2))
        (points,) = ax.collections
        assert len(points.get_offsets()) == 6 and list(points.get_array()) == list(steps)  # coloured by step
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bar.get_ylabel() == "step"


def test_trajectory_projections_with_fewer_runs_than_panels():
    fig = TR.plot_trajectory_projections(_projections(n_runs=2), max_runs=4)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 2
