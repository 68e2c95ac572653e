"""Figures of training instabilities: capped-loss curves over learning rates, divergence survival, block spread.

Inputs are the tables of :mod:`analysis_lib.stats.lr_sensitivity` (``capped_loss_curves``),
:mod:`analysis_lib.stats.survival` (``kaplan_meier``) and a per-run, per-probe ratio table
(``run_id, seed, step, ratio``); intervals are drawn as given (95%), never recomputed here.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import NoData, ci_band, first_seen, or_note


@or_note
def plot_capped_loss_curves(curves: pd.DataFrame, *, loss_unit: str | None = None) -> plt.Figure:
    """Seed-mean final loss capped at L_0 against the learning rate (log x), one line per arm, with its CI."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for arm in first_seen(curves["arm"]):
        sub = curves[curves["arm"] == arm].sort_values("lr")
        ax.plot(sub["lr"], sub["capped_loss"], marker="o", label=arm)
        ax.fill_between(sub["lr"], sub["ci_low"], sub["ci_high"], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel(f"final loss, capped at L_0{f' ({loss_unit})' if loss_unit else ''}")
    ax.set_title("Learning-rate sensitivity: min(L(η), L_0) per arm")
    ax.legend(fontsize=8)
    return fig


@or_note
def plot_survival(km: pd.DataFrame) -> plt.Figure:
    """Kaplan–Meier curves of "not yet diverged" per arm (steps), with their pointwise intervals."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for arm in first_seen(km["arm"]):
        sub = km[km["arm"] == arm].sort_values("step")
        line, = ax.step(sub["step"], sub["survival"], where="post", label=arm)
        ax.fill_between(sub["step"], sub["ci_low"], sub["ci_high"], step="post", alpha=0.15, color=line.get_color())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of runs not diverged")
    ax.set_title("Divergence survival (Kaplan–Meier), all learning rates")
    ax.legend(fontsize=8)
    return fig


@or_note
def plot_ratio_over_training(spread: pd.DataFrame, *, ylabel: str, factor: float | None = None) -> plt.Figure:
    """A per-run ratio against step (log y): thin lines per seed, the mean of log10 with a 95% band over seeds."""
    data = spread.dropna(subset=["ratio"])
    if data.empty:
        raise NoData("no finite ratio to draw")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for _, run in data.groupby("run_id"):
        run = run.sort_values("step")
        ax.plot(run["step"], run["ratio"], color="grey", lw=0.7, alpha=0.6)
    rows = []
    for step, sub in data.groupby("step"):
        logs = np.log10(sub["ratio"].to_numpy(np.float64))
        low, high = ci_band(logs) if len(logs) > 1 else (np.nan, np.nan)
        rows.append((step, logs.mean(), low, high))
    steps, mean, low, high = map(np.array, zip(*rows))
    ax.plot(steps, 10 ** mean, color="C0", lw=2, label="geometric mean over seeds")
    ax.fill_between(steps, 10 ** low, 10 ** high, color="C0", alpha=0.2)
    if factor is not None:
        ax.axhline(factor, ls="--", color="k", lw=1, label=f"factor {factor:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig
