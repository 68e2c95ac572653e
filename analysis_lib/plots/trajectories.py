"""Figures of weight trajectories: explained variance of their PCA and their path in the PC plane.

How a trajectory spreads over its principal components (against the random-walk reference), and
its path in the plane of its first two.

Plotters take a tidy DataFrame first, return a Figure, and never compute statistics beyond a mean
and its bootstrap band (:func:`~.style.ci_band`), or read files.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import ci_band, or_note


@or_note
def plot_explained_variance(table: pd.DataFrame, *, col: str = "from_step") -> plt.Figure:
    """Explained-variance ratio against component (log scale), measured vs the random walk.

    Args:
        table: :data:`analysis_lib.trajectories.pca.PCA_COLUMNS` rows (one set per run).
        col: one panel per level (default the analysed window).

    Returns:
        Points: the mean over runs with a 95% band; dashed: the random walk observed at the same
        steps; dotted: its limit 6/(π²k²).
    """
    grid = sns.relplot(data=table, x="component", y="ratio", col=col, kind="line", marker="o",
                       errorbar=ci_band, height=3.0, aspect=1.1, label="trajectories")
    for value, ax in grid.axes_dict.items():
        sub = table[table[col] == value].groupby("component")[["random_walk", "asymptotic"]].mean()
        ax.plot(sub.index, sub["random_walk"], "k--", lw=1, label="random walk, same steps")
        ax.plot(sub.index, sub["asymptotic"], ":", color="0.5", lw=1, label="6/(π²k²)")
        ax.set_title(f"{col} = {value}" if col == "from_step" else str(value), fontsize=9)
        ax.set_xticks(sub.index)
    grid.set(yscale="log")
    grid.set_axis_labels("principal component k", "explained-variance ratio")
    grid.axes.flat[0].legend(fontsize=7, loc="lower left")
    return grid.figure


@or_note
def plot_trajectory_projections(projections: pd.DataFrame, *, max_runs: int = 4) -> plt.Figure:
    """Each run's trajectory in the plane of its own first two principal components.

    Args:
        projections: :data:`analysis_lib.trajectories.pca.PROJECTION_COLUMNS` rows with components 1 and 2.
        max_runs: panels drawn (the first runs in table order).
    """
    runs = list(dict.fromkeys(projections["run_id"]))[:max_runs]
    fig, axes = plt.subplots(1, len(runs), figsize=(2.9 * len(runs) + 0.8, 2.8), squeeze=False,
                             layout="constrained")
    for ax, rid in zip(axes[0], runs):
        wide = projections[projections["run_id"] == rid].pivot(index="step", columns="component", values="value")
        ax.plot(wide[1], wide[2], color="0.6", lw=0.8, zorder=1)
        points = ax.scatter(wide[1], wide[2], c=wide.index, cmap="viridis", s=12, zorder=2)
        ax.set_title(f"run {rid[:8]}", fontsize=9)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    fig.colorbar(points, ax=axes[0].tolist(), shrink=0.8, label="step")
    return fig
