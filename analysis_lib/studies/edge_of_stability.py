"""Study 04, progressive sharpening and the edge of stability: the protocol, its checks and verdicts.

Claim 7 of ``docs/claims.md`` (Cohen, Kaur, Li, Kolter & Talwalkar, ICLR 2021): under full-batch
gradient descent with step size η, λ_max rises until it reaches 2/η, the largest curvature a
quadratic model of the loss can take stably, then hovers there while the loss keeps falling,
non-monotonically. The summaries read runs that recorded λ_max (the ``sharpness`` probe).

The protocol is fixed before looking at results: a run *reaches* the edge at the first probed step
where λ_max ≥ ``threshold``·2/η; the *hover ratio* η·λ_max/2 is averaged over the probes in the
``window`` steps from there on; the loss is *still falling* when the train loss at the end of the
window is below its value at the crossing, and *non-monotone* when the mini-batch loss rose on at
least one step of the window.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..stats.effects import mean_ci
from ..stats.power import band_note
from ..stats.verdicts import NOT_TESTED, share_verdict, verdict_row, verdict_within
from ..validation import check_fraction, check_includes, check_int, check_subset
from .sensitivity import decide, with_alternatives

TITLE = "Progressive sharpening and the edge of stability"
QUESTION = ("Under full-batch GD, does λ_max rise to 2/η and hover there; does SGD settle lower; does warm-up "
            "keep early curvature down?")
SOURCE = "Cohen et al. 2021 (claim 7)"
SGD_SOURCE = "Cohen et al. 2021; dynamical stability of SGD"
WARMUP_SOURCE = "Gilmer et al. 2022 (loss-curvature view of instability)"
ARMS = ("gd", "sgd", "warmup")

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


def stability_table(metrics: pd.DataFrame, learning_rates: Mapping[str, float] | pd.Series, *,
                    threshold: float = 0.9, window: int = 500, early: int = 300) -> pd.DataFrame:
    """Tidy per-run summaries: ``run_id, <conditions>, seed, layer="model", metric, value``.

    Metrics: λ_max at step 0; the peak of η·λ_max/2; whether the run reached ``threshold``·2/η;
    the first step it did; the hover ratio; whether the loss still fell over the window; how many
    steps of the window increased the mini-batch loss.

    Args:
        metrics: tidy run metrics with ``lambda_max``, ``train_loss`` and ``batch_loss``.
        learning_rates: run id -> the η the run trained with, read from its config
            (``GridResult.parameter("train.lr")``), never from a label column.
        threshold, window, early: the protocol's numbers (module docstring).
    """
    id_cols = [c for c in metrics.columns if c not in ("step", "layer", "metric", "value")]
    rows = []
    for key, run in metrics.groupby(id_cols, sort=False, dropna=False):
        ids = dict(zip(id_cols, key))
        summary = run_stability(run, float(learning_rates[ids["run_id"]]), threshold=threshold, window=window,
                                early=early)
        rows += [{**ids, "layer": "model", "metric": m, "value": v} for m, v in summary.items()]
    return pd.DataFrame(rows)


def hover_verdict(hover: pd.DataFrame, lr: float, margin: float) -> dict:
    """Verdict row for "λ_max hovers at 2/η" at one learning rate from ``mean_ci`` rows indexed by lr.

    Equivalence rule fixed in advance: yes when the CI of η·λ_max/2 lies in [1 − margin, 1 + margin],
    no when it lies outside, inconclusive otherwise or when no run reached the edge.
    """
    row = {"claim": f"... then hovers at 2/η (η = {lr:g})", "source": SOURCE,
           "rule": f"yes when the 95% CI of η·λ_max/2 lies inside [{1 - margin:g}, {1 + margin:g}], no when outside"}
    if lr not in hover.index:
        return {**row, "measured": "no run reached the edge", "n": 0, "reproduced": NOT_TESTED}
    h = hover.loc[lr]
    outcome = verdict_within(h["ci_low"], h["ci_high"], 1 - margin, 1 + margin)
    power = band_note(h["mean"], h["ci_low"], h["ci_high"], h["n"], 1 - margin, 1 + margin)
    return {**row, "measured": f"η·λ_max/2 = {h['mean']:.3g} [{h['ci_low']:.3g}, {h['ci_high']:.3g}]",
            "n": int(h["n"]), "reproduced": outcome, "power": power if outcome == "inconclusive" else ""}


def check_parameters(configs: Sequence, arms: Mapping, *, sgd_lr: float, warmup_lr: float, threshold: float,
                     margin: float, window: int, early: int, n_boot: int) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training.

    The comparisons need the arms ``gd``, ``sgd`` and ``warmup``, and ``sgd_lr`` / ``warmup_lr``
    among the learning rates of the ``gd`` arm (the baselines they are paired with).
    """
    check_includes("arms", arms, ARMS)
    check_fraction("threshold", threshold)
    check_fraction("margin", margin)
    check_int("window", window, 1)
    check_int("early", early, 1)
    check_int("n_boot", n_boot, 1)
    gd_lrs = sorted({c.train.lr for c in configs if c.label("arm") == "gd"})
    check_subset("sgd_lr", [sgd_lr], gd_lrs)
    check_subset("warmup_lr", [warmup_lr], gd_lrs)


