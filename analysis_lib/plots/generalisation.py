"""Figures of generalisation measures: per-run values by training method, measure against test error.

Inputs are tidy per-run tables ``run_id, scenario, <method column>, seed, metric, value`` (one
value per run and metric, e.g. the sharpness measures at the final weights and the test error).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import ci_band, or_note


@or_note
def plot_values_by_method(df: pd.DataFrame, *, method: str, metrics: Sequence[str], row: str = "scenario",
                          ylabel: str = "") -> plt.Figure:
    """One dot per run by ``method``, with the mean and its 95% CI; a panel per (``row``, metric).

    Each panel has its own y scale (the measures differ by orders of magnitude); ``metrics``
    fixes the columns' order (metrics absent from ``df`` are left out).
    """
    present = [m for m in metrics if m in set(df["metric"])]
    df = df[df["metric"].isin(present)]
    grid = sns.catplot(data=df, x=method, y="value", row=row, col="metric", col_order=present, kind="strip",
                       alpha=0.6, height=2.4, aspect=1.0, sharey=False, margin_titles=True)
    grid.map_dataframe(sns.pointplot, x=method, y="value", errorbar=ci_band, linestyle="none", markers="D",
                       color="k")
    grid.set_axis_labels("", ylabel)
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    return grid.figure


@or_note
def plot_measure_vs_error(df: pd.DataFrame, *, measures: Sequence[str], hue: str, y: str = "test_error",
                          col: str = "scenario") -> plt.Figure:
    """Scatter of one point per run: each measure (a row of panels) against ``y``, a column per ``col``.

    ``df`` is wide: one row per run, a column per metric (measures absent from it are left out).
    """
    names = [m for m in measures if m in df.columns]
    cols = list(dict.fromkeys(df[col]))
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.8 * len(cols), 2.3 * len(names)), squeeze=False)
    for i, m in enumerate(names):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            sub = df[df[col] == c]
            sns.scatterplot(data=sub, x=m, y=y, hue=hue, ax=ax, legend=(i == 0 and j == len(cols) - 1), s=18)
            ax.set_title(str(c) if i == 0 else "", fontsize=9)
            ax.set_xlabel(m, fontsize=8)
            ax.set_ylabel(y if j == 0 else "", fontsize=8)
            ax.tick_params(labelsize=7)
    if axes[0, -1].get_legend() is not None:
        axes[0, -1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig
