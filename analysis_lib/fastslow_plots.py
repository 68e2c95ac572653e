"""Figures of the fast-vs-slow-thinking study.

Like :mod:`analysis_lib.plots`, plotters take a tidy DataFrame first, return a Figure, and never
compute statistics beyond a mean and its bootstrap band, or read files. Inputs come from
:mod:`analysis_lib.fastslow` and :mod:`analysis_lib.fastslow_stats`.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .effects import bootstrap_ci
from .fastslow import CHECKPOINTS, CONDITIONS
from .transformer import PROJECTIONS


def _band(values) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean over seeds (seeded: figures repeat)."""
    return bootstrap_ci(np.asarray(values, dtype=np.float64), n_boot=1000, ci=0.95, seed=0)


def _present(values: Sequence[str], order: Sequence[str]) -> list[str]:
    return [v for v in order if v in set(values)]


def _mean_bands(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean of ``value`` per group with its 95% bootstrap band (``mean, low, high``), groups in data order."""
    rows = []
    for key, sub in df.groupby(keys, sort=False):
        low, high = _band(sub["value"]) if len(sub) > 1 else (np.nan, np.nan)
        rows.append((*key, sub["value"].mean(), low, high))
    return pd.DataFrame(rows, columns=[*keys, "mean", "low", "high"])


def _panels(bands: pd.DataFrame, *, row: str, col: str, x: str, hue_order: Sequence[str], ylabel: str,
            connect: bool) -> plt.Figure:
    """A grid of panels (``row`` × ``col``), one line of mean ± band per hue (``condition``) level.

    Drawn with plain matplotlib: seaborn's FacetGrid lays a grid of this size out several times and
    took most of a render.
    """
    rows = _present(bands[row], CHECKPOINTS)
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


def plot_layer_profiles(means: pd.DataFrame, statistic: str, *, conditions: Sequence[str],
                        reduction: str = "mean") -> plt.Figure:
    """``statistic`` across layers, one panel per projection (columns) and checkpoint (rows).

    Args:
        means: :func:`~analysis_lib.fastslow_stats.seed_means` (one value per seed and matrix).
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


def plot_spread(spreads: pd.DataFrame, statistic: str, *, conditions: Sequence[str], reduction: str = "mean",
                segment: str = "all") -> plt.Figure:
    """Cross-layer MAD (left) and MAD relative to the layer mean (right) per projection and condition.

    Args:
        spreads: :func:`~analysis_lib.fastslow_stats.spread_table`.

    Returns:
        One row of panels per checkpoint; points: mean over seeds with a 95% bootstrap band.
    """
    sub = spreads[(spreads["statistic"] == statistic) & (spreads["reduction"] == reduction)
                  & (spreads["segment"] == segment) & spreads["condition"].isin(conditions)]
    bands = _mean_bands(sub, ["checkpoint", "measure", "condition", "projection"])
    return _panels(bands, row="checkpoint", col="measure", x="projection", hue_order=conditions, connect=False,
                   ylabel=f"MAD of {statistic.replace('_', ' ')}")


def plot_score_distributions(scores: pd.DataFrame, *, ylabel: str) -> plt.Figure:
    """Per-example scores (:func:`~analysis_lib.fastslow_stats.example_scores`) per condition, one
    panel per checkpoint; boxes over all problems and seeds."""
    order = _present(scores["condition"], CONDITIONS)
    grid = sns.catplot(data=scores, x="condition", y="value", col="checkpoint",
                       col_order=_present(scores["checkpoint"], CHECKPOINTS), kind="box", order=order,
                       hue="condition", hue_order=order, fliersize=1.5, height=3.0, aspect=1.2, sharey=False)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("", ylabel)
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=45)
    return grid.figure


def plot_accuracy_over_training(metrics: pd.DataFrame, *, pretrain_steps: int) -> plt.Figure:
    """Held-out whole-response exact match per format over training (one thin line per seed, the mean
    bold); the dashed line marks the end of pre-training (base), the last step is the tuned model."""
    sub = metrics[metrics["metric"].isin(["test_seq_acc_fast", "test_seq_acc_slow"])]
    sub = sub.assign(format=sub["metric"].str.removeprefix("test_seq_acc_"))
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.lineplot(data=sub, x="step", y="value", hue="format", units="seed", estimator=None, lw=0.7, alpha=0.5,
                 ax=ax, legend=False)
    sns.lineplot(data=sub, x="step", y="value", hue="format", errorbar=None, lw=2, ax=ax)
    ax.axvline(pretrain_steps, color="0.4", ls="--", lw=1)
    ax.text(pretrain_steps, 0.02, " fine-tuning →", fontsize=8, color="0.3")
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    return fig


def plot_interval_table(table: pd.DataFrame, *, null: float, xlabel: str) -> plt.Figure:
    """Estimates with CIs of a result table (AUROCs, effect sizes): one row per contrast, one panel
    per metric; the dotted line marks ``null`` (0.5 for an AUROC, 0 for an effect size)."""
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.35 * table["contrast"].nunique() + 1.4),
                             squeeze=False, sharey=True)
    for ax, metric in zip(axes[0], metrics):
        sub = table[table["metric"] == metric]
        y = np.arange(len(sub))
        err = np.vstack([sub["estimate"] - sub["ci_low"], sub["ci_high"] - sub["estimate"]])
        ax.errorbar(sub["estimate"], y, xerr=err, fmt="o", color="C0", ecolor="0.4", capsize=2)
        ax.axvline(null, color="0.6", lw=0.8, ls=":")
        ax.set_yticks(y, sub["contrast"], fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0, 0].invert_yaxis()  # first contrast on top; the axes share y
    fig.tight_layout()
    return fig


def plot_gradient_noise(profile: pd.DataFrame, *, pretrain_steps: int) -> plt.Figure:
    """Per-layer gradient SNR over training (from :func:`fastslow_stats.noise_profile`): one panel
    per projection, one line per block; the dashed line marks the end of pre-training."""
    projections = _present(profile["projection"], PROJECTIONS)
    fig, axes = plt.subplots(1, len(projections), figsize=(2.6 * len(projections), 3.0), sharey=True,
                             squeeze=False)
    for ax, projection in zip(axes[0], projections):
        sub = profile[profile["projection"] == projection]
        sns.lineplot(data=sub, x="step", y="snr", hue="layer", ax=ax, legend=ax is axes[0][-1], lw=1.2)
        ax.axvline(pretrain_steps, color="0.4", ls="--", lw=1)
        ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
        ax.set_title(projection, fontsize=9)
        ax.set_ylabel("SNR ‖E g‖² / tr Σ")
    if len(projections):
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title=None)
    fig.tight_layout()
    return fig