def verdict_rows(gd: pd.DataFrame, edge: pd.DataFrame, sgd_tests: pd.DataFrame, warmup_tests: pd.DataFrame, *,
                 threshold: float, margin: float) -> list[dict]:
    """Every verdict row of the study, by the rules fixed in advance.

    Sharpening reproduces when every full-batch run reaches ``threshold``·2/η; hovering when each
    learning rate's CI of the hover ratio lies inside [1 − margin, 1 + margin] (outside: no); the
    loss claim when the loss fell over the window in every run that reached the edge; SGD and
    warm-up from the sign of the paired difference's CI (and p < 0.05).

    Args:
        gd: :func:`stability_table` rows of the full-batch runs. edge: ``mean_ci`` of those rows
            per ``lr`` and ``metric``. sgd_tests, warmup_tests: paired comparisons
            (``late_ratio`` by batch size, ``early_peak`` by warm-up).
    """
    hover = edge[edge["metric"] == "hover_ratio"].set_index("lr")
    reached = gd[gd["metric"] == "reached"]["value"]
    falls = gd[gd["metric"] == "loss_falls"]["value"].dropna()
    return ([{"claim": "Under full-batch GD, λ_max rises until it reaches 2/η", "source": SOURCE,
              "measured": f"{int(reached.sum())} of {len(reached)} runs reached {threshold}·2/η", "n": len(reached),
              "reproduced": share_verdict(reached),
              "rule": f"a run reaches the edge when λ_max exceeds {threshold:g}·2/η: yes when every run does, "
                      "partly when some do, no when none"}]
            + [hover_verdict(hover, lr, margin) for lr in sorted(gd["lr"].unique())]
            + [{"claim": "... while the loss keeps falling (non-monotonically)", "source": SOURCE,
                "measured": f"loss fell over the window in {int(falls.sum())} of {len(falls)} runs at the edge",
                "n": len(falls), "reproduced": share_verdict(falls)}]
            + [verdict_row(f"SGD settles below the edge ({row.contrast})", SGD_SOURCE, row, "Δ late η·λ_max/2",
                           "negative") for _, row in sgd_tests.iterrows()]
            + [verdict_row("Warm-up keeps early curvature lower", WARMUP_SOURCE, row, "Δ early peak η·λ_max/2",
                           "negative") for _, row in warmup_tests.iterrows()])


# The free choices of the edge-of-stability claims a fair reader could make differently: when a
# run counts as at the edge (threshold·2/η), the window its hover ratio averages over, and how
# close to 1 the hover ratio must be (margin).
ALTERNATIVES = {"threshold": (0.8, 0.95), "window": (50, 200), "margin": (0.1, 0.3)}
EDGE_METRICS = ["reached", "first_step", "hover_ratio", "loss_falls", "loss_increases"]


def edge_summary(summary: pd.DataFrame, *, n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The full-batch runs' rows of :func:`stability_table`, and their mean with a CI per learning rate."""
    gd = summary[summary["arm"] == "gd"]
    return gd, mean_ci(gd[gd["metric"].isin(EDGE_METRICS)], ["lr", "metric"], n_boot=n_boot)


def robust_verdict_rows(metrics: pd.DataFrame, learning_rates, sgd_tests: pd.DataFrame, warmup_tests: pd.DataFrame,
                        *, threshold: float, margin: float, window: int, early: int,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` under the protocol, each no / partly with its robustness, and the sensitivity table.

    Each alternative of :data:`ALTERNATIVES` re-reads the runs' metrics (no new training).
    """
    def evaluate(setting: dict) -> list[dict]:
        summary = stability_table(metrics, learning_rates, threshold=setting["threshold"], window=setting["window"],
                                  early=early)
        gd, edge = edge_summary(summary, n_boot=n_boot)
        return verdict_rows(gd, edge, sgd_tests, warmup_tests, threshold=setting["threshold"],
                            margin=setting["margin"])

    protocol = {"threshold": threshold, "window": window, "margin": margin}
    return decide(evaluate, with_alternatives(protocol, ALTERNATIVES), protocol)
