"""Study 06, run-to-run variance: butterfly twins, accuracy noise between seeds, trajectory PCA.

Claims 10, 11 and 12 of ``docs/claims.md``, and weight matching (Git Re-Basin) as a premise.

Design. *Parents* are runs of many seeds. A *twin* is a run with the same seed (same initial
weights, same data order) as its parent whose weights get one tiny seeded Gaussian perturbation
(``train.perturb_scale`` × ‖θ‖, :func:`analysis_lib.weights.perturbation.perturb_weights`) after
``train.perturb_step`` updates. As a reference, *independent* pairs join two parents of
different seeds. Pair tables have :data:`PAIR_COLUMNS`: ``pair`` a label (``"twin, step 100"``,
``"independent"``), ``perturb_step`` (NaN for independent pairs), ``seed`` A's seed, and the run
ids of A (the parent) and B (the twin or the other parent).

Rules fixed in advance (thresholds are study parameters): twins perturbed at step 0 are *as far
apart as independent runs* when the 95% CI of their final-distance ratio lies above
``comparable``, and *separated by a barrier* when the CI of their train-loss barrier lies above
``barrier_min`` nats; the accuracy variance matches the binomial prediction when the CI of
observed / predicted lies within [1/``variance_factor``, ``variance_factor``]; the trajectory
claims use the top ``pca_top`` components and a margin of ±``pca_margin``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..runs.grid import expand_grid
from ..stats.effects import mean_ci
from ..stats.power import band_note, power_note
from ..stats.verdicts import NOT_TESTED, verdict_from_interval, verdict_row, verdict_within
from ..training.schedules import probe_steps
from ..validation import ConfigError, check_choice, check_fraction, check_int, check_subset
from .sensitivity import decide, with_alternatives

TITLE = "Run-to-run variance: butterfly twins, accuracy noise and trajectory PCA"
QUESTION = ("Do tiny early perturbations send runs to different minima, is the seed-to-seed spread of test "
            "accuracy binomial noise, and do weight trajectories look like random walks under PCA?")
BUTTERFLY = "Altıntaş et al. 2025, the butterfly effect (claim 10)"
CALIBRATED_CHAOS = "Jordan 2023, Calibrated Chaos (claim 11)"
PCA_SOURCE = "Antognini & Sohl-Dickstein 2018 (claim 12)"
BATCHNORM_RULES = ("interpolate", "recompute")
PAIR_COLUMNS = ["pair", "perturb_step", "seed", "run_id", "run_id_b"]


def twin_grid(base: dict, seeds: Sequence[int], twin_seeds: Sequence[int], perturb_steps: Sequence[int],
              perturb_scale: float, perturb_seed: int) -> list:
    """The study's runs: one parent per seed, and twins of ``twin_seeds`` perturbed at each step.

    Parents (arm ``parent``) are unperturbed; twins (arm ``twin``) are perturbed after each of
    ``perturb_steps`` updates.
    """
    parents = expand_grid(base, {"parent": {"train.perturb_step": [0], "train.perturb_scale": [0.0]}}, seeds)
    twins = expand_grid(base, {"twin": {"train.perturb_step": list(perturb_steps),
                                        "train.perturb_scale": [perturb_scale],
                                        "train.perturb_seed": [perturb_seed]}}, twin_seeds)
    return parents + twins


def check_parameters(configs: Sequence, *, seeds, twin_seeds, perturb_scale, comparable, barrier_min,
                     batchnorm, alphas, pca_from, pca_components, pca_top, pca_margin, variance_factor,
                     n_boot) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training."""
    check_twin_design(seeds, twin_seeds, perturb_scale, configs[0].probes.names, comparable, barrier_min)
    if configs[0].model.kind != "mlp":
        raise ConfigError(f"invalid parameter model.kind={configs[0].model.kind!r}: weight matching supports "
                          "'mlp' only (plain or residual, with or without batch/layer norm)")
    check_choice("batchnorm", batchnorm, BATCHNORM_RULES)
    check_int("alphas", alphas, 2)
    snapshots = probe_steps(configs[0].probes, configs[0].train.steps)
    check_pca_parameters(pca_from, snapshots, pca_components, pca_top, pca_margin)
    check_variance_factor(variance_factor)
    check_int("n_boot", n_boot, 1)


def twin_label(step: int) -> str:
    """``"twin, step 100"``: the pair label of twins perturbed after ``step`` updates."""
    return f"twin, step {int(step)}"


