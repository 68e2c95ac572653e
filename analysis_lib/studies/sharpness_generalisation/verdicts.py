"""Study 09's tests and verdicts: SAM − SGD paired by seed, rank correlations, and the rules of claim 16."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from ...stats.compare import compare_conditions
from ...stats.rank_correlation import granulated_kendall, kendall_table
from ...stats.results import result_table
from ...stats.verdicts import NO_POWER, NOT_TESTED, verdict_row
from ..sensitivity import decide
from .measures import measure_table, wide_table
from .protocol import SOURCE, measure_names
from .shift import shift_changes, shift_rows, shift_tests

SGD = "SGD"
ALTERNATIVE_CHOICES = ("verdict_rho", "measure_rho", "measure_samples")  # the free choices (module docstring)
APART_RULE = ("yes when SAM's test error is lower (CI below 0) while some measure is higher (CI above 0), or "
              "some measure is lower while the test error is higher; no when test error and every measure "
              "move the same way, each decided by its CI; inconclusive otherwise")
CLAIM_RULE = "yes when flatness and generalisation come apart in at least one scenario; no when in none"


def method_label(sam_rho: float) -> str:
    """``"SGD"`` for ρ = 0, else ``"SAM ρ=<ρ>"`` (the condition the tests compare)."""
    return SGD if sam_rho == 0 else f"SAM ρ={sam_rho:g}"


def difference_tests(measures: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """SAM at each ρ − SGD, paired by seed, per scenario and metric (test error and every measure).

    Contrasts read ``"SAM ρ=0.05 - SGD [scenario=xor]"``; paired t-test with a percentile
    bootstrap CI (:func:`~analysis_lib.stats.compare.compare_conditions`). One comparison (a
    scenario, a SAM radius against SGD) is one family: its p-values (test error and every measure)
    are Holm-adjusted together, each family apart from the others.
    """
    if measures.empty:
        return result_table([])
    df = measures.assign(method=measures["sam_rho"].map(method_label))
    tables = []
    for _, scenario in df.groupby("scenario", sort=False):
        for rho in sorted(r for r in scenario["sam_rho"].unique() if r > 0):
            pair = scenario[scenario["sam_rho"].isin([0.0, rho])]
            if pair["method"].nunique() == 2:
                tables.append(compare_conditions(pair, "method", baseline=SGD, by=("metric", "layer", "scenario"),
                                                 n_boot=n_boot))
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else result_table([])


def _contrast(sam_rho: float, scenario: str) -> str:
    return f"{method_label(sam_rho)} - {SGD} [scenario={scenario}]"


def kendall_tests(measures: pd.DataFrame, *, ascent_steps: int, n_boot: int) -> pd.DataFrame:
    """Kendall τ of each measure against the test error over every training of a scenario (all ρ, seeds)."""
    wide = wide_table(measures)
    names = [m for m in measure_names(ascent_steps) if m in wide.columns]
    if wide.empty or "test_error" not in wide.columns or not names:
        return result_table([])
    return kendall_table(wide, names, "test_error", by=["scenario"], n_boot=n_boot)


def granulated_tests(measures: pd.DataFrame, *, ascent_steps: int, n_boot: int) -> pd.DataFrame:
    """The granulated τ of Jiang et al. (2020) per scenario and measure over the axes (SAM ρ, seed)."""
    wide = wide_table(measures)
    names = [m for m in measure_names(ascent_steps) if m in wide.columns]
    tables = []
    for scenario, sub in (wide.groupby("scenario", sort=False) if "test_error" in wide.columns else []):
        for m in names:
            table = granulated_kendall(sub, m, "test_error", ["sam_rho", "seed"], n_boot=n_boot)
            tables.append(table.assign(contrast=table["contrast"] + f" [scenario={scenario}]"))
    return pd.concat(tables, ignore_index=True) if tables else result_table([])


def paired_differences(measures: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, SAM ρ > 0 and seed: SAM − SGD of every metric, one column per metric."""
    wide = wide_table(measures)
    if wide.empty:
        return wide
    metrics = [c for c in wide.columns if c not in ("run_id", "scenario", "sam_rho", "seed")]
    base = wide[wide["sam_rho"] == 0].set_index(["scenario", "seed"])[metrics]
    sam = wide[wide["sam_rho"] > 0].set_index(["scenario", "seed"])
    diffs = sam[metrics] - base.reindex(sam.index)
    return diffs.assign(sam_rho=sam["sam_rho"]).reset_index().dropna(subset=["test_error"])


