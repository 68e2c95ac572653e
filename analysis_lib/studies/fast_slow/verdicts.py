"""Verdict rows of study 02, fast vs slow thinking (claims 1 and 2 of ``docs/claims.md``).

Each row is read off a confidence interval (:mod:`analysis_lib.stats.verdicts`): paired t-tests over
seeds need the CI on the claimed side of zero and p < 0.05; AUROC and effect-size rows need the
two-level bootstrap CI on the claimed side of 0.5 or 0. Rows about the initialised model are the
format-length baseline: an effect already present there is not learned.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...stats.power import power_note
from ...stats.verdicts import NOT_TESTED, verdict_from_interval, verdict_row
from .contrasts import find

CLAIM1 = "Li et al. 2024, fast vs slow thinking (claim 1)"
CLAIM2 = "Li et al. 2025, data quality (claim 2)"


def _ratio(row: pd.Series) -> str:
    """A log-scale contrast as a ratio: ``×1.8 [1.5, 2.1], p = 0.01``."""
    p = row["p_adj"]
    return (f"×{math.exp(row['estimate']):.3g} [{math.exp(row['ci_low']):.3g}, {math.exp(row['ci_high']):.3g}], "
            f"p = {p:.2g}")


def _missing(claim: str, source: str, what: str) -> dict:
    return {"claim": claim, "source": source, "measured": f"no comparable {what}", "n": 0,
            "reproduced": NOT_TESTED}


def _ratio_row(claim: str, source: str, row: pd.Series | None, name: str, extra: str = "",
               expected: str = "positive") -> dict:
    """A verdict row for a log-scale paired contrast, its measure given as a ratio."""
    if row is None or not np.isfinite(row["estimate"]):
        return _missing(claim, source, "models")
    out = verdict_row(claim, source, row, name, expected)
    out["measured"] = f"{name} {_ratio(row)}{extra}"
    return out


def _matrix_count(matrix: pd.DataFrame, checkpoint: str, reduction: str) -> str:
    """``"; 20 of 24 matrices larger (Holm)"`` from the per-matrix fast − slow tests."""
    sub = matrix[matrix["contrast"].str.startswith("fast - slow")
                 & matrix["contrast"].str.endswith(f"checkpoint={checkpoint}, reduction={reduction}]")]
    if sub.empty:
        return ""
    larger = ((sub["ci_low"] > 0) & (sub["p_adj"] < 0.05)).sum()
    smaller = ((sub["ci_high"] < 0) & (sub["p_adj"] < 0.05)).sum()
    return f"; per matrix: {larger} of {len(sub)} larger, {smaller} smaller (Holm, p < 0.05)"


def _interval_row(claim: str, source: str, row: pd.Series | None, name: str, null: float,
                  expected: str = "positive") -> dict:
    """A verdict row from a bootstrap CI against ``null`` (0.5 for an AUROC, 0 for an effect size)."""
    if row is None or not np.isfinite(row["estimate"]):
        return _missing(claim, source, "models")
    outcome = verdict_from_interval(row["ci_low"] - null, row["ci_high"] - null, expected)
    side = ("above" if expected == "positive" else "below")
    return {"claim": claim, "source": source, "n": int(row["n"]), "reproduced": outcome,
            "measured": f"{name} = {row['estimate']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}]",
            "rule": f"yes when the 95% two-level bootstrap CI lies {side} {null:g}, no when on the other side",
            "power": power_note(row, name, bar=null) if outcome == "inconclusive" else ""}


def fastslow_verdicts(summary: pd.DataFrame, matrix: pd.DataFrame, separation: pd.DataFrame,
                      quality: pd.DataFrame, statistic: str = "nuclear_norm") -> list[dict]:
    """Verdict rows for claims 1 and 2 (pass them to :func:`analysis_lib.stats.verdicts.verdict_table`).

    Args:
        summary: :func:`~.contrasts.summary_tests`. matrix: its per-matrix fast − slow tests
            (:func:`~.contrasts.matrix_tests`).
        separation: :func:`~.contrasts.separation_table`.
        quality: :func:`~.contrasts.quality_effects`.
        statistic: the per-matrix statistic of the fast-vs-slow claims.
    """
    prof, label = f"mean log {statistic}", statistic.replace("_", " ")

    def contrast(metric, text, checkpoint="base", reduction="mean"):
        return find(summary, metric, f"{text} [checkpoint={checkpoint}, reduction={reduction}]")

    init = contrast(prof, "fast - slow", "init")
    at_init = f"; at initialisation {_ratio(init)}" if init is not None else ""
    rows = [
        _ratio_row(f"Fast responses give larger per-layer gradient {label}s than slow ones (base model, "
                   "token-averaged loss)", CLAIM1, contrast(prof, "fast - slow"), "fast/slow",
                   _matrix_count(matrix, "base", "mean") + at_init),
        _ratio_row("... with the token-summed loss (base model)", CLAIM1,
                   contrast(prof, "fast - slow", reduction="sum"), "fast/slow", _matrix_count(matrix, "base", "sum")),
        _ratio_row("... also against slow sequences scored on their answer tokens alone (same loss tokens; "
                   "base model)", CLAIM1, contrast(prof, "fast - answer_only"), "fast/answer-only"),
        _ratio_row("Baseline: fast > slow already at initialisation (token-averaged); 'yes' means the gap is "
                   "an artefact of format length, not learned", CLAIM1, init, "fast/slow"),
        _ratio_row("The fast-vs-slow gap grows with pre-training (base vs init, token-averaged)", CLAIM1,
                   find(summary, f"fast - slow {prof}", "base - init"), "(fast/slow at base) / (fast/slow at init)"),
        _ratio_row(f"Fast responses give larger cross-layer differences (MAD of {label} over layers, mean over "
                   "projections; base, token-averaged)", CLAIM1, contrast("mean log mad", "fast - slow"),
                   "MAD fast/slow", _init_note(summary, "mean log mad")),
        _ratio_row("... also relative to the layer mean (MAD / mean; base, token-averaged)", CLAIM1,
                   contrast("mean log relative_mad", "fast - slow"), "relative MAD fast/slow",
                   _init_note(summary, "mean log relative_mad")),
    ]
    for positive, what in (("irrelevant", "irrelevant (another problem's steps)"),
                           ("subtle", "subtly corrupted (one wrong digit)")):
        row = _interval_row(f"Slow-thinking gradients ({label}) separate correct from {what} reasoning (base; "
                            "AUROC > 0.5, corrupted larger)", CLAIM1,
                            find(separation, "AUROC", f"{positive} vs slow [checkpoint=base]"), "AUROC", 0.5)
        baseline = find(separation, "AUROC", f"{positive} vs slow [checkpoint=init]")
        if baseline is not None:
            row["measured"] += f"; at initialisation {baseline['estimate']:.3g} [{baseline['ci_low']:.3g}, " \
                               f"{baseline['ci_high']:.3g}]"
        rows.append(row)
    effect = lambda name: find(quality, name, "corrupted - slow [checkpoint=base]")  # noqa: E731
    rows += [
        _interval_row("Corrupted (lower-quality) responses give a larger nuclear norm (base)", CLAIM2,
                      effect("d_z nuclear_norm"), "d_z", 0.0),
        _interval_row("Clean (higher-quality) responses give a higher effective rank (base)", CLAIM2,
                      effect("d_z effective_rank"), "d_z corrupted − clean", 0.0, expected="negative"),
        _interval_row("Effective rank separates quality levels more than nuclear norm (base; separation in the "
                      "claimed directions, −d_z(erank) − d_z(nuclear))", CLAIM2,
                      effect("erank minus nuclear separation"), "difference of d_z", 0.0),
        _ratio_row("A pre-trained (base) model is less affected by fast thinking than a further fine-tuned one: "
                   "the fast-vs-slow gap is larger after fine-tuning", CLAIM1,
                   find(summary, f"fast - slow {prof}", "tuned - base"), "(fast/slow tuned) / (fast/slow base)"),
    ]
    return rows


def _init_note(summary: pd.DataFrame, metric: str) -> str:
    row = find(summary, metric, "fast - slow [checkpoint=init, reduction=mean]")
    return f"; at initialisation {_ratio(row)}" if row is not None else ""
