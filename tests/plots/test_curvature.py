"""Tests of analysis_lib.plots.curvature on small hand-made tables, drawn with the Agg backend.

plot_sharpness: one panel per ``col`` level and one line per seed, the dashed edge 2/η in each panel whose runs
share one η (read from the learning_rates mapping, never from a label), none where the runs of a panel differ in
η, for another metric or without a mapping, and a ValueError for a missing metric. plot_top_eigenvalues and
plot_spectral_density: panels, one line per run, the rank-C marker and the axis scales. Every figure is closed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.curvature.spectrum import density_table
from analysis_lib.plots import curvature as C

# (run id, lr label, batch size, seed) of full-batch runs at two η and mini-batch runs at η = 0.1.
RUNS = [("a0", 0.1, 0, 0), ("a1", 0.1, 0, 1), ("b0", 0.05, 0, 0), ("b1", 0.05, 0, 1),
        ("s0", 0.1, 30, 0), ("s1", 0.1, 30, 1)]
LEARNING_RATES = {"a0": 0.1, "a1": 0.1, "b0": 0.05, "b1": 0.05, "s0": 0.1, "s1": 0.1}


def _metrics(runs=RUNS) -> pd.DataFrame:
    rows = []
    for rid, lr, bs, seed in runs:
        for step in (0, 10, 20):
            rows.append((rid, lr, bs, seed, step, "model", "lambda_max", 5.0 + step + seed))
            rows.append((rid, lr, bs, seed, step, "model", "batch_loss", 1.0 / (1 + step)))
            rows.append((rid, lr, bs, seed, step, "fc1", "lambda_max", 99.0))  # not a whole-model row
    return pd.DataFrame(rows, columns=["run_id", "lr", "batch_size", "seed", "step", "layer", "metric", "value"])


def _curves(ax) -> list:
    return [line for line in ax.lines if len(line.get_xdata()) > 2 and line.get_linestyle() == "-"]


def _edges(ax) -> list[float]:
    """Y of every dashed horizontal reference line."""
    return [line.get_ydata()[0] for line in ax.lines
            if line.get_linestyle() == "--" and list(line.get_xdata()) == [0, 1]]


def test_sharpness_draws_the_edge_in_each_panel_of_one_eta():
    gd = _metrics(RUNS[:4])
    fig = C.plot_sharpness(gd, col="lr", learning_rates=LEARNING_RATES)
    assert [ax.get_title() for ax in fig.axes] == ["lr = 0.05", "lr = 0.1"]
    assert fig.axes[0].get_xlabel() == "step" and fig.axes[0].get_ylabel() == "λ_max, top Hessian eigenvalue"
    for ax, eta in zip(fig.axes, (0.05, 0.1)):
        lines = _curves(ax)
        assert len(lines) == 2  # one per seed
        assert sorted(line.get_ydata()[0] for line in lines) == [5.0, 6.0]  # the whole-model rows only
        assert _edges(ax) == pytest.approx([2 / eta])
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["2/η"]


def test_sharpness_reads_eta_from_the_mapping_not_the_label():
    gd = _metrics(RUNS[:4])
    wrong = gd.assign(lr=0.5)  # every label says 0.5; the mapping knows better
    fig = C.plot_sharpness(wrong, col="lr", learning_rates=LEARNING_RATES)
    assert len(fig.axes) == 1 and not _edges(fig.axes[0])  # 0.1 and 0.05 share the panel: no single edge
    fig = C.plot_sharpness(wrong[wrong["run_id"].str.startswith("a")], col="lr", learning_rates=LEARNING_RATES)
    assert _edges(fig.axes[0]) == pytest.approx([20.0])  # 2 / 0.1, not 2 / 0.5
    fig = C.plot_sharpness(gd, col="lr", learning_rates=pd.Series(LEARNING_RATES))
    assert [e for ax in fig.axes for e in _edges(ax)] == pytest.approx([40.0, 20.0])


def test_sharpness_has_no_edge_where_a_panel_mixes_etas():
    fig = C.plot_sharpness(_metrics(), col="batch_size", learning_rates=LEARNING_RATES)
    assert [ax.get_title() for ax in fig.axes] == ["batch_size = 0", "batch_size = 30"]
    assert _edges(fig.axes[0]) == [] and fig.axes[0].get_legend() is None  # η 0.1 and 0.05 together
    assert _edges(fig.axes[1]) == pytest.approx([20.0])
    assert len(_curves(fig.axes[1])) == 2


def test_sharpness_of_another_metric_or_without_a_mapping_has_no_edge():
    fig = C.plot_sharpness(_metrics(RUNS[:4]), col="lr", metric="batch_loss", learning_rates=LEARNING_RATES,
                           logy=True, loss_unit="nats")
    assert all(not _edges(ax) and ax.get_yscale() == "log" for ax in fig.axes)
    assert fig.axes[0].get_ylabel() == "mini-batch loss (nats)" and all(len(_curves(ax)) == 2 for ax in fig.axes)
    fig = C.plot_sharpness(_metrics(RUNS[:4]), col="lr", loss_unit="nats")  # not a loss: no unit
    assert all(not _edges(ax) for ax in fig.axes) and fig.axes[0].get_ylabel() == "λ_max, top Hessian eigenvalue"


def test_sharpness_without_the_metric_says_so_in_the_figure_and_a_warning():
    with pytest.warns(UserWarning, match="no rows with metric='hessian_trace'"):
        fig = C.plot_sharpness(_metrics(), col="lr", metric="hessian_trace", learning_rates=LEARNING_RATES)
    assert "Nothing to draw: no rows with metric='hessian_trace'" in fig.axes[0].texts[0].get_text()


def _spectra() -> pd.DataFrame:
    """Final exact spectra of four runs: C outliers over a bulk of 20, plus a negative and a zero eigenvalue."""
    rows = []
    for c in (3, 5):
        for seed in (0, 1):
            eig = np.r_[np.linspace(10, 5, c), np.linspace(0.1, 0.01, 20), -0.05, 0.0]
            rows += [(f"c{c}s{seed}", c, "gaussian_mixture", seed, 100, "exact", 0, e, 1 / len(eig)) for e in eig]
    return pd.DataFrame(rows, columns=["run_id", "n_classes", "dataset", "seed", "step", "method", "probe",
                                       "eigenvalue", "weight"])


def test_top_eigenvalues_one_line_per_run_with_the_rank_c_marker():
    fig = C.plot_top_eigenvalues(_spectra(), col="n_classes", hue="dataset", top=10)
    assert [ax.get_title() for ax in fig.axes] == ["n_classes = 3", "n_classes = 5"]
    for ax, c in zip(fig.axes, (3, 5)):
        lines = [line for line in ax.lines if len(line.get_xdata()) > 2]
        assert len(lines) == 2 and all(list(line.get_xdata()) == list(range(1, 11)) for line in lines)
        assert lines[0].get_ydata()[0] == 10.0 and lines[0].get_ydata()[c - 1] == 5.0  # sorted, largest first
        (marker,) = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert list(marker.get_xdata()) == [c, c]
        assert ax.get_yscale() == "log" and ax.get_xlabel() == "rank"
    assert fig.axes[0].get_ylabel() == "eigenvalue"


def test_top_eigenvalues_draws_only_positive_eigenvalues_and_marks_rank_c_only_by_class():
    spectra = _spectra()
    fig = C.plot_top_eigenvalues(spectra, col="seed", top=30)
    for ax in fig.axes:
        lines = [line for line in ax.lines if len(line.get_xdata()) > 2]
        assert sorted(len(line.get_xdata()) for line in lines) == [3 + 20, 5 + 20]  # -0.05 and 0 left out
        assert not [line for line in ax.lines if line.get_linestyle() == ":"]  # col is not n_classes


def test_spectral_density_one_line_per_run_on_symlog_axes():
    density = density_table(_spectra(), points=50)
    fig = C.plot_spectral_density(density, col="n_classes", hue="step")
    assert [ax.get_title() for ax in fig.axes] == ["n_classes = 3", "n_classes = 5"]
    for ax in fig.axes:
        lines = [line for line in ax.lines if len(line.get_xdata()) == 50]
        assert len(lines) == 2
        assert ax.get_xscale() == "symlog" and ax.get_yscale() == "log"
        top = float(density["density"].quantile(0.99)) * 3
        assert ax.get_ylim() == pytest.approx((top * 1e-6, top))
    assert fig.axes[0].get_xlabel() == "eigenvalue λ (symmetric log)" and fig.axes[0].get_ylabel() == "spectral density"
