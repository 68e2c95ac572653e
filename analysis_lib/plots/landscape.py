"""Figures of loss landscapes over tidy surface tables (:data:`analysis_lib.landscape.surfaces.SURFACE_COLUMNS`).

Plotters take a DataFrame first, return a Figure, and never compute statistics beyond the mean
and its bootstrap band (:func:`~.style.ci_band`) or read files. Contour maps put α
(direction 1) on the x axis and β (direction 2) on the y axis, read from each row's own
``alpha``/``beta`` (never from the position in an array), and mark the centre θ₀.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import axis_label, ci_band, or_note

KINDS = ("contour", "filled", "3d")


def _grid(surface: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alphas (A,), betas (B,), values (B, A)) of one surface; raises if it is not one grid."""
    if surface.duplicated(["alpha", "beta"]).any():
        raise ValueError("the frame holds several surfaces at the same (alpha, beta): select one "
                         "run, direction seed, split and metric per panel")
    table = surface.pivot(index="beta", columns="alpha", values="value")
    return table.columns.to_numpy(), table.index.to_numpy(), table.to_numpy()


def _panel(ax, surface: pd.DataFrame, kind: str, levels: np.ndarray, title: str):
    a, b, z = _grid(surface)
    A, B = np.meshgrid(a, b)  # (B, A): x = alpha varies along columns
    if kind == "3d":
        art = ax.plot_surface(A, B, np.minimum(z, levels[-1]), cmap="viridis", vmin=levels[0],
                              vmax=levels[-1], linewidth=0, antialiased=True)
        ax.set_zlabel("loss")
    elif kind == "filled":
        art = ax.contourf(A, B, z, levels=levels, cmap="viridis", extend="max")
    else:
        art = ax.contour(A, B, z, levels=levels, cmap="viridis", linewidths=0.9)
        ax.clabel(art, levels[::4], fontsize=6, fmt="%.2g")
    if kind != "3d":
        ax.plot([0], [0], marker="*", color="C3", markersize=11, markeredgecolor="k", zorder=5)
        ax.set_aspect("equal", adjustable="box")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    return art


@or_note
def plot_surface_maps(surfaces: pd.DataFrame, *, col: str | None = None, metric: str = "loss",
                      kind: str = "contour", levels: int = 25, vmax: float | None = None,
                      log_levels: bool = False, loss_unit: str | None = None) -> plt.Figure:
    """Contour (``"contour"``), filled-contour (``"filled"``) or 3-D (``"3d"``) maps of 2-D surfaces.

    Args:
        surfaces: tidy surface rows of one surface per panel (one run, direction seed and split).
        col: column whose levels give one panel each (e.g. a condition); None for one panel.
        metric: ``"loss"`` or ``"acc"``.
        kind: one of :data:`KINDS`.
        levels: number of contour levels, shared by every panel so panels compare.
        vmax: top level (default: the 90th percentile over all panels, so a blown-up corner does
            not flatten the basin).
        log_levels: space the levels geometrically (for panels whose losses differ by orders of
            magnitude, e.g. a well-trained and a poorly trained network).
        loss_unit: unit of the loss for the colour bar (``LossSpec.unit``, e.g. nats).

    Returns:
        The figure; the star marks the centre (α, β) = (0, 0).
    """
    if kind not in KINDS:
        raise ValueError(f"invalid argument kind={kind!r}: must be one of {KINDS}")
    sub = surfaces[surfaces["metric"] == metric]
    if sub.empty:
        raise ValueError(f"no rows with metric={metric!r}")
    panels = list(dict.fromkeys(sub[col])) if col else [None]
    top = float(np.quantile(sub["value"], 0.9)) if vmax is None else vmax
    low = float(sub["value"].min())
    grid_levels = np.geomspace(max(low, 1e-3), top, levels) if log_levels else np.linspace(low, top, levels)
    fig = plt.figure(figsize=(3.4 * len(panels) + 0.8, 3.3), layout="constrained")
    art = None
    for i, value in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d" if kind == "3d" else None)
        one = sub if col is None else sub[sub[col] == value]
        title = "" if col is None else f"{col} = {value}"
        lo, hi = float(one["value"].min()), float(one["value"].max())
        panel_levels, shared = grid_levels, True
        inside = ((grid_levels >= lo) & (grid_levels <= hi)).sum()
        if len(panels) > 1 and inside <= 1:  # the shared levels would leave this panel blank
            own_top = float(np.quantile(one["value"], 0.9))
            if own_top > lo:
                panel_levels, shared = np.linspace(lo, own_top, levels), False
                title += f"\n(own levels {lo:.3g}–{own_top:.3g}: off the shared scale)"
            else:
                title += f"\n(flat: every point {lo:.3g})"
        drawn = _panel(ax, one, kind, panel_levels, title)
        art = drawn if shared or art is None else art  # the colour bar shows the shared levels
    label = axis_label(metric, loss_unit) + (", log-spaced levels" if log_levels else "")
    fig.colorbar(art, ax=fig.axes, shrink=0.8, label=label)
    return fig


