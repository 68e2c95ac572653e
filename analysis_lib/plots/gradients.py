"""Figures of per-layer gradient statistics: spectra across layers, spreads, scores, and the SNR.

Spectra profiles across layers, cross-layer spreads, per-example score distributions, and the
per-layer gradient signal-to-noise ratio over training.

Inputs are tidy tables of :mod:`analysis_lib.gradients` (per-example spectra averaged per seed,
cross-layer spreads, the noise profile); points and lines are means over seeds with the 95%
bootstrap band of :func:`~.style.ci_band`.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..layers import layer_and_projection
from .style import ci_band, first_seen, or_note


def _mean_bands(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean of ``value`` per group with its 95% bootstrap band (``mean, low, high``), groups in data order."""
    rows = []
    for key, sub in df.groupby(keys, sort=False):
        low, high = ci_band(sub["value"]) if len(sub) > 1 else (np.nan, np.nan)
        rows.append((*key, sub["value"].mean(), low, high))
    return pd.DataFrame(rows, columns=[*keys, "mean", "low", "high"])


def _panels(bands: pd.DataFrame, *, row: str, col: str, x: str, hue_order: Sequence[str], ylabel: str,
            connect: bool) -> plt.Figure:
    """A grid of panels (``row`` × ``col``), one line of mean ± band per hue (``condition``) level.

    Drawn with plain matplotlib: seaborn's FacetGrid lays a grid of this size out several times and
    took most of a render.
    """
    rows = first_seen(bands[row])
    cols = list(dict.fromkeys(bands[col]))
    xs = list(dict.fromkeys(bands[x]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.1 * len(cols) + 1.2, 2.0 * len(rows) + 0.4),
                             squeeze=False)
    offsets = np.linspace(-0.15, 0.15, len(hue_order)) if len(hue_order) > 1 else [0.0]
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax, panel = axes[i, j], bands[(bands[row] == r) & (bands[col] == c)]
            for k, (level, dx) in enumerate(zip(hue_order, offsets)):
                line = panel[panel["condition"] == level].set_index(x).reindex(xs)
                pos = np.arange(len(xs)) + dx
                err = np.vstack([line["mean"] - line["low"], line["high"] - line["mean"]])
                ax.errorbar(pos, line["mean"], yerr=np.nan_to_num(err), fmt="o-" if connect else "o", ms=3.5,
                            lw=1, capsize=1.5, color=f"C{k}", label=level)
            ax.set_xticks(np.arange(len(xs)), xs, rotation=45 if connect else 0, fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"{r} | {c}", fontsize=8)
        axes[i, 0].set_ylabel(ylabel, fontsize=8)
    axes[0, -1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


@or_note
def plot_layer_profiles(means: pd.DataFrame, statistic: str, *, conditions: Sequence[str],
                        reduction: str = "mean") -> plt.Figure:
    """``statistic`` across layers, one panel per projection (columns) and checkpoint (rows).

    Args:
        means: per-seed means of per-example spectra (one value per seed and matrix), with
            ``checkpoint, condition, reduction, layer, projection, statistic, value``.
        statistic: e.g. ``"nuclear_norm"``. conditions: the lines, one per condition.
        reduction: ``"mean"`` or ``"sum"`` over each example's loss tokens.

    Returns:
        Points: the mean over seeds with a 95% bootstrap band.
    """
    sub = means[(means["statistic"] == statistic) & (means["reduction"] == reduction)
                & means["condition"].isin(conditions)]
    bands = _mean_bands(sub, ["checkpoint", "projection", "condition", "layer"])
    fig = _panels(bands, row="checkpoint", col="projection", x="layer", hue_order=conditions, connect=True,
                  ylabel=f"{statistic.replace('_', ' ')}")
    fig.suptitle(f"{statistic} per layer ({reduction} over loss tokens)", y=1.01)
    return fig


@or_note
def plot_spread(spreads: pd.DataFrame, statistic: str, *, conditions: Sequence[str], reduction: str = "mean",
                segment: str = "all") -> plt.Figure:
    """Cross-layer MAD (left) and MAD relative to the layer mean (right) per projection and condition.

    Args:
        spreads: cross-layer spreads per seed (:func:`analysis_lib.gradients.spread.cross_layer_mad`
            of per-seed profiles), with ``checkpoint, condition, reduction, segment, measure``.

    Returns:
        One row of panels per checkpoint; points: mean over seeds with a 95% bootstrap band.
    """
    sub = spreads[(spreads["statistic"] == statistic) & (spreads["reduction"] == reduction)
                  & (spreads["segment"] == segment) & spreads["condition"].isin(conditions)]
    bands = _mean_bands(sub, ["checkpoint", "measure", "condition", "projection"])
    return _panels(bands, row="checkpoint", col="measure", x="projection", hue_order=conditions, connect=False,
                   ylabel=f"MAD of {statistic.replace('_', ' ')}")


@or_note
def plot_score_distributions(scores: pd.DataFrame, *, ylabel: str) -> plt.Figure:
    """Per-example scores per condition, one panel per checkpoint.

    ``scores`` holds one value per example (``checkpoint, condition, value``); boxes are over all
    examples and seeds, in order of appearance.
    """
    order = first_seen(scores["condition"])
    grid = sns.catplot(data=scores, x="condition", y="value", col="checkpoint",
                       col_order=first_seen(scores["checkpoint"]), kind="box", order=order,
                       hue="condition", hue_order=order, fliersize=1.5, height=3.0, aspect=1.2, sharey=False)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("", ylabel)
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=45)
    return grid.figure


@or_note
def plot_gradient_noise(profile: pd.DataFrame, *, projections: Sequence[str] | None = None,
                        vline: float | None = None) -> plt.Figure:
    """Per-layer gradient SNR over training: one panel per projection, one line per layer or block.

    Args:
        profile: ``step, layer, snr`` (:func:`analysis_lib.gradients.noise.noise_profile`), or
            with a ``projection`` column (then ``layer`` is the block). Without one, each layer
            is split by :func:`analysis_lib.layers.layer_and_projection` (an MLP's layers all
            land in one panel, ``weight``); the whole-model row is left out.
        projections: panel order (default: order of appearance).
        vline: a step to mark with a dashed line (e.g. the end of pre-training).
    """
    if "projection" not in profile.columns:
        profile = profile[profile["layer"] != "model"]
        parts = [layer_and_projection(layer) for layer in profile["layer"]]
        profile = profile.assign(layer=[b for b, _ in parts], projection=[p for _, p in parts])
    panels = first_seen(profile["projection"], projections)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), sharey=True, squeeze=False)
    for ax, projection in zip(axes[0], panels):
        sub = profile[profile["projection"] == projection]
        sns.lineplot(data=sub, x="step", y="snr", hue="layer", ax=ax, legend=ax is axes[0][-1], lw=1.2)
        if vline is not None:
            ax.axvline(vline, color="0.4", ls="--", lw=1)
        ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
        ax.set_title(projection, fontsize=9)
        ax.set_ylabel("SNR ‖E g‖² / tr Σ")
    if len(panels):
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title=None)
    fig.tight_layout()
    return fig
