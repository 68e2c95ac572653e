"""Figures of the phases of training: mini-batch gradient SNR over training, the information plane, compression.

Inputs are tidy run metrics (``run_id, activation, seed, step, layer, metric, value``), the
information table of :func:`analysis_lib.studies.drift_diffusion.information_table` labelled with
``activation`` and ``seed``, and per-cell means with CIs (``mean, ci_low, ci_high``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import NoData, ci_band, or_note, require_metric


@or_note
def plot_snr_over_training(df: pd.DataFrame, *, threshold: float = 1.0, metric: str = "grad_snr_mb",
                           col: str = "activation") -> plt.Figure:
    """Per-layer SNR against step (mean over seeds, 95% bootstrap band), one panel per ``col``; log-log.

    Args:
        df: tidy run metrics with ``metric`` per layer. threshold: drawn as a dashed line.
    """
    sub = require_metric(df, metric)
    sub = sub[sub["value"] > 0]  # a zero SNR (signal estimate <= 0) has no place on a log axis
    if sub.empty:
        raise NoData(f"no positive {metric!r}")
    grid = sns.relplot(data=sub, x="step", y="value", hue="layer", col=col, kind="line", errorbar=ci_band,
                       height=2.8, aspect=1.2, palette="crest", facet_kws={"sharey": True})
    for ax in grid.axes.flat:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=0)
        ax.set_yscale("log")
        ax.axhline(threshold, color="C3", ls="--", lw=1)
    grid.set_axis_labels("step", "mini-batch gradient SNR")
    return grid.figure


@or_note
def plot_information_plane(info: pd.DataFrame, *, bins: int, col: str = "activation") -> plt.Figure:
    """I(T;Y) against I(X;T) per hidden layer over training (mean over seeds per step), one panel per ``col``.

    Each layer is a line through the probed steps, its points coloured by log step (light: early).
    """
    sub = info[info["bins"] == bins]
    if sub.empty:
        raise NoData(f"no information rows at {bins} bins")
    mean = sub.groupby([col, "layer", "step"], sort=True)[["I_XT", "I_TY"]].mean().reset_index()
    panels = list(dict.fromkeys(mean[col]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        here = mean[mean[col] == panel]
        for i, (layer, line) in enumerate(here.groupby("layer", sort=False)):
            ax.plot(line["I_XT"], line["I_TY"], color=f"C{i}", lw=0.8, label=layer)
            ax.scatter(line["I_XT"], line["I_TY"], c=np.log1p(line["step"]), cmap="viridis", s=10, zorder=3)
        ax.set_title(f"{col} = {panel}", fontsize=9)
        ax.set_xlabel("I(X; T) [bits]")
    axes[0][0].set_ylabel("I(T; Y) [bits]")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


@or_note
def plot_compression(cells: pd.DataFrame, *, x: str = "bins", hue: str = "activation") -> plt.Figure:
    """Mean ΔI(X;T) with its CI per ``x`` level, one colour per ``hue``; 0 (no compression) dashed."""
    sub = cells.dropna(subset=["mean"])
    if sub.empty:
        raise NoData("no compression cells")
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    levels = sorted(sub[x].unique())
    hues = list(dict.fromkeys(sub[hue]))
    for i, level in enumerate(hues):
        line = sub[sub[hue] == level].set_index(x).reindex(levels)
        pos = np.arange(len(levels)) + (i - (len(hues) - 1) / 2) * 0.15
        err = np.array([line["mean"] - line["ci_low"], line["ci_high"] - line["mean"]])
        ax.errorbar(pos, line["mean"], yerr=np.nan_to_num(err), fmt="o", ms=4, capsize=3, color=f"C{i}", label=level)
    ax.axhline(0, color="grey", ls="--", lw=1)
    ax.set_xticks(np.arange(len(levels)), [str(v) for v in levels])
    ax.set_xlabel(x)
    ax.set_ylabel("ΔI(X; T): switch − end [bits]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
