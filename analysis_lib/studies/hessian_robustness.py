"""Study 03's free choices: claims 5 and 6 re-decided under other outlier rules, bars and training.

The protocol (:mod:`.hessian_spectrum`) counts outliers by the largest log gap among the top
2C + 2 eigenvalues, calls an overlap "close to 1" above ``overlap_bar``, and trains with SGD and
momentum for the parameter set's steps. A fair reader could choose differently:

- **outlier rule**: the largest log gap among the top 4C + 4 (a wider search); every final
  eigenvalue above the largest eigenvalue of the same run at initialisation (the outliers
  training created; Sagun et al. compare against the spectrum before training); or every
  eigenvalue above Tukey's far-out fence Q3 + 3·IQR of the whole final spectrum (a textbook
  outlier rule that knows nothing of C);
- **bulk width**: the 0.8- or 0.95-quantile of |λ| instead of the 0.9-quantile;
- **overlap bar**: 0.7 or 0.9 instead of the protocol's;
- **training**: the runs of ``sensitivity_arms`` (by default plain SGD without momentum and 3×
  longer, the setting of Gur-Ari et al., and 3× longer with momentum), trained as cached runs
  beside the study's own.

:func:`robust_verdict_rows` varies one choice at a time (:mod:`.sensitivity`) and returns the tidy table
the report shows; claims without runs under an alternative are "not tested" there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..curvature.spectrum import count_outliers
from .hessian_spectrum import PROTOCOL_COUNTING, class_counts, outlier_rows, overlap_rows, overlap_table
from .sensitivity import decide

OUTLIER_RULES = (PROTOCOL_COUNTING, "largest log gap, top 4C + 4", "above the initial λ_max",
                 "above the far-out fence Q3 + 3 IQR")
BULK_QUANTILES = (0.8, 0.95)  # alternatives to the protocol's bulk width, the 0.9-quantile of |λ|
PROTOCOL_BULK_QUANTILE = 0.9
OVERLAP_BARS = (0.7, 0.9)  # alternatives to the protocol's overlap_bar
PROTOCOL_TRAINING = "as run"
KEYS = ["run_id", "dataset", "n_classes", "width", "seed"]


def counts_by_rule(spectra: pd.DataFrame, n_classes: dict, rule: str) -> pd.DataFrame:
    """Each run's outlier count of its final exact spectrum under ``rule`` (one of :data:`OUTLIER_RULES`).

    Returns:
        ``run_id, dataset, n_classes, width, seed, value`` (runs with SLQ spectra are left out).
    """
    if rule not in OUTLIER_RULES:
        raise ValueError(f"invalid argument rule={rule!r}: must be one of {OUTLIER_RULES}")
    exact = spectra[spectra["method"] == "exact"]
    rows = []
    for rid, run in exact.groupby("run_id", sort=False):
        first, last = run["step"].min(), run["step"].max()
        final = run.loc[run["step"] == last, "eigenvalue"].to_numpy(np.float64)
        c = int(n_classes[rid])
        if rule == OUTLIER_RULES[0]:
            value = count_outliers(final, 2 * c + 2)
        elif rule == OUTLIER_RULES[1]:
            value = count_outliers(final, 4 * c + 4)
        elif rule == OUTLIER_RULES[3]:  # Tukey's far-out fence over the whole final spectrum: no C, no search window
            q1, q3 = np.quantile(final, [0.25, 0.75])
            value = int((final > q3 + 3 * (q3 - q1)).sum())
        else:
            if first == last:
                continue  # no spectrum at initialisation to compare with
            value = int((final > run.loc[run["step"] == first, "eigenvalue"].max()).sum())
        rows.append({**run.iloc[0][KEYS[1:]].to_dict(), "run_id": rid, "value": value})
    out = pd.DataFrame(rows, columns=[*KEYS, "value"])
    return out.astype({"n_classes": int}) if len(out) else out


def claim_rows(result, *, rule: str, bar: float, initial_phase: int, n_boot: int, bulk_quantile: float = 0.9,
               base_width: int | None = None, width_classes: int | None = None,
               arms: Sequence[str] | None = None, inputs: tuple | None = None) -> list[dict]:
    """The study's verdict rows from the runs of ``result`` (only ``arms`` when given) under one setting.

    The bulk-width rows need ``base_width`` and ``width_classes`` (the C of the width arm) and
    runs of more than one width; without them only claims 5 and 6 are decided. ``inputs``: what
    :func:`claim_inputs` gives for the same runs, when the caller decides several settings.
    """
    inputs = claim_inputs(result, arms, initial_phase=initial_phase, n_boot=n_boot) if inputs is None else inputs
    if not inputs:
        return []
    spectra, overlaps = inputs
    counts = counts_by_rule(spectra, class_counts(result), rule)
    return (outlier_rows(counts, rule) + _width_rows(spectra, result, bulk_quantile, base_width, width_classes, n_boot)
            + overlap_rows(overlaps, bar))


def claim_inputs(result, arms: Sequence[str] | None = None, *, initial_phase: int, n_boot: int) -> tuple:
    """``(spectra, overlap table)`` of the runs of ``result`` (only ``arms``), read and bootstrapped once.

    Empty when the runs stored no spectrum or metrics. No setting of :func:`robust_verdict_rows`
    but the training changes them, so its settings share them.
    """
    runs = result.runs if arms is None else result.runs[result.runs["arm"].isin(arms)]
    keep = set(runs.loc[runs["status"] != "failed", "run_id"])
    spectra, metrics = result.table("spectrum"), result.metrics
    if spectra.empty or metrics.empty:
        return ()
    spectra, metrics = (_labelled(d[d["run_id"].isin(keep)], result) for d in (spectra, metrics))
    return spectra, overlap_table(metrics, initial_phase, n_boot=n_boot)


def _width_rows(spectra: pd.DataFrame, result, quantile: float, base_width, width_classes, n_boot: int) -> list[dict]:
    from ..curvature.spectrum import spectrum_summary
    from ..stats.compare import compare_conditions
    from ..stats.reductions import last_step
    from .hessian_spectrum import bulk_widths, width_rows

    if base_width is None or width_classes is None:
        return []
    final = last_step(spectrum_summary(spectra, class_counts(result), bulk_quantile=quantile))
    bulk = bulk_widths(final, width_classes)
    if bulk["width"].nunique() < 2 or base_width not in set(bulk["width"]):
        return []
    return width_rows(compare_conditions(bulk, "width", baseline=base_width, n_boot=n_boot), base_width, quantile)


def _labelled(df: pd.DataFrame, result) -> pd.DataFrame:
    """``df`` with dataset, n_classes and width read from each run's config (whatever the grid labelled)."""
    counts = class_counts(result)
    labels = {rid: (c.data.name, counts[rid], c.model.width) for rid, c in result.configs.items()}
    ids = df["run_id"].map(labels)
    return df.assign(dataset=ids.str[0], n_classes=ids.str[1], width=ids.str[2], arm=df.get("arm", "all"))


