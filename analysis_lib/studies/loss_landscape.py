"""Study 05, filter-normalised loss landscapes: batch size, residual connections, scale invariance.

Claim 9 of ``docs/claims.md`` (Li et al. 2018), and the scale invariance of filter-normalised
sharpness under an equivalent rescaling (Dinh et al. 2017) as a premise.

Protocol fixed in advance: a direction-averaged summary of each run's 1-D slices
(:mod:`analysis_lib.landscape.slices`), large − small batch (and residual − plain) paired by
seed, Holm-adjusted, verdicts read off the 95% CI and p < 0.05. "Only after filter
normalisation" reproduces when, for some weight decay, the filter-normalised curvature
comparison reproduces and the unnormalised one does not; it fails when every unnormalised
comparison agrees. Scale invariance reproduces when the equivalent network's filter-normalised
curvature changes by less than 0.1% (float32 round-off) and the unnormalised one by more than 10%.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..landscape.directions import NORMALIZATIONS
from ..runs.analyses import finished_runs
from ..runs.derived import Analysis, derive
from ..stats.verdicts import NOT_TESTED, verdict_from_interval, verdict_row
from ..validation import check_fraction, check_includes, check_int, check_subset, fail
from .sensitivity import decide, stamped, with_alternatives

TITLE = "Filter-normalised loss landscapes"
QUESTION = ("Do small-batch minima look flatter than large-batch ones only after filter normalisation, and do "
            "residual connections smooth the landscape?")
SOURCE = "Li et al. 2018 (claim 9)"


def check_parameters(configs: Sequence, *, arms: Mapping, probes: Mapping, fit_fraction: float, radius: Mapping,
                     slice_points: int, map_points: int, direction_seeds: Sequence[int], rescale_factor: float,
                     small_batch: int, n_boot: int) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training.

    The study needs the arms ``batch`` and ``residual``, the ``weights`` probe (final weights),
    both the ``filter`` and ``none`` normalisations, ``small_batch`` among the batch arm's batch
    sizes and a run without weight decay in it (the rescaled network is built from one).
    """
    check_includes("arms", arms, ["batch", "residual"])
    check_includes("probes.names", probes.get("names", []), ["weights"])
    check_fraction("fit_fraction", fit_fraction)
    check_surface_parameters(radius=radius, slice_points=slice_points, map_points=map_points,
                             direction_seeds=direction_seeds, rescale_factor=rescale_factor)
    check_includes("radius", radius, ["filter", "none"])  # the study compares these two
    check_int("n_boot", n_boot, 1)
    batch_configs = [c for c in configs if c.label("arm") == "batch"]
    check_subset("small_batch", [small_batch], sorted({c.train.batch_size for c in batch_configs}))
    check_includes("arms['batch']['train.weight_decay']", sorted({c.train.weight_decay for c in batch_configs}), [0.0])