def tracking_tests(measures: pd.DataFrame, *, ascent_steps: int, n_boot: int) -> pd.DataFrame:
    """Kendall τ between Δ measure and Δ test error over (seed, SAM ρ) pairs: does a flatter SAM run gain more?"""
    diffs = paired_differences(measures)
    names = [m for m in measure_names(ascent_steps) if m in diffs.columns]
    if diffs.empty or not names:
        return result_table([])
    return kendall_table(diffs, names, "test_error", by=["scenario"], n_boot=n_boot)


def apart_verdict(error: str, measures: Sequence[str]) -> str:
    """Do flatness and generalisation come apart? (c) of the module docstring of the package.

    Args:
        error: the verdict of "SAM improves test error" (yes: lower, no: higher).
        measures: the verdicts of "SAM reaches a flatter solution by m" for every measure.
    """
    tested = [v for v in measures if v != NOT_TESTED]
    if error == NOT_TESTED or not tested:
        return NOT_TESTED
    if (error == "yes" and "no" in tested) or (error == "no" and "yes" in tested):
        return "yes"
    if error in ("yes", "no") and len(tested) == len(measures) and all(v == error for v in tested):
        return "no"
    return "inconclusive"


def _missing(claim: str, what: str) -> dict:
    return {"claim": claim, "source": SOURCE, "measured": f"no paired runs ({what})", "n": 0,
            "reproduced": NOT_TESTED}


def scenario_rows(tests: pd.DataFrame, scenario: str, *, sam_rho: float, measure_rho: float,
                  samples: int, names: Sequence[str]) -> list[dict]:
    """The verdict rows of one scenario: (a) test error, (b) each measure, (c) whether they come apart."""
    by_contrast = tests[tests["contrast"] == _contrast(sam_rho, scenario)].set_index("metric")
    where = f"SAM ρ = {sam_rho:g} vs SGD; sharpness at ρ = {measure_rho:g} on {samples or 'all'} training samples"
    claim_a = f"SAM generalises better than SGD (lower test error) [{scenario}]"
    rows = [verdict_row(claim_a, SOURCE, by_contrast.loc["test_error"], "Δ test error", "negative")
            if "test_error" in by_contrast.index else _missing(claim_a, where)]
    for m in names:
        claim = f"SAM reaches a flatter solution by {m} [{scenario}]"
        rows.append(verdict_row(claim, SOURCE, by_contrast.loc[m], f"Δ {m}", "negative")
                    if m in by_contrast.index else _missing(claim, where))
    rows[0]["measured"] = f"{rows[0]['measured']} (SAM ρ = {sam_rho:g} vs SGD)"
    for row in rows[1:]:
        row["measured"] = f"{row['measured']} ({where})"
    outcome = apart_verdict(rows[0]["reproduced"], [r["reproduced"] for r in rows[1:]])
    sharper = [m for m, r in zip(names, rows[1:]) if r["reproduced"] == "no"]
    flatter = [m for m, r in zip(names, rows[1:]) if r["reproduced"] == "yes"]
    measured = (f"test error: {rows[0]['reproduced']} (lower); flatter by {', '.join(flatter) or 'none'}; "
                f"sharper by {', '.join(sharper) or 'none'}")
    n = int(rows[0]["n"]) if outcome != NOT_TESTED else 0
    rows.append({"claim": f"Flatness and generalisation come apart under SAM [{scenario}]", "source": SOURCE,
                 "measured": measured, "n": n, "reproduced": outcome, "rule": APART_RULE,
                 "power": NO_POWER if outcome == "inconclusive" else ""})
    return rows