def twin_pairs(runs: pd.DataFrame, *, parent_arm: str = "parent", twin_arm: str = "twin") -> pd.DataFrame:
    """Every twin with its parent, and one independent pair per twin seed.

    Args:
        runs: ``GridResult.runs`` of :func:`twin_grid` (``run_id, arm, perturb_step, seed, status``).
        parent_arm, twin_arm: the ``arm`` labels of parents and twins.

    Returns:
        Pair table (:data:`PAIR_COLUMNS`), only pairs whose two runs finished (a diverged or
        failed run has no final minimum). The i-th twin seed (in sorted order) is paired
        independently with the i-th parent seed that has no twins, while there are any.
    """
    ok = runs[runs["status"] == "finished"]
    parents = ok[ok["arm"] == parent_arm].set_index("seed")["run_id"]
    twins = ok[ok["arm"] == twin_arm]
    rows = [{"pair": twin_label(t.perturb_step), "perturb_step": float(t.perturb_step), "seed": t.seed,
             "run_id": parents[t.seed], "run_id_b": t.run_id}
            for t in twins.itertuples() if t.seed in parents.index]
    twin_seeds = sorted(runs.loc[runs["arm"] == twin_arm, "seed"].unique())
    others = [s for s in sorted(runs.loc[runs["arm"] == parent_arm, "seed"].unique()) if s not in twin_seeds]
    for seed, other in zip(twin_seeds, others):
        if seed in parents.index and other in parents.index:
            rows.append({"pair": "independent", "perturb_step": np.nan, "seed": seed,
                         "run_id": parents[seed], "run_id_b": parents[other]})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def pair_summary(distances: pd.DataFrame, barriers: pd.DataFrame, *, split: str = "train",
                 metric: str = "loss") -> pd.DataFrame:
    """One row per pair and quantity at the end of training, tidy for :mod:`analysis_lib.stats`.

    Args:
        distances: :func:`analysis_lib.trajectories.distances.pair_distances` of the pairs.
        barriers: the barriers of :func:`analysis_lib.landscape.interpolation.pair_interpolations`.
        split, metric: which barrier counts.

    Returns:
        Columns ``pair, perturb_step, seed, matched, layer, metric, value`` (``layer = "model"``)
        with metrics ``relative_distance`` (‖θ_A − θ_B‖/‖θ_A‖ at the last common step; ``matched``
        False) and ``barrier`` (of ``metric`` on ``split``, without and with weight matching).
    """
    keys = ["pair", "perturb_step", "seed"]
    d = distances[(distances["layer"] == "model") & (distances["metric"] == "relative_distance")]
    d = d[d["step"] == d.groupby(keys, dropna=False)["step"].transform("max")]
    b = barriers[(barriers["split"] == split) & (barriers["metric"] == metric)]
    frames = [d[keys].assign(matched=False, metric="relative_distance", value=d["value"].to_numpy()),
              b[keys].assign(matched=b["matched"].to_numpy(), metric="barrier", value=b["barrier"].to_numpy())]
    return pd.concat(frames, ignore_index=True).assign(layer="model")[
        [*keys, "matched", "layer", "metric", "value"]]


