"""Figures of curvature: λ_max over training against the edge 2/η, top eigenvalues, spectral densities."""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, NullLocator

from .style import axis_label, or_note, require_metric


@or_note
def plot_sharpness(df: pd.DataFrame, *, col: str = "lr", hue: str = "seed", metric: str = "lambda_max",
                   learning_rates: Mapping[str, float] | pd.Series | None = None, logy: bool = False,
                   loss_unit: str | None = None) -> plt.Figure:
    """λ_max (or another whole-model metric) over training, one line per seed, one panel per ``col``.

    Args:
        df: tidy run metrics. col, hue: panels and lines. metric: a whole-model metric.
        learning_rates: run id -> the η each run trained with (``GridResult.parameter("train.lr")``);
            with ``metric="lambda_max"`` a panel whose runs share one η gets the stability edge
            2/η as a dashed line.
        logy: log-scaled y axis. loss_unit: unit of a loss metric's axis (``LossSpec.unit``, e.g. nats).
    """
    sub = require_metric(df, metric)
    sub = sub[sub["layer"] == "model"]
    grid = sns.relplot(data=sub, x="step", y="value", hue=hue, col=col, kind="line", estimator=None,
                       units=hue, height=2.8, aspect=1.2, facet_kws={"sharey": False}, palette="crest",
                       legend=False)
    for value, ax in grid.axes_dict.items():
        runs = sub.loc[sub[col] == value, "run_id"]
        etas = set() if learning_rates is None else {float(learning_rates[r]) for r in runs}
        eta = etas.pop() if len(etas) == 1 else None
        if eta and metric == "lambda_max":
            ax.axhline(2.0 / eta, color="C3", ls="--", lw=1, label="2/η")
            ax.legend(loc="lower right", fontsize=8)
    if logy:
        grid.set(yscale="log")
    grid.set_axis_labels("step", axis_label(metric, loss_unit))
    return grid.figure


@or_note
def plot_top_eigenvalues(spectra: pd.DataFrame, *, col: str, hue: str | None = None, top: int = 25) -> plt.Figure:
    """The ``top`` largest eigenvalues of each run's spectrum against their rank (log scale).

    Args:
        spectra: one spectrum per run (e.g. the final one: :func:`analysis_lib.stats.reductions.last_step`).
        col: one panel per level; with ``col="n_classes"`` a dotted line marks rank C.
        hue: line colour. top: eigenvalues drawn per run.

    Outliers show as the points above the knee where the curve drops into the bulk.
    """
    ranked = (spectra.sort_values("eigenvalue", ascending=False).groupby("run_id", sort=False).head(top)
              .assign(rank=lambda d: d.groupby("run_id").cumcount() + 1))
    ranked = ranked[ranked["eigenvalue"] > 0]
    grid = sns.relplot(data=ranked, x="rank", y="eigenvalue", hue=hue, col=col, units="run_id", estimator=None,
                       kind="line", marker="o", markersize=3, height=2.8, aspect=1.1, alpha=0.7,
                       facet_kws={"sharey": False})
    grid.set(yscale="log")
    for value, ax in grid.axes_dict.items():
        if col == "n_classes":
            ax.axvline(float(value), color="0.5", ls=":", lw=1)  # rank C
    return grid.figure


@or_note
def plot_spectral_density(density: pd.DataFrame, *, col: str, hue: str) -> plt.Figure:
    """Spectral densities (from :func:`analysis_lib.curvature.spectrum.density_table`) on a symmetric-log axis."""
    grid = sns.relplot(data=density, x="eigenvalue", y="density", hue=hue, col=col, units="run_id",
                       estimator=None, kind="line", alpha=0.5, height=2.8, aspect=1.2,
                       facet_kws={"sharey": False, "sharex": False}, palette="flare")
    grid.set(yscale="log")
    linthresh = max(1e-3, float(density["eigenvalue"].abs().quantile(0.5)))
    top = float(density["density"].quantile(0.99)) * 3  # the spike at 0 would flatten everything else
    # Ticks at 0 and at whole decades at least 5× the linear threshold: the decades next to the
    # threshold sit right beside 0 on a symlog axis, and their labels would overprint.
    reach = float(density["eigenvalue"].abs().max())
    decades = [10.0**k for k in range(int(np.floor(np.log10(5 * linthresh))), int(np.ceil(np.log10(reach))) + 1)
               if 5 * linthresh <= 10.0**k <= reach]
    ticks = sorted({0.0, *decades, *(-d for d in decades)})
    for ax in grid.axes.flat:
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylim(top * 1e-6, top)
    grid.set_axis_labels("eigenvalue λ (symmetric log)", "spectral density")
    return grid.figure
