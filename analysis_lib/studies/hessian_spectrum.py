"""Study 03, Hessian spectra: bulk and outliers, bulk width against width, the gradient's tiny subspace.

Claims 5 (Sagun et al. 2018) and 6 (Gur-Ari et al. 2018) of ``docs/claims.md``.

Protocol fixed in advance: outliers are counted by the largest gap in log scale among the top
2C + 2 eigenvalues of the final exact spectrum
(:func:`analysis_lib.curvature.spectrum.count_outliers`); the bulk width is the 0.9-quantile of
|λ| (outliers weigh ≤ C/dim) and is compared between widths on exact spectra only; the gradient
overlap ‖V_Cᵀ g‖²/‖g‖² uses the full-batch gradient and the full-training-set Hessian at the same
weights, averaged over steps ≥ ``initial_phase``, and counts as "close to 1" above
``overlap_bar``.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..stats.effects import mean_ci
from ..stats.verdicts import NOT_TESTED, share_verdict, verdict_row
from ..training.data import class_count
from ..validation import check_fraction, check_includes, check_int

# The reference lines of the outliers-against-classes figure: the counts the claim allows.
OUTLIER_REFERENCES = {"count = C": lambda c: c, "count = C − 1": lambda c: c - 1}

TITLE = "Hessian spectra: bulk, outliers and the gradient's tiny subspace"
QUESTION = "Does the Hessian have about C outliers over a bulk, and does the gradient live in the top-C subspace?"
SAGUN = "Sagun et al. 2018 (claim 5)"
GUR_ARI = "Gur-Ari et al. 2018 (claim 6)"


def check_parameters(arms: Mapping, *, overlap_bar: float, initial_phase: int, n_boot: int) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training."""
    check_includes("arms", arms, ["classes"])
    check_fraction("overlap_bar", overlap_bar)
    check_int("initial_phase", initial_phase, 0)
    check_int("n_boot", n_boot, 1)


def class_counts(result) -> dict[str, int]:
    """Run id -> number of classes of its dataset, from the runs' configs."""
    return {rid: class_count(config.data) for rid, config in result.configs.items()}


def outlier_counts(final: pd.DataFrame) -> pd.DataFrame:
    """The outlier count of every run's final exact spectrum (SLQ spectra have none)."""
    return final[final["metric"] == "n_outliers"].dropna(subset=["value"])


def bulk_widths(final: pd.DataFrame, n_classes) -> pd.DataFrame:
    """Final bulk widths of the Gaussian-mixture runs with ``n_classes`` classes and exact spectra."""
    exact_runs = final[(final["metric"] == "exact") & (final["value"] == 1)]["run_id"]
    return final[(final["metric"] == "bulk_width") & (final["dataset"] == "gaussian_mixture")
                 & (final["n_classes"] == n_classes) & final["run_id"].isin(exact_runs)]


def overlap_table(metrics: pd.DataFrame, initial_phase: int, *, n_boot: int) -> pd.DataFrame:
    """Mean gradient overlap over steps ≥ ``initial_phase`` per run, then its mean and CI per condition."""
    overlap = metrics[(metrics["metric"] == "grad_overlap") & (metrics["step"] >= initial_phase)]
    keys = ["run_id", "arm", "dataset", "n_classes", "width", "seed"]
    per_run = overlap.groupby(keys, as_index=False)["value"].mean()
    return mean_ci(per_run.assign(metric="grad_overlap"), ["dataset", "n_classes", "width"], n_boot=n_boot)


def verdict_rows(counts: pd.DataFrame, width_tests: pd.DataFrame, overlaps: pd.DataFrame, *, base_width: int,
                 overlap_bar: float) -> list[dict]:
    """Every verdict row of the study.

    Outliers: "yes" when every run's count is C or C − 1, "partly" when some are. Bulk: from the
    CI and adjusted p of each width contrast (a wider network is expected to have a wider bulk).
    Overlap: "yes" when the CI of the mean overlap lies above ``overlap_bar``, "no" below.

    Args:
        counts: :func:`outlier_counts`. width_tests: bulk width by width, baseline ``base_width``.
        overlaps: :func:`overlap_table`.
    """
    return outlier_rows(counts) + width_rows(width_tests, base_width) + overlap_rows(overlaps, overlap_bar)


def width_rows(width_tests: pd.DataFrame, base_width: int, quantile: float = 0.9) -> list[dict]:
    """The bulk-width rows: a wider network than ``base_width`` should have a wider bulk, a narrower one a narrower."""
    rows = []
    for _, row in width_tests.iterrows():
        expected = "positive" if float(row.contrast.split(" - ")[0]) > base_width else "negative"
        found = verdict_row(f"More parameters widen the bulk ({row.contrast})", SAGUN, row, "Δ bulk width", expected)
        rows.append({**found, "rule": f"bulk width = the {quantile:g}-quantile of |λ|; " + found["rule"]})
    return rows


PROTOCOL_COUNTING = "largest log gap, top 2C + 2"  # how the protocol counts outliers (module docstring)


def outlier_rows(counts: pd.DataFrame, counting: str = PROTOCOL_COUNTING) -> list[dict]:
    """Claim 5's rows: per dataset, C and width, the share of runs whose count is C or C − 1.

    ``counting`` names how ``counts`` were counted (it goes into each row's rule).
    """
    rule = f"outliers counted by {counting}: yes when every run has C or C − 1, partly when some, no when none"
    in_range = counts.assign(ok=lambda d: d["value"].between(d["n_classes"] - 1, d["n_classes"]))
    return [{"claim": f"The trained Hessian has C or C − 1 outliers ({ds}, C = {c}, width {w})", "source": SAGUN,
             "measured": f"outliers per run: {sorted(g['value'].astype(int).tolist())}", "n": len(g),
             "reproduced": share_verdict(g["ok"]), "rule": rule}
            for (ds, c, w), g in in_range.groupby(["dataset", "n_classes", "width"])]


def overlap_rows(overlaps: pd.DataFrame, bar: float) -> list[dict]:
    """Claim 6's rows: the mean overlap's CI against ``bar``, per dataset, C and width."""
    rule = f"yes when the 95% CI of the mean overlap lies above {bar:g}, no when below, inconclusive otherwise"
    return [{"claim": f"The gradient lies in the top-C subspace after an initial phase ({r.dataset}, "
                      f"C = {r.n_classes}, width {r.width})",
             "source": GUR_ARI, "measured": f"overlap = {r.mean:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]",
             "n": int(r.n), "reproduced": _overlap_outcome(r.ci_low, r.ci_high, bar), "rule": rule,
             "power": _interval_power(r.mean, r.ci_low, r.ci_high, r.n, "overlap", bar)}
            for r in overlaps.itertuples()]


def _interval_power(mean, ci_low, ci_high, n, name: str, bar: float) -> str:
    """The power line of an interval read against ``bar`` (only where it straddles it)."""
    from ..stats.power import power_note

    if not ci_low <= bar <= ci_high:
        return ""
    return power_note(pd.Series({"estimate": mean, "ci_low": ci_low, "ci_high": ci_high, "n": n}), name, bar=bar)


def _overlap_outcome(ci_low: float, ci_high: float, bar: float) -> str:
    if ci_low != ci_low or ci_high != ci_high:  # NaN: no interval
        return NOT_TESTED
    return "yes" if ci_low > bar else "no" if ci_high < bar else "inconclusive"