def verdict_rows(tests: pd.DataFrame, scenarios: Sequence[str], *, sam_rho: float, measure_rho: float,
                 samples: int, ascent_steps: int) -> list[dict]:
    """Every verdict row: per scenario (a), (b) for each measure, (c); then claim 16 over scenarios."""
    names = measure_names(ascent_steps)
    rows, apart = [], []
    for scenario in scenarios:
        block = scenario_rows(tests, scenario, sam_rho=sam_rho, measure_rho=measure_rho, samples=samples, names=names)
        rows += block
        apart.append((scenario, block[-1]["reproduced"]))
    decided = [(s, v) for s, v in apart if v != NOT_TESTED]
    outcome = (NOT_TESTED if not decided else "yes" if any(v == "yes" for _, v in decided)
               else "no" if all(v == "no" for _, v in decided) else "inconclusive")
    rows.append({"claim": "On two-layer ReLU networks, flatness and generalisation can come apart (claim 16)",
                 "source": SOURCE, "measured": "; ".join(f"{s}: {v}" for s, v in apart), "n": len(decided),
                 "reproduced": outcome, "rule": CLAIM_RULE, "power": NO_POWER if outcome == "inconclusive" else ""})
    return rows


def robust_verdict_rows(batteries: Mapping[int, pd.DataFrame], errors: pd.DataFrame, runs: pd.DataFrame, *,
                        scenarios: Sequence[str], verdict_rho: float, sam_rhos: Sequence[float], measure_rho: float,
                        measure_rhos: Sequence[float], measure_samples: int, sample_alternatives: Sequence[int],
                        ascent_steps: int, n_boot: int, shift_tables: Mapping[float, pd.DataFrame] | None = None,
                        shift_noise: float = 0.0, tau_margin: float = 0.2) -> tuple[list[dict], pd.DataFrame,
                                                                                      pd.DataFrame]:
    """:func:`verdict_rows` under the protocol with robustness, the sensitivity table, the protocol's tests.

    Returns the verdict rows (each no / partly with its robustness), the sensitivity table, and
    :func:`difference_tests` under the protocol's measuring radius and training subset.

    The free choices (:data:`ALTERNATIVE_CHOICES`) re-read the same runs: the SAM radius compared
    (every one of ``sam_rhos``), the measuring radius (every one of ``measure_rhos``) and the
    training subset of the measures (``measure_samples`` and ``sample_alternatives``; batteries
    taken by :func:`~analysis_lib.studies.sharpness_generalisation.measures.run_measures`). With
    ``shift_tables`` (input-noise size -> :func:`~.shift.run_shift`'s table) the claim-8 rows of
    :mod:`.shift` follow, and the input noise is a further choice (every size in ``shift_tables``).
    """
    cache: dict[tuple, pd.DataFrame] = {}

    def tests_for(rho: float, samples: int) -> pd.DataFrame:
        if (rho, samples) not in cache:
            table = measure_table(batteries[samples], errors, runs, rho=rho, ascent_steps=ascent_steps)
            cache[rho, samples] = difference_tests(table, n_boot=n_boot)
        return cache[rho, samples]

    def shift_for(noise: float) -> pd.DataFrame:
        if ("shift", noise) not in cache:
            cache["shift", noise] = shift_tests(shift_changes(shift_tables[noise]), n_boot=n_boot)
        return cache["shift", noise]

    def evaluate(setting: dict) -> list[dict]:
        rows = verdict_rows(tests_for(setting["measure_rho"], setting["measure_samples"]), scenarios,
                            sam_rho=setting["verdict_rho"], measure_rho=setting["measure_rho"],
                            samples=setting["measure_samples"], ascent_steps=ascent_steps)
        if shift_tables is not None:
            rows += shift_rows(shift_for(setting["shift_noise"]), scenarios, tau_margin=tau_margin,
                               shift_noise=setting["shift_noise"])
        return rows

    choices = {"verdict_rho": sorted(set(sam_rhos)), "measure_rho": sorted(set(measure_rhos)),
               "measure_samples": sorted({measure_samples, *sample_alternatives})}
    protocol = {"verdict_rho": verdict_rho, "measure_rho": measure_rho, "measure_samples": measure_samples}
    if shift_tables is not None:
        choices["shift_noise"] = sorted(shift_tables)
        protocol["shift_noise"] = shift_noise
    rows, table = decide(evaluate, choices, protocol)
    return rows, table, tests_for(measure_rho, measure_samples)

