"""Figures of test tables (:data:`analysis_lib.stats.results.RESULT_COLUMNS`): estimates with CIs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import or_note


@or_note
def plot_effect_sizes(tests: pd.DataFrame, *, alpha: float = 0.05, col: str = "metric",
                      row: str | None = None) -> plt.Figure:
    """Estimates with CIs per layer, one panel per ``col`` level; filled markers where p_adj < alpha."""
    tests = tests.assign(significant=np.where(tests["p_adj"] < alpha, f"p_adj < {alpha}", "n.s."))
    cols = list(dict.fromkeys(tests[col]))
    rows = list(dict.fromkeys(tests[row])) if row else [None]
    height = 0.35 * tests["layer"].nunique() * len(rows) + 1.6
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), height), squeeze=False)
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


@or_note
def plot_interval_table(table: pd.DataFrame, *, null: float, xlabel: str) -> plt.Figure:
    """Estimates with CIs of a result table (AUROCs, effect sizes), one panel per metric.

    One row per contrast; the dotted line marks ``null`` (0.5 for an AUROC, 0 for an effect size).
    """
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


# Colours of categorical outcomes (those of the published reports' tables).
OUTCOME_COLOURS = {"yes": "#9be3ae", "no": "#f4a3a3", "partly": "#f8e08e", "inconclusive": "#d0d0d0",
                   "not tested": "#ffffff"}


@or_note
def plot_outcome_grid(table: pd.DataFrame, *, row: str = "claim", setting: tuple[str, str] = ("choice", "value"),
                      outcome: str = "reproduced", wrap: int = 60) -> plt.Figure:
    """A grid of categorical outcomes: one line per ``row``, one column per setting, coloured cells.

    Args:
        table: tidy rows (e.g. :func:`analysis_lib.studies.sensitivity.sensitivity_table`).
        row: the column of the lines. setting: the columns naming a setting, joined as
            ``"choice = value"`` (columns in order of appearance). outcome: the cells' text.
        wrap: characters per line of a row label.
    """
    import textwrap

    labels = table[list(setting)].astype(str).agg(" = ".join, axis=1)
    wide = table.assign(_setting=labels).pivot_table(index=row, columns="_setting", values=outcome, aggfunc="first",
                                                     sort=False)
    wide = wide.reindex(index=list(dict.fromkeys(table[row])), columns=list(dict.fromkeys(labels)))
    fig, ax = plt.subplots(figsize=(1.15 * wide.shape[1] + 4.5, 0.45 * wide.shape[0] + 1.6))
    for i, (_, line) in enumerate(wide.iterrows()):
        for j, value in enumerate(line):
            text = "" if pd.isna(value) else str(value)
            ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=OUTCOME_COLOURS.get(text, "#ffffff"), edgecolor="0.7"))
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, wide.shape[1])
    ax.set_ylim(wide.shape[0], 0)
    ax.set_xticks(np.arange(wide.shape[1]) + 0.5, [textwrap.fill(c, 16) for c in wide.columns], fontsize=7)
    ax.set_yticks(np.arange(wide.shape[0]) + 0.5, [textwrap.fill(str(r), wrap) for r in wide.index], fontsize=7)
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    fig.tight_layout()
    return fig