def apart_verdicts(summary: pd.DataFrame, *, comparable: float, barrier_min: float, perturb_scale: float,
                   n_boot: int = 2000, source: str = BUTTERFLY) -> list[dict]:
    """Verdict rows: do twins perturbed at step 0 end as far apart as independent runs, with a barrier?

    Rules fixed in advance: *apart* holds when the 95% CI (bootstrap over seeds) of the ratio of a
    step-0 twin pair's final distance to its seed's independent pair's lies above ``comparable``
    (fails below); *barrier* holds when the CI of the step-0 twins' barrier (without matching) lies
    above ``barrier_min`` (fails below). ``perturb_scale`` (the twins' initial relative distance)
    is quoted beside the final distances.
    """
    s = summary[~summary["matched"].astype(bool)].pivot_table(index="seed", columns=["metric", "pair"], values="value")
    label = twin_label(0)
    needed = [("relative_distance", label), ("relative_distance", "independent"), ("barrier", label)]
    if s.empty or any(c not in s.columns for c in needed):  # e.g. the parents or twins diverged
        untested = {"source": source, "measured": "no finished step-0 twin pair with its independent pair",
                    "n": 0, "reproduced": NOT_TESTED}
        return [{"claim": "A tiny perturbation at initialisation sends the twins as far apart as independent runs",
                 **untested}, {"claim": "... into a different minimum, with a loss barrier between the twins",
                               **untested}]
    ratio = (s[("relative_distance", label)] / s[("relative_distance", "independent")]).dropna()
    r = mean_ci(pd.DataFrame({"g": 0, "value": ratio}), ["g"], n_boot=n_boot).iloc[0]
    b = mean_ci(pd.DataFrame({"g": 0, "value": s[("barrier", label)].dropna()}), ["g"], n_boot=n_boot).iloc[0]
    grown = (f"relative distance {perturb_scale:.2g} at the perturbation, {s[('relative_distance', label)].mean():.3g} "
             f"at the end vs {s[('relative_distance', 'independent')].mean():.3g} for independent runs")
    return [{"claim": "A tiny perturbation at initialisation sends the twins as far apart as independent runs",
             "source": source, "measured": f"twin / independent final distance = {r['mean']:.3g} "
             f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}] (rule: above {comparable:g}; {grown})", "n": int(r["n"]),
             "reproduced": verdict_from_interval(r["ci_low"] - comparable, r["ci_high"] - comparable),
             "power": _power(r, "twin / independent distance", comparable)},
            {"claim": "... into a different minimum, with a loss barrier between the twins", "source": source,
             "measured": f"train-loss barrier = {b['mean']:.3g} [{b['ci_low']:.3g}, {b['ci_high']:.3g}] nats "
             f"(rule: above {barrier_min:g})", "n": int(b["n"]),
             "reproduced": verdict_from_interval(b["ci_low"] - barrier_min, b["ci_high"] - barrier_min),
             "power": _power(b, "barrier", barrier_min)}]


