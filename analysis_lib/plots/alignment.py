"""Figures of neuron alignment runs: one metric over training per condition, and a time against a scaling variable.

Inputs are tidy run tables (``run_id, <conditions>, seed, step, layer, metric, value``) and the
per-run summaries of a study (one row per run and metric).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import NoData, axis_label, or_note, require_metric


@or_note
def plot_runs_over_training(df: pd.DataFrame, metric: str, *, col: str, layer: str = "model", hue: str = "seed",
                            logx: bool = True, logy: bool = False, ylabel: str | None = None,
                            loss_unit: str | None = None) -> plt.Figure:
    """``metric`` of ``layer`` against step, one line per ``hue`` level (a seed: no averaging), one panel per ``col``.

    Args:
        df: tidy run metrics. metric, layer: what to draw. col: one panel per level.
        logx: symmetric-log step axis (linear below step 1, so step 0 is kept). logy: log y axis.
        ylabel: axis label (default from the metric). loss_unit: unit of a loss axis (e.g. nats).
    """
    sub = require_metric(df, metric)
    sub = sub[sub["layer"] == layer]
    if sub.empty:
        raise NoData(f"no rows of {metric!r} at layer {layer!r}")
    grid = sns.relplot(data=sub, x="step", y="value", hue=hue, col=col, kind="line", estimator=None, units=hue,
                       height=2.8, aspect=1.2, facet_kws={"sharey": True}, palette="crest", legend=False)
    if logx:
        grid.set(xscale="symlog")
        for ax in grid.axes.flat:
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(left=0)
    if logy:
        grid.set(yscale="log")
    grid.set_axis_labels("step", ylabel or axis_label(metric, loss_unit))
    return grid.figure


@or_note
def plot_time_against(summary: pd.DataFrame, *, x: str, y: str = "value", hue: str | None = None,
                      slope: float = float("nan"), intercept: float = float("nan"), xlabel: str = "",
                      ylabel: str = "") -> plt.Figure:
    """One point per run (``y`` against ``x``), coloured by ``hue``, with the line ``intercept + slope·x`` if given.

    Args:
        summary: one row per run with columns ``x``, ``y`` (and ``hue``); rows with NaN are skipped.
        slope, intercept: a fitted line drawn over the range of ``x`` (NaN: none).
    """
    sub = summary.dropna(subset=[x, y])
    if sub.empty:
        raise NoData(f"no runs with both {x!r} and {y!r}")
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    sns.scatterplot(data=sub, x=x, y=y, hue=hue, ax=ax, palette="crest" if hue else None, s=28)
    if np.isfinite(slope) and np.isfinite(intercept):
        xs = np.linspace(sub[x].min(), sub[x].max(), 50)
        ax.plot(xs, intercept + slope * xs, color="C3", lw=1.2, label=f"fit: slope {slope:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    fig.tight_layout()
    return fig
