"""Figures of per-layer training metrics: curves over training, layer profiles, run values, correlations.

Inputs are tidy run tables (``run_id, <conditions>, seed, step, layer, metric, value``).

Error bands are 95% bootstrap intervals of the mean across seeds (:func:`~.style.ci_band`).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import axis_label, ci_band, layers_in_order, or_note, require_metric

_ERRORBAR = ci_band  # vectorised: seaborn's own bootstrap loops in Python and dominated rendering


@or_note
def plot_metric_over_training(df: pd.DataFrame, metric: str, *, hue: str, layers: Sequence[str] | None = None,
                              row: str | None = None, logy: bool = False, col_wrap: int = 4,
                              loss_unit: str | None = None) -> plt.Figure:
    """``metric`` against step, one panel per layer, one line per ``hue`` level (mean, 95% CI over seeds).

    ``loss_unit`` (``LossSpec.unit``, e.g. nats) goes in brackets on the axis of a loss metric.
    """
    sub = require_metric(df, metric)
    order = layers_in_order(sub, layers) if layers is not None or (sub["layer"] != "model").any() else ["model"]
    sub = sub[sub["layer"].isin(order)]
    grid = sns.relplot(data=sub, x="step", y="value", hue=hue, col="layer", col_order=order, row=row,
                       kind="line", errorbar=_ERRORBAR, col_wrap=None if row else min(col_wrap, len(order)),
                       height=2.6, aspect=1.2, facet_kws={"sharey": False})
    if logy:
        grid.set(yscale="log")
    grid.set_axis_labels("step", axis_label(metric, loss_unit))
    grid.figure.suptitle(f"{axis_label(metric)} per layer over training", y=1.02)
    return grid.figure


@or_note
def plot_layer_profile(df: pd.DataFrame, metrics: str | Sequence[str], *, hue: str,
                       logy: bool = False) -> plt.Figure:
    """Metrics across layers (x in forward order), one panel per metric, one line per ``hue`` level.

    Points are means over seeds with 95% CIs; pass one step per run (e.g. ``final_values``).
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    sub = pd.concat([require_metric(df, m) for m in metrics])
    order = layers_in_order(sub, None)
    sub = sub[sub["layer"].isin(order)]
    grid = sns.catplot(data=sub, x="layer", y="value", hue=hue, col="metric", col_order=metrics,
                       kind="point", order=order, errorbar=_ERRORBAR, dodge=0.3, height=3.0,
                       aspect=1.2, sharey=False)
    if logy:
        grid.set(yscale="log")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("layer", "")
    return grid.figure


@or_note
def plot_run_values(df: pd.DataFrame, *, x: str, hue: str | None = None, col: str | None = None,
                    ylabel: str = "", band: tuple[float, float] | None = None,
                    references: dict | None = None) -> plt.Figure:
    """One dot per run (``value`` column) by condition ``x``, with the mean and its 95% CI.

    ``band`` shades a reference interval, e.g. an equivalence margin fixed in advance;
    ``references`` maps a label to ``f(x value) -> y``, drawn as a short line at every category
    (e.g. ``{"count = C": lambda c: c}`` on an axis of class counts).
    """
    grid = sns.catplot(data=df, x=x, y="value", hue=hue, col=col, kind="strip", alpha=0.6,
                       height=3.0, aspect=1.1, dodge=hue is not None)
    grid.map_dataframe(sns.pointplot, x=x, y="value", hue=hue, errorbar=_ERRORBAR,
                       dodge=0.4 if hue else False, linestyle="none", markers="D",
                       palette="dark" if hue else None, color=None if hue else "k")
    if band is not None:
        for ax in grid.axes.flat:
            ax.axhspan(*band, color="0.85", zorder=0)
    for ax in grid.axes.flat:
        handles = []
        for (label, f), style in zip((references or {}).items(), ("--", ":", "-.")):
            for i, tick in enumerate(ax.get_xticklabels()):
                line = ax.hlines(f(float(tick.get_text())), i - 0.4, i + 0.4, colors="0.3", linestyles=style,
                                 label=label)
            handles.append(line)
        if handles:  # only the reference lines: the hue legend stays beside the grid
            ax.legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.8)
    grid.set_axis_labels(x, ylabel)
    return grid.figure


@or_note
def plot_correlation(df: pd.DataFrame, x: str, y: str, *, hue: str | None = None,
                     style: str | None = None) -> plt.Figure:
    """Scatter of one row per run, e.g. final layer rotation against test accuracy."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    sns.scatterplot(data=df, x=x, y=y, hue=hue, style=style, ax=ax)
    if hue or style:
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


@or_note
def plot_metric_family(metrics: pd.DataFrame, prefix: str, *, hue: str, ylabel: str,
                       vline: float | None = None, vline_text: str = "", ylim: tuple | None = None) -> plt.Figure:
    """Every whole-model metric named ``<prefix><suffix>`` over training, one colour per suffix.

    One thin line per seed and the mean in bold, e.g. ``prefix="test_seq_acc_"`` draws the
    held-out exact match of each response format (``hue="format"``).

    Args:
        metrics: tidy run metrics. prefix: shared start of the metric names.
        hue: legend title for the suffixes. ylabel: y-axis label.
        vline, vline_text: a step to mark with a dashed line and a note beside it.
        ylim: y-axis limits.
    """
    sub = metrics[metrics["metric"].str.startswith(prefix) & (metrics["layer"] == "model")]
    sub = sub.assign(**{hue: sub["metric"].str.removeprefix(prefix)})
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.lineplot(data=sub, x="step", y="value", hue=hue, units="seed", estimator=None, lw=0.7, alpha=0.5,
                 ax=ax, legend=False)
    sns.lineplot(data=sub, x="step", y="value", hue=hue, errorbar=None, lw=2, ax=ax)
    if vline is not None:
        ax.axvline(vline, color="0.4", ls="--", lw=1)
        ax.text(vline, 0.02, vline_text, fontsize=8, color="0.3", transform=ax.get_xaxis_transform())
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    fig.tight_layout()
    return fig
