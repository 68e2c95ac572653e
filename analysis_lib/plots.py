"""Seaborn figures over tidy tables. Plotters take a DataFrame first and return a Figure.

They never compute statistics or read files: pass them the tidy metrics (``run_id, <conditions>,
seed, step, layer, metric, value``) or a test table (``stats.RESULT_COLUMNS``).
Error bands are 95% bootstrap intervals of the mean across seeds (``effects.bootstrap_ci``,
seeded, so figures repeat).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .effects import bootstrap_ci

def _mean_ci(values) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean, the same estimator as the test tables use.

    Vectorised (seaborn's own bootstrap loops in Python and dominated rendering time).
    """
    return bootstrap_ci(np.asarray(values, dtype=np.float64), n_boot=1000, ci=0.95, seed=0)


_ERRORBAR = _mean_ci
_BOOT: dict = {}


def _layers(df: pd.DataFrame, layers: Sequence[str] | None) -> list[str]:
    """Layers in the order they first appear (forward order), without the whole-model row."""
    order = list(dict.fromkeys(df["layer"]))
    return [l for l in order if l != "model"] if layers is None else list(layers)


def _require(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    sub = df[df["metric"] == metric]
    if sub.empty:
        raise ValueError(f"no rows with metric={metric!r}; available: {sorted(df['metric'].unique())}")
    return sub


def plot_metric_over_training(df: pd.DataFrame, metric: str, *, hue: str, layers: Sequence[str] | None = None,
                              row: str | None = None, logy: bool = False, col_wrap: int = 4) -> plt.Figure:
    """``metric`` against step, one panel per layer, one line per ``hue`` level (mean, 95% CI over seeds)."""
    sub = _require(df, metric)
    order = _layers(sub, layers) if layers is not None or (sub["layer"] != "model").any() else ["model"]
    sub = sub[sub["layer"].isin(order)]
    grid = sns.relplot(data=sub, x="step", y="value", hue=hue, col="layer", col_order=order, row=row,
                       kind="line", errorbar=_ERRORBAR, col_wrap=None if row else min(col_wrap, len(order)),
                       height=2.6, aspect=1.2, facet_kws={"sharey": False}, **_BOOT)
    if logy:
        grid.set(yscale="log")
    grid.set_axis_labels("step", metric)
    grid.figure.suptitle(f"{metric} per layer over training", y=1.02)
    return grid.figure


def plot_layer_profile(df: pd.DataFrame, metrics: str | Sequence[str], *, hue: str,
                       logy: bool = False) -> plt.Figure:
    """Metrics across layers (x in forward order), one panel per metric, one line per ``hue`` level.

    Points are means over seeds with 95% CIs; pass one step per run (e.g. ``final_values``).
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    sub = pd.concat([_require(df, m) for m in metrics])
    order = _layers(sub, None)
    sub = sub[sub["layer"].isin(order)]
    grid = sns.catplot(data=sub, x="layer", y="value", hue=hue, col="metric", col_order=metrics,
                       kind="point", order=order, errorbar=_ERRORBAR, dodge=0.3, height=3.0,
                       aspect=1.2, sharey=False, **_BOOT)
    if logy:
        grid.set(yscale="log")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("layer", "")
    return grid.figure


def plot_run_values(df: pd.DataFrame, *, x: str, hue: str | None = None, col: str | None = None,
                    ylabel: str = "", band: tuple[float, float] | None = None) -> plt.Figure:
    """One dot per run (``value`` column) by condition ``x``, with the mean and its 95% CI.

    ``band`` shades a reference interval, e.g. an equivalence margin fixed in advance.
    """
    grid = sns.catplot(data=df, x=x, y="value", hue=hue, col=col, kind="strip", alpha=0.6,
                       height=3.0, aspect=1.1, dodge=hue is not None)
    grid.map_dataframe(sns.pointplot, x=x, y="value", hue=hue, errorbar=_ERRORBAR,
                       dodge=0.4 if hue else False, linestyle="none", markers="D",
                       palette="dark" if hue else None, color=None if hue else "k", **_BOOT)
    if band is not None:
        for ax in grid.axes.flat:
            ax.axhspan(*band, color="0.85", zorder=0)
    grid.set_axis_labels(x, ylabel)
    return grid.figure


def plot_effect_sizes(tests: pd.DataFrame, *, alpha: float = 0.05, col: str = "metric",
                      row: str | None = None) -> plt.Figure:
    """Estimates with CIs per layer, one panel per ``col`` level; filled markers where p_adj < alpha."""
    tests = tests.assign(significant=np.where(tests["p_adj"] < alpha, f"p_adj < {alpha}", "n.s."))
    cols = list(dict.fromkeys(tests[col]))
    rows = list(dict.fromkeys(tests[row])) if row else [None]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 0.35 * tests["layer"].nunique() * len(rows) + 1.6),
                             squeeze=False)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            sub = tests[(tests[col] == c) & ((tests[row] == r) if row else True)]
            _effect_panel(axes[i, j], sub, f"{c}" + (f" | {r}" if row else ""))
    fig.tight_layout()
    return fig


def _effect_panel(ax: plt.Axes, sub: pd.DataFrame, title: str) -> None:
    summary_rows = sub["layer"].isin(["model", "across layers"])
    sub = pd.concat([sub[~summary_rows], sub[summary_rows]])  # layers in forward order, model last
    y = np.arange(len(sub))
    err = np.vstack([sub["estimate"] - sub["ci_low"], sub["ci_high"] - sub["estimate"]])
    sig = (sub["significant"] != "n.s.").to_numpy()
    ax.errorbar(sub["estimate"], y, xerr=err, fmt="none", ecolor="0.4", capsize=2)
    ax.scatter(sub["estimate"][sig], y[sig], color="C3", zorder=3, label="p_adj < α")
    ax.scatter(sub["estimate"][~sig], y[~sig], facecolor="white", edgecolor="C0", zorder=3, label="n.s.")
    ax.axvline(0, color="0.6", lw=0.8, ls="--")
    ax.set_yticks(y, sub["layer"])
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(str(sub["contrast"].iloc[0]) if len(sub) else "")


def plot_correlation(df: pd.DataFrame, x: str, y: str, *, hue: str | None = None,
                     style: str | None = None) -> plt.Figure:
    """Scatter of one row per run, e.g. final layer rotation against test accuracy."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    sns.scatterplot(data=df, x=x, y=y, hue=hue, style=style, ax=ax)
    if hue or style:
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def format_test_table(tests: pd.DataFrame, *, digits: int = 3, alpha: float = 0.05):
    """A Styler of a test table: significant digits, p-values in scientific form, significant rows bold."""
    fmt = {c: f"{{:.{digits}g}}" for c in ("estimate", "ci_low", "ci_high", "effect_size", "statistic")}
    fmt.update({"pvalue": "{:.2e}", "p_adj": "{:.2e}"})
    bold = lambda row: ["font-weight: bold" if row["p_adj"] < alpha else "" for _ in row]  # noqa: E731
    # escape="html": condition names come from parameters and must render as text.
    return tests.style.format(fmt, na_rep="–", escape="html").apply(bold, axis=1).hide(axis="index")


def plot_sharpness(df: pd.DataFrame, *, col: str = "lr", hue: str = "seed", metric: str = "lambda_max",
                   lr: float | None = None, logy: bool = False) -> plt.Figure:
    """λ_max (or another whole-model metric) over training, one line per seed, one panel per ``col``.

    Each panel carries the stability edge 2/η as a dashed line: η is the panel's value when
    ``col`` is the learning rate, else ``lr`` when given.
    """
    sub = _require(df, metric)
    sub = sub[sub["layer"] == "model"]
    grid = sns.relplot(data=sub, x="step", y="value", hue=hue, col=col, kind="line", estimator=None,
                       units=hue, height=2.8, aspect=1.2, facet_kws={"sharey": False}, palette="crest",
                       legend=False)
    for value, ax in grid.axes_dict.items():
        eta = float(value) if col == "lr" else lr
        if eta and metric == "lambda_max":
            ax.axhline(2.0 / eta, color="C3", ls="--", lw=1, label="2/η")
            ax.legend(loc="lower right", fontsize=8)
    if logy:
        grid.set(yscale="log")
    grid.set_axis_labels("step", metric)
    return grid.figure


def plot_top_eigenvalues(spectra: pd.DataFrame, *, col: str, hue: str | None = None, top: int = 25) -> plt.Figure:
    """The ``top`` largest eigenvalues of each run's final spectrum against their rank (log scale).

    Outliers show as the points above the knee where the curve drops into the bulk.
    """
    last = spectra[spectra["step"] == spectra.groupby("run_id")["step"].transform("max")]
    ranked = (last.sort_values("eigenvalue", ascending=False).groupby("run_id", sort=False).head(top)
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


def plot_spectral_density(density: pd.DataFrame, *, col: str, hue: str) -> plt.Figure:
    """Spectral densities (from ``spectrum.density_table``) on a symmetric-log eigenvalue axis."""
    grid = sns.relplot(data=density, x="eigenvalue", y="density", hue=hue, col=col, units="run_id",
                       estimator=None, kind="line", alpha=0.5, height=2.8, aspect=1.2,
                       facet_kws={"sharey": False, "sharex": False}, palette="flare")
    grid.set(yscale="log")
    linthresh = max(1e-3, float(density["eigenvalue"].abs().quantile(0.5)))
    top = float(density["density"].quantile(0.99)) * 3  # the spike at 0 would flatten everything else
    for ax in grid.axes.flat:
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_ylim(top * 1e-6, top)
    return grid.figure