@or_note
def plot_slices(surfaces: pd.DataFrame, *, hue: str | None = None, col: str | None = None,
                row: str | None = None, metric: str = "loss", logy: bool = False,
                loss_unit: str | None = None) -> plt.Figure:
    """1-D slices L(α) (β = 0 rows): the mean over directions and runs with a 95% bootstrap band.

    Args:
        surfaces: tidy surface rows; every row with β = 0 and ``metric`` is used.
        hue, col, row: columns for line colour and panels (e.g. a condition, the split).
        metric: ``"loss"`` or ``"acc"``.
        logy: log-scaled y axis. loss_unit: unit of the loss axis (``LossSpec.unit``, e.g. nats).
    """
    sub = surfaces[(surfaces["metric"] == metric) & (surfaces["beta"] == 0)]
    if sub.empty:
        raise ValueError(f"no slice rows with metric={metric!r} and beta == 0")
    sub = _categorical(sub, hue)
    grid = sns.relplot(data=sub, x="alpha", y="value", hue=hue, col=col, row=row, kind="line",
                       errorbar=ci_band, height=2.8, aspect=1.2, palette="colorblind" if hue else None,
                       facet_kws={"sharey": False, "sharex": False,  # radii differ per normalisation
                                  "margin_titles": row is not None})
    for ax in grid.axes.flat:
        ax.axvline(0, color="0.6", lw=0.8, ls=":")
    if logy:
        grid.set(yscale="log")
    grid.set_axis_labels("α, step along the direction", axis_label(metric, loss_unit))
    return grid.figure


def _categorical(df: pd.DataFrame, hue: str | None) -> pd.DataFrame:
    """``hue`` as strings, so numeric levels (batch sizes) get distinct qualitative colours."""
    return df if hue is None else df.assign(**{hue: df[hue].astype(str)})


@or_note
def plot_interpolation(curves: pd.DataFrame, *, x: str = "alpha", hue: str | None = None,
                       col: str | None = None, metric: str | None = "loss",
                       ylabel: str | None = None, loss_unit: str | None = None) -> plt.Figure:
    """Loss (or another metric) along a path against ``x``, the mean over replicates with a 95% band.

    Args:
        curves: tidy rows with ``x``, ``value`` and, when ``metric`` is given, ``metric``; rows
            sharing ``x``, hue and col are replicates (e.g. pairs of runs), averaged with a band.
        x: the path coordinate (α = 0 at one end point, 1 at the other).
        hue, col: columns for line colour and panels.
        metric: keep only rows of this metric (None: use every row).
        ylabel: y-axis label (default the metric in words, with ``loss_unit`` for a loss).
    """
    sub = curves if metric is None else curves[curves["metric"] == metric]
    if sub.empty:
        raise ValueError(f"no rows with metric={metric!r}")
    grid = sns.relplot(data=_categorical(sub, hue), x=x, y="value", hue=hue, col=col, kind="line",
                       errorbar=ci_band, marker="o", markersize=3, height=2.8, aspect=1.3,
                       palette="colorblind" if hue else None, facet_kws={"sharey": False})
    for ax in grid.axes.flat:
        for end in (0.0, 1.0):
            ax.axvline(end, color="0.7", lw=0.8, ls=":")
    grid.set_axis_labels(x, ylabel or (axis_label(metric, loss_unit) if metric else "value"))
    return grid.figure


@or_note
def plot_summary_values(table: pd.DataFrame, *, x: str, hue: str | None = None, col: str = "normalization",
                        metric: str = "curvature", ylabel: str | None = None) -> plt.Figure:
    """One dot per run (its summary averaged over directions) by condition ``x``, with mean and 95% CI.

    One panel per ``col`` with its own y axis.

    Args:
        table: rows with ``metric``, ``value``, ``x``, ``hue`` and ``col`` (e.g. from
            ``landscape.slices.summary_table`` with ``mean`` renamed to ``value``).
    """
    sub = table[table["metric"] == metric]
    if sub.empty:
        raise ValueError(f"no rows with metric={metric!r}")
    sub = _categorical(sub, hue)
    grid = sns.catplot(data=sub, x=x, y="value", hue=hue, col=col, kind="strip", alpha=0.6, dodge=hue is not None,
                       height=3.0, aspect=1.0, sharey=False, palette="colorblind" if hue else None)
    grid.map_dataframe(sns.pointplot, x=x, y="value", hue=hue, errorbar=ci_band, dodge=0.4 if hue else False,
                       linestyle="none", markers="D", palette="dark" if hue else None, color=None if hue else "k")
    grid.set_axis_labels(x, ylabel or f"{metric} (mean over directions)")
    return grid.figure