def check_surface_parameters(*, radius: Mapping[str, float], slice_points: int, map_points: int,
                             direction_seeds: Sequence[int], rescale_factor: float) -> None:
    """Raise ConfigError naming the first bad landscape parameter of a study (before any training)."""
    bad = fail
    if not isinstance(radius, Mapping) or not radius or not set(radius) <= set(NORMALIZATIONS):
        bad("radius", radius, f"must map normalisations drawn from {list(NORMALIZATIONS)} to radii")
    if not all(isinstance(r, (int, float)) and 0 < r < float("inf") for r in radius.values()):
        bad("radius", radius, "every radius must be a finite number > 0")
    for name, value in (("slice_points", slice_points), ("map_points", map_points)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 5 or value % 2 == 0:
            bad(name, value, "must be an odd integer >= 5, so that alpha = 0 lies on the grid")
    seeds = list(direction_seeds) if isinstance(direction_seeds, (list, tuple)) else None
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        bad("direction_seeds", direction_seeds, "must be a non-empty list of distinct integers >= 0")
    if isinstance(rescale_factor, bool) or not isinstance(rescale_factor, (int, float)) or not rescale_factor > 0:
        bad("rescale_factor", rescale_factor, "must be a number > 0")


def _outcome(row: pd.Series, expected: str, alpha: float) -> str:
    """The outcome :func:`analysis_lib.stats.verdicts.verdict_row` gives a test row: CI and p-value."""
    outcome = verdict_from_interval(row["ci_low"], row["ci_high"], expected)
    p = row.get("p_adj", row.get("pvalue", np.nan))
    return outcome if outcome in ("inconclusive", NOT_TESTED) or p < alpha else "inconclusive"


def normalisation_verdict(tests: pd.DataFrame, metric: str, *, claim: str, source: str,
                          expected: str = "positive", alpha: float = 0.05) -> dict:
    """Verdict on "the comparison shows only after filter normalisation" (Li et al. 2018, §5).

    Args:
        tests: a :func:`~analysis_lib.stats.compare.compare_conditions` table whose ``layer``
            column holds the normalisation (``"filter"`` / ``"none"``) and whose ``contrast``
            pairs the rows (e.g. one per weight decay).
        metric: the summary compared (e.g. ``"curvature"``).
        expected: the sign of the effect under filter normalisation.

    Returns:
        A verdict row: ``"yes"`` when, for some contrast, the filter-normalised comparison
        reproduces (CI on the expected side, p < alpha) and the unnormalised one does not;
        ``"no"`` when every contrast that reproduces under filter normalisation also does without
        it; ``"inconclusive"`` when none reproduces under filter normalisation (or the
        unnormalised comparison is missing).
    """
    sub = tests[tests["metric"] == metric]
    pairs = {c: {r["layer"]: _outcome(r, expected, alpha) for _, r in g.iterrows()}
             for c, g in sub.groupby("contrast", sort=False)}
    shown = {c: o for c, o in pairs.items() if o.get("filter") == "yes"}
    outcome = ("inconclusive" if not shown or any("none" not in o for o in shown.values()) else
               "yes" if any(o["none"] != "yes" for o in shown.values()) else "no")
    measured = "; ".join(f"{c}: filter {o.get('filter')}, none {o.get('none')}" for c, o in pairs.items())
    return {"claim": claim, "source": source, "measured": measured,
            "n": int(sub["n"].min()) if len(sub) else 0, "reproduced": outcome}


def scale_invariance_verdict(summaries: pd.DataFrame, *, label: str = "model", metric: str = "curvature",
                             claim: str, source: str, tol: float = 1e-3, change: float = 0.1) -> dict:
    """Verdict on scale invariance from slices of a network and an equivalent rescaled copy.

    Args:
        summaries: :func:`slice_summaries` of both models, with ``normalization`` and a
            ``label`` column whose values are ``"original"`` and ``"rescaled"``.
        tol: largest relative change of the filter-normalised summary counted as invariant
            (float32 round-off of a second difference is ~1e-5 relative).
        change: smallest relative change of the unnormalised summary counted as a change.

    Returns:
        A verdict row: ``"yes"`` when the filter-normalised mean over directions changes by
        less than ``tol`` and the unnormalised one by more than ``change``, else ``"no"``.
    """
    sub = summaries[summaries["metric"] == metric]
    if sub.empty:  # the run it rescales did not finish
        return {"claim": claim, "source": source, "measured": "no finished run to rescale", "n": 0,
                "reproduced": NOT_TESTED}
    means = sub.groupby(["normalization", label])["value"].mean().unstack(label)
    ratio = means["rescaled"] / means["original"]
    invariant = abs(ratio.get("filter", np.nan) - 1) < tol and abs(ratio.get("none", np.nan) - 1) > change
    return {"claim": claim, "source": source,
            "measured": ", ".join(f"{n}: rescaled/original {metric} = {r:.4g}" for n, r in ratio.items()),
            "n": int(sub["direction_seed"].nunique()), "reproduced": "yes" if invariant else "no"}


def rescaling_surfaces(result, run_ids: Sequence[str], *, factor: float, radius: Mapping[str, float],
                       seeds: Sequence[int], steps: int) -> pd.DataFrame:
    """Slices of the first finished run of ``run_ids`` and of its equivalent rescaled copy.

    The copy has its first layer multiplied by ``factor`` and the next divided by it
    (:func:`~analysis_lib.landscape.directions.equivalent_rescaling`): the same function.

    Returns:
        :func:`~analysis_lib.landscape.surfaces.surface_table` rows on the training split per
        normalisation in ``radius`` (its slice radius), with ``model`` ``"original"`` or
        ``"rescaled"``; empty when none of ``run_ids`` finished.
    """
    from ..landscape.directions import equivalent_rescaling
    from ..landscape.surfaces import surface_table

    finished = [r for r in run_ids if r in set(result.run_ids(status="finished"))]
    if not finished:
        return pd.DataFrame(columns=["alpha", "beta", "metric", "value", "model", "normalization"])
    net, dataset = result.model(finished[0]), result.configs[finished[0]].dataset()
    train = {"train": (dataset.x_train, dataset.y_train)}
    return pd.concat([surface_table(m, train, seeds=seeds, radius=r, steps=steps, normalization=n)
                      .assign(model=k, normalization=n)
                      for k, m in {"original": net, "rescaled": equivalent_rescaling(net, factor)}.items()
                      for n, r in radius.items()], ignore_index=True)


RESCALING = Analysis("rescaling_surfaces", "analysis_lib.studies.loss_landscape:rescaling_surfaces", version=1)


def cached_rescaling_surfaces(result, run_ids: Sequence[str], *, executor=None, progress: bool | None = None,
                              **params) -> pd.DataFrame:
    """:func:`rescaling_surfaces` of the first finished run of ``run_ids``, computed once and stored."""
    finished = finished_runs(result, run_ids)
    if not finished:
        return rescaling_surfaces(result, [], **params)
    return derive(RESCALING, result, [finished[:1]], params=params, executor=executor, progress=progress,
                  labels=False)


def rescaling_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """Each slice summary of the original and the rescaled model (mean over directions) and their ratio.

    Returns:
        ``normalization, metric, original, rescaled, ratio``; empty without summaries.
    """
    columns = ["normalization", "metric", "original", "rescaled", "ratio"]
    if summaries.empty:
        return pd.DataFrame(columns=columns)
    means = summaries.groupby(["normalization", "model", "metric"])["value"].mean().unstack("model")
    return means.assign(ratio=means["rescaled"] / means["original"]).reset_index()[columns]


def verdict_rows(batch_tests: pd.DataFrame, residual_tests: pd.DataFrame,
                 rescaled_summaries: pd.DataFrame) -> list[dict]:
    """Every verdict row of the study (rules in the module docstring).

    Args:
        batch_tests: large − small batch per summary, normalisation (``layer``) and weight decay.
        residual_tests: residual − plain per summary and normalisation.
        rescaled_summaries: slice summaries of the original and the rescaled network.
    """
    batch = [verdict_row(f"Large-batch minima are sharper than small-batch ones under filter normalisation "
                         f"({row.metric}, {row.contrast})", SOURCE, row, f"Δ {row.metric}", "positive")
             for _, row in batch_tests[batch_tests["layer"] == "filter"].iterrows()]
    residual = [verdict_row(f"Residual connections give {'smoother' if row.metric == 'roughness' else 'flatter'} "
                            f"surfaces ({row.metric})", SOURCE, row, f"Δ {row.metric}", "negative")
                for _, row in residual_tests[(residual_tests["layer"] == "filter")
                                             & residual_tests["metric"].isin(["roughness", "curvature"])].iterrows()]
    return ((batch or [_untested("Large-batch minima are sharper than small-batch ones under filter normalisation")])
            + [normalisation_verdict(batch_tests, "curvature",
                                     claim="... and the comparison shows only after filter normalisation",
                                     source=SOURCE),
               scale_invariance_verdict(rescaled_summaries,
                                        claim="Unnormalised sharpness changes under an equivalent rescaling; "
                                              "filter-normalised does not",
                                        source="Dinh et al. 2017; Li et al. 2018")]
            + (residual or [_untested("Residual connections give smoother and flatter surfaces")]))


def _untested(claim: str) -> dict:
    """The row of a claim none of whose tests could be computed (no finished runs in its arm)."""
    return {"claim": claim, "source": SOURCE, "measured": "no test could be computed (no finished runs)",
            "n": 0, "reproduced": NOT_TESTED}


# The free choice of the slice summaries a fair reader could make differently: the half-width of
# the window the curvature's quadratic is fitted over, as a fraction of the slice's radius.
ALTERNATIVES = {"fit_fraction": (0.1, 0.5)}


def landscape_tests(summaries: pd.DataFrame, *, small_batch: int, n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Large − small batch (curvature, rise; per normalisation and weight decay) and residual − plain, paired by seed.

    Args:
        summaries: :func:`~analysis_lib.landscape.slices.slice_summaries` with ``layer`` holding
            the normalisation.
    """
    from ..stats.compare import compare_conditions

    batch = summaries[(summaries["arm"] == "batch") & summaries["metric"].isin(["curvature", "rise"])]
    batch_tests = compare_conditions(batch, "batch_size", baseline=small_batch, by=("metric", "layer", "weight_decay"),
                                     n_boot=n_boot)
    residual_tests = compare_conditions(summaries[summaries["arm"] == "residual"], "residual", baseline=False,
                                        by=("metric", "layer"), n_boot=n_boot)
    return batch_tests, residual_tests


def robust_verdict_rows(surfaces: pd.DataFrame, rescaled: pd.DataFrame, *, fit_fraction: float, small_batch: int,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` with each no / partly's robustness under :data:`ALTERNATIVES`, and the table.

    Each alternative re-summarises the same surfaces (no new training or evaluation).
    """
    from ..landscape.slices import slice_summaries

    def evaluate(setting: dict) -> list[dict]:
        summaries = slice_summaries(surfaces, fit_fraction=setting["fit_fraction"])
        summaries["layer"] = summaries["normalization"]
        batch_tests, residual_tests = landscape_tests(summaries, small_batch=small_batch, n_boot=n_boot)
        rescaled_summaries = slice_summaries(rescaled, fit_fraction=setting["fit_fraction"])
        return stamped(verdict_rows(batch_tests, residual_tests, rescaled_summaries),
                       f"curvature fitted over ±{setting['fit_fraction']:g} of each slice's radius")

    protocol = {"fit_fraction": fit_fraction}
    return decide(evaluate, with_alternatives(protocol, ALTERNATIVES), protocol)