def robust_verdict_rows(result, alternatives, *, protocol_arms: Sequence[str], overlap_bar: float,
                        initial_phase: int, n_boot: int, base_width: int,
                        width_classes: int | None) -> tuple[list[dict], pd.DataFrame]:
    """The study's verdict rows, each no / partly with its robustness, and the sensitivity table.

    Args:
        result: the study's grid (its claims from ``protocol_arms``). alternatives: the grid of
            the sensitivity arms (one arm per alternative training, named by its arm), or None.
        base_width, width_classes: the protocol's width and the C of its width arm (None: no
            width arm, no bulk-width rows).
    """
    trainings = [PROTOCOL_TRAINING, *([] if alternatives is None else dict.fromkeys(alternatives.runs["arm"]))]
    choices = {"outlier rule": OUTLIER_RULES, "bulk quantile": sorted({PROTOCOL_BULK_QUANTILE, *BULK_QUANTILES}),
               "overlap bar": sorted({overlap_bar, *OVERLAP_BARS}), "training": trainings}
    protocol = {"outlier rule": OUTLIER_RULES[0], "bulk quantile": PROTOCOL_BULK_QUANTILE, "overlap bar": overlap_bar,
                "training": PROTOCOL_TRAINING}

    inputs = {}  # training -> its runs' spectra and overlaps, shared by the settings of that training

    def evaluate(setting: dict) -> list[dict]:
        grid, arms = ((result, protocol_arms) if setting["training"] == PROTOCOL_TRAINING
                      else (alternatives, [setting["training"]]))
        if setting["training"] not in inputs:
            inputs[setting["training"]] = claim_inputs(grid, arms, initial_phase=initial_phase, n_boot=n_boot)
        return claim_rows(grid, rule=setting["outlier rule"], bar=setting["overlap bar"],
                          bulk_quantile=setting["bulk quantile"], base_width=base_width, width_classes=width_classes,
                          initial_phase=initial_phase, n_boot=n_boot, arms=arms, inputs=inputs[setting["training"]])

    return decide(evaluate, choices, protocol)
