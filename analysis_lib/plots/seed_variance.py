"""Figures of run-to-run variance: how often each test example is classified correctly across runs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import or_note


@or_note
def plot_correctness_rates(rates: pd.DataFrame, *, n_runs: int) -> plt.Figure:
    """Histogram over test examples of the fraction of runs that classify each correctly.

    Args:
        rates: one row per example with a ``rate`` column in [0, 1].
        n_runs: how many runs the rates average (one bar per possible value).
    """
    fig, ax = plt.subplots(figsize=(5, 3.2))
    edges = (np.arange(n_runs + 2) - 0.5) / n_runs
    ax.hist(rates["rate"], bins=edges, color="C0", edgecolor="white")
    ax.set_yscale("log")
    ax.set_xlabel(f"fraction of the {n_runs} runs that classify the example correctly")
    ax.set_ylabel("test examples")
    fig.tight_layout()
    return fig