def _power(m: pd.Series, name: str, bar: float) -> str:
    """The power line of a ``mean_ci`` row read against ``bar`` (only where its interval straddles it)."""
    if not m["ci_low"] <= bar <= m["ci_high"]:
        return ""
    return power_note(pd.Series({"estimate": m["mean"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
                                 "n": m["n"]}), name, bar=bar)


def check_twin_design(seeds: Sequence[int], twin_seeds: Sequence[int], perturb_scale: float,
                      probe_names: Sequence[str], comparable: float, barrier_min: float) -> None:
    """Raise ConfigError unless every twin seed can be paired, trajectories exist, thresholds are in range."""
    check_fraction("comparable", comparable)
    if isinstance(barrier_min, bool) or not isinstance(barrier_min, (int, float)) or not 0 <= barrier_min < np.inf:
        raise ConfigError(f"invalid parameter barrier_min={barrier_min!r}: must be a finite number >= 0")

    check_subset("twin_seeds", twin_seeds, seeds)
    if len(seeds) < 2 * len(twin_seeds):
        raise ConfigError(f"invalid parameter twin_seeds={list(twin_seeds)!r}: every twin seed needs an "
                          f"independent partner among the other seeds, so seeds needs at least "
                          f"{2 * len(twin_seeds)} entries, not {len(seeds)}")
    if not (isinstance(perturb_scale, (int, float)) and 0 < perturb_scale < 1):
        raise ConfigError(f"invalid parameter perturb_scale={perturb_scale!r}: must be a number in (0, 1)")
    if "weights" not in probe_names:
        raise ConfigError(f"invalid parameter probes.names={list(probe_names)!r}: must include 'weights' "
                          "(the trajectories and final weights the study compares)")


def pca_verdicts(table: pd.DataFrame, *, top: int, margin: float, n_boot: int = 2000,
                 source: str = PCA_SOURCE) -> list[dict]:
    """Verdict rows for claim 12, two per window (``from_step``) of an explained-variance table.

    Rules fixed in advance: *most variance in the first few* holds when the 95% CI (bootstrap over
    runs) of the summed ratios of components 1..``top`` lies above 0.5, fails when below;
    *the ratios follow the random walk* holds when, for every component 1..``top``, the CI of
    ratio − reference (the finite-trajectory reference) lies within ±``margin``, and fails when
    one lies outside.
    """
    if table.empty:
        return [{"claim": f"Most variance lies in the first {top} principal components, as for a random walk",
                 "source": source, "measured": "no finished parent trajectories", "n": 0, "reproduced": NOT_TESTED}]
    sub = table[table["component"] <= top]
    cumulative = sub.groupby(["from_step", "run_id"], as_index=False)["ratio"].sum().rename(columns={"ratio": "value"})
    most = mean_ci(cumulative, ["from_step"], n_boot=n_boot).set_index("from_step")
    gap = mean_ci(sub.assign(value=sub["ratio"] - sub["random_walk"]), ["from_step", "component"], n_boot=n_boot)
    reference = sub.groupby(["from_step", "component"])["random_walk"].mean()
    rows = []
    for start, m in most.iterrows():
        window = "whole trajectory" if start == 0 else f"from step {start}"
        rows.append({"claim": f"Most variance lies in the first {top} principal components ({window})",
                     "source": source, "measured": f"sum of top-{top} ratios = {m['mean']:.3g} "
                     f"[{m['ci_low']:.3g}, {m['ci_high']:.3g}]", "n": int(m["n"]),
                     "reproduced": verdict_from_interval(m["ci_low"] - 0.5, m["ci_high"] - 0.5),
                     "power": _power(m, f"sum of top-{top} ratios", 0.5)})
        g = gap[gap["from_step"] == start]
        outcomes = [verdict_within(r.ci_low, r.ci_high, -margin, margin) for r in g.itertuples()]
        text = "; ".join(f"PC{r.component}: {r.mean + reference[(start, r.component)]:.3g} vs "
                         f"{reference[(start, r.component)]:.3g} (Δ [{r.ci_low:.2g}, {r.ci_high:.2g}])"
                         for r in g.itertuples())
        outcome = ("no" if "no" in outcomes else "yes" if set(outcomes) == {"yes"}
                   else NOT_TESTED if set(outcomes) <= {NOT_TESTED} else "inconclusive")
        rows.append({"claim": f"Explained-variance ratios follow the random walk, 6/(π²k²) in the limit "
                              f"({window})", "source": source, "measured": text,
                     "n": int(m["n"]), "reproduced": outcome,
                     "rule": f"yes when the CI of ratio − random walk lies within ±{margin:g} for every "
                             f"component 1..{top}, no when one lies outside"})
    return rows


def check_pca_parameters(from_steps: Sequence[int], snapshot_steps: Sequence[int], k: int, top: int,
                         margin: float) -> None:
    """Raise ConfigError unless the PCA windows and thresholds are usable.

    Every window (snapshots from a step on) needs more than ``k`` snapshots, 1 <= ``top`` <= ``k``
    and 0 < ``margin`` < 1.
    """
    for name, value, high in (("pca_components", k, len(snapshot_steps) - 1), ("pca_top", top, k)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ConfigError(f"invalid parameter {name}={value!r}: must be an integer in [1, {high}]")
    check_fraction("pca_margin", margin)
    if isinstance(from_steps, (str, bytes)) or not isinstance(from_steps, Sequence) or not from_steps:
        raise ConfigError(f"invalid parameter pca_from={from_steps!r}: must be a non-empty list of steps")
    for start in from_steps:
        left = sum(1 for s in snapshot_steps if s >= start) if isinstance(start, int) else 0
        if left <= k:
            raise ConfigError(f"invalid parameter pca_from={list(from_steps)!r}: the window from step "
                              f"{start!r} holds {left} snapshots; {k} components need at least {k + 1}")


def check_variance_factor(factor: float) -> None:
    """Raise ConfigError unless ``factor`` (the agreement band [1/factor, factor]) is a number > 1."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 < factor < np.inf:
        raise ConfigError(f"invalid parameter variance_factor={factor!r}: must be a finite number > 1")


def variance_table(correct: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """Observed against predicted between-seed variance by the chi-square and the bootstrap CI.

    Returns:
        Two rows of :data:`~analysis_lib.stats.seed_variance.VARIANCE_COLUMNS`; none when fewer
        than two parents finished (nothing to compare).
    """
    from ..stats.seed_variance import VARIANCE_COLUMNS, accuracy_variance

    if len(correct) < 2:
        return pd.DataFrame(columns=VARIANCE_COLUMNS)
    return pd.concat([accuracy_variance(correct, method=m, n_boot=n_boot) for m in ("chi2", "bootstrap")],
                     ignore_index=True)


def variance_verdict(result: pd.DataFrame, factor: float, source: str = CALIBRATED_CHAOS) -> dict:
    """Verdict row: is the between-seed variance what independent per-example outcomes predict?

    Rule fixed in advance: yes when the CI of observed / predicted lies within
    [1/``factor``, ``factor``], no when it lies outside, inconclusive otherwise.
    """
    claim = "Between-seed variance of test accuracy matches the binomial prediction from per-example correctness"
    rule = f"yes when the CI of observed / predicted lies within [1/{factor:g}, {factor:g}], no when outside"
    if result.empty:
        return {"claim": claim, "source": source, "measured": "fewer than two parents finished", "n": 0,
                "reproduced": NOT_TESTED, "rule": rule}
    r = result.iloc[0]
    outcome = verdict_within(r["ci_low"], r["ci_high"], 1.0 / factor, factor)
    sd = f"sd of accuracy {np.sqrt(r['observed_var']):.3g} observed vs {np.sqrt(r['predicted_var']):.3g} predicted"
    return {"claim": claim, "source": source,
            "measured": f"observed / predicted = {r['ratio']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}] "
                        f"({r['method']}; {sd})", "n": int(r["n_seeds"]),
            "reproduced": outcome, "rule": rule,
            "power": band_note(r["ratio"], r["ci_low"], r["ci_high"], r["n_seeds"], 1.0 / factor, factor)
            if outcome == "inconclusive" else ""}


TIMING_SOURCE = "Altıntaş et al. 2025 (claim 10)"
MATCHING_SOURCE = "Ainsworth et al. 2023 (Git Re-Basin)"
MATCHING_CLAIM = "Weight matching lowers the barrier between independent runs"


def verdict_rows(summary: pd.DataFrame, timing_tests: pd.DataFrame, matching_tests: pd.DataFrame,
                 variance: pd.DataFrame, pca: pd.DataFrame, *, comparable: float, barrier_min: float,
                 perturb_scale: float, variance_factor: float, pca_top: int, pca_margin: float,
                 n_boot: int) -> list[dict]:
    """Every verdict row of the study, in report order.

    Distances and barriers of later perturbations from paired differences against step 0
    (expected negative); matching from the paired difference on independent pairs (expected
    negative); then the variance and the trajectory rows.
    """
    timing = [verdict_row(f"Later perturbations leave twins closer: {row.metric} ({row.contrast})",
                          TIMING_SOURCE, row, f"Δ {row.metric}", "negative") for _, row in timing_tests.iterrows()]
    matching = [verdict_row(MATCHING_CLAIM, MATCHING_SOURCE, row, "Δ train-loss barrier", "negative")
                for _, row in matching_tests.iterrows() if "independent" in row.contrast]
    untested = {"measured": "no test could be computed (no finished pairs)", "n": 0, "reproduced": NOT_TESTED}
    return (apart_verdicts(summary, comparable=comparable, barrier_min=barrier_min, perturb_scale=perturb_scale,
                           n_boot=n_boot)
            + (timing or [{"claim": "Later perturbations leave twins closer", "source": TIMING_SOURCE, **untested}])
            + (matching or [{"claim": MATCHING_CLAIM, "source": MATCHING_SOURCE, **untested}])
            + [variance_verdict(variance.iloc[:1], variance_factor)]
            + pca_verdicts(pca, top=pca_top, margin=pca_margin, n_boot=n_boot))


# The bars of the study's claims a fair reader could set differently (no new training needed).
ALTERNATIVES = {"comparable": (0.3, 0.7), "barrier_min": (0.02, 0.1), "variance_factor": (1.5, 3.0),
                "pca_margin": (0.02, 0.1)}


def robust_verdict_rows(summary: pd.DataFrame, timing_tests: pd.DataFrame, matching_tests: pd.DataFrame,
                        variance: pd.DataFrame, pca: pd.DataFrame, *, comparable: float, barrier_min: float,
                        perturb_scale: float, variance_factor: float, pca_top: int, pca_margin: float,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` with each no / partly's robustness under :data:`ALTERNATIVES`, and the table."""
    def evaluate(setting: dict) -> list[dict]:
        return verdict_rows(summary, timing_tests, matching_tests, variance, pca, perturb_scale=perturb_scale,
                            pca_top=pca_top, n_boot=n_boot, **setting)

    protocol = {"comparable": comparable, "barrier_min": barrier_min, "variance_factor": variance_factor,
                "pca_margin": pca_margin}
    return decide(evaluate, with_alternatives(protocol, ALTERNATIVES), protocol)
