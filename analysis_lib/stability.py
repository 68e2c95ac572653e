"""Edge-of-stability summaries of runs that recorded λ_max (the ``sharpness`` probe).

Cohen, Kaur, Li, Kolter & Talwalkar (ICLR 2021), "Gradient Descent on Neural Networks Typically
Occurs at the Edge of Stability": under full-batch gradient descent with step size η, λ_max rises
("progressive sharpening") until it reaches 2/η, the largest curvature a quadratic model of the loss
can take stably, then hovers there while the loss keeps falling, non-monotonically.

The protocol is fixed before looking at results: a run *reaches* the edge at the first probed step
where λ_max ≥ ``threshold``·2/η; the *hover ratio* η·λ_max/2 is averaged over the probes in the
``window`` steps from there on; the loss is *still falling* when the train loss at the end of the
window is below its value at the crossing, and *non-monotone* when the mini-batch loss rose on at
least one step of the window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY_METRICS = ("lambda_max_0", "lambda_max_peak", "early_peak", "late_ratio", "reached",
                   "first_step", "hover_ratio", "loss_falls", "loss_increases")


def _series(run: pd.DataFrame, metric: str) -> pd.Series:
    sub = run[(run["metric"] == metric) & (run["layer"] == "model")]
    return sub.set_index("step")["value"].sort_index()


def run_stability(run: pd.DataFrame, lr: float, *, threshold: float = 0.9, window: int = 500,
                  early: int = 300) -> dict:
    """The summary of one run's tidy metrics (see module docstring); NaN where it never reached.

    Also ``early_peak``, the largest η·λ_max/2 in the first ``early`` steps (what warm-up is meant
    to keep down), and ``late_ratio``, the mean η·λ_max/2 over the last ``window`` steps.
    """
    lam, loss, batch = _series(run, "lambda_max"), _series(run, "train_loss"), _series(run, "batch_loss")
    edge = 2.0 / lr
    hit = lam[lam >= threshold * edge]
    last = lam.index.max()
    out = {"lambda_max_0": lam.iloc[0], "lambda_max_peak": lam.max() * lr / 2,
           "early_peak": lam[lam.index <= early].max() * lr / 2,
           "late_ratio": (lam[lam.index >= last - window] * lr / 2).mean(), "reached": float(len(hit) > 0),
           "first_step": np.nan, "hover_ratio": np.nan, "loss_falls": np.nan, "loss_increases": np.nan}
    if len(hit):
        start = hit.index[0]
        stop = start + window
        in_window = lam[(lam.index >= start) & (lam.index <= stop)]
        steps = batch[(batch.index > start) & (batch.index <= stop)]
        out.update(first_step=float(start), hover_ratio=float((in_window * lr / 2).mean()),
                   loss_falls=float(loss[loss.index <= stop].iloc[-1] < loss[loss.index <= start].iloc[-1]),
                   loss_increases=float((steps.diff() > 0).sum()))
    return out


def stability_table(metrics: pd.DataFrame, *, lr_column: str = "lr", threshold: float = 0.9,
                    window: int = 500, early: int = 300) -> pd.DataFrame:
    """Tidy per-run summaries: ``run_id, <conditions>, seed, layer="model", metric, value``.

    Metrics: λ_max at step 0; the peak of η·λ_max/2; whether the run reached ``threshold``·2/η;
    the first step it did; the hover ratio; whether the loss still fell over the window; how many
    steps of the window increased the mini-batch loss.
    """
    id_cols = [c for c in metrics.columns if c not in ("step", "layer", "metric", "value")]
    rows = []
    for key, run in metrics.groupby(id_cols, sort=False, dropna=False):
        ids = dict(zip(id_cols, key))
        summary = run_stability(run, float(ids[lr_column]), threshold=threshold, window=window, early=early)
        rows += [{**ids, "layer": "model", "metric": m, "value": v} for m, v in summary.items()]
    return pd.DataFrame(rows)


def share_verdict(flags: pd.Series) -> str:
    """``yes`` when every run satisfied a criterion, ``partly`` when some, ``no`` when none."""
    if len(flags) == 0:
        return "inconclusive"
    return "yes" if flags.all() else "partly" if flags.any() else "no"


def hover_verdict(hover: pd.DataFrame, lr: float, margin: float) -> dict:
    """Verdict row for "λ_max hovers at 2/η" at one learning rate from ``mean_ci`` rows indexed by lr.

    Equivalence rule fixed in advance: yes when the CI of η·λ_max/2 lies in [1 − margin, 1 + margin],
    no when it lies outside, inconclusive otherwise or when no run reached the edge.
    """
    from .verdicts import verdict_within

    row = {"claim": f"... then hovers at 2/η (η = {lr:g})", "source": "Cohen et al. 2021 (claim 7)"}
    if lr not in hover.index:
        return {**row, "measured": "no run reached the edge", "n": 0, "reproduced": "inconclusive"}
    h = hover.loc[lr]
    return {**row, "measured": f"η·λ_max/2 = {h['mean']:.3g} [{h['ci_low']:.3g}, {h['ci_high']:.3g}]",
            "n": int(h["n"]), "reproduced": verdict_within(h["ci_low"], h["ci_high"], 1 - margin, 1 + margin)}
