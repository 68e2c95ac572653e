"""Twin runs for the butterfly effect: which runs to compare, how far apart they end, and the barrier.

A *twin* is a run with the same seed (same initial weights, same data order) as its *parent*,
whose weights received one tiny Gaussian perturbation after ``train.perturb_step`` updates
(``train.perturb_scale`` × ‖θ‖, see :func:`analysis_lib.training.perturb_weights`). As a
reference, *independent* pairs join two parents of different seeds (different init and order).

Pair tables have :data:`PAIR_COLUMNS`: ``pair`` a label (``"twin, step 100"``, ``"independent"``),
``perturb_step`` (NaN for independent pairs), ``seed`` A's seed, and the run ids of A (the parent)
and B (the twin or the other parent). Reference: Altıntaş, Kwok, Raffel & Rolnick, "The Butterfly
Effect: Neural Network Training Trajectories Are Highly Sensitive to Initial Conditions", ICML 2025.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .interpolation import interpolation_barriers, interpolation_curve
from .trajectory import trajectory_distances

PAIR_COLUMNS = ["pair", "perturb_step", "seed", "run_id", "run_id_b"]


def twin_label(step: int) -> str:
    """``"twin, step 100"``: the pair label of twins perturbed after ``step`` updates."""
    return f"twin, step {int(step)}"


def twin_pairs(runs: pd.DataFrame, *, parent_arm: str = "parent", twin_arm: str = "twin") -> pd.DataFrame:
    """Every twin with its parent, and one independent pair per twin seed.

    Args:
        runs: ``GridResult.runs`` with columns ``run_id, arm, perturb_step, seed, status``.
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


def pair_distances(pairs: pd.DataFrame, trajectories: Mapping[str, Mapping[str, torch.Tensor]],
                   layers: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Distance between the two runs of every pair over training, as a tidy table.

    Args:
        pairs: from :func:`twin_pairs`.
        trajectories: run id -> ``trajectory`` checkpoint (``steps``, ``weights``).
        layers: from :func:`analysis_lib.trajectory.layer_sizes`, for per-layer rows.

    Returns:
        Pair columns plus ``step, layer, metric, value`` with metrics ``distance``
        (‖θ_A(t) − θ_B(t)‖) and ``relative_distance`` (divided by ‖θ_A(t)‖).
    """
    frames = []
    for pair in pairs.itertuples(index=False):
        dist = trajectory_distances(trajectories[pair.run_id], trajectories[pair.run_id_b], layers)
        long = dist.melt(id_vars=["step", "layer"], var_name="metric", value_name="value")
        frames.append(long.assign(**pair._asdict()))
    columns = [*PAIR_COLUMNS, "step", "layer", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def pair_interpolations(pairs: pd.DataFrame, states: Mapping[str, Mapping[str, torch.Tensor]],
                        model: nn.Module, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *,
                        alphas: Sequence[float] | None = None, matching: Sequence[bool] = (False, True),
                        **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interpolation curves and barriers between the final weights of every pair.

    Args:
        pairs: from :func:`twin_pairs`.
        states: run id -> final state dict.
        model: the architecture; splits, alphas: as in :func:`analysis_lib.interpolation.interpolation_curve`.
        matching: which of without (False) / with (True) weight matching to compute.
        kwargs: passed on to ``interpolation_curve`` (``batchnorm``, ``match_seed``, ...).

    Returns:
        (curves, barriers): the interpolation schema and the barrier table, each with the pair
        columns ``pair, perturb_step, seed`` added.
    """
    curves = []
    for pair in pairs.itertuples(index=False):
        for match in matching:
            curve = interpolation_curve(model, states[pair.run_id], states[pair.run_id_b], splits,
                                        alphas=alphas, match=match, run_ids=(pair.run_id, pair.run_id_b), **kwargs)
            curves.append(curve)
    curves = pd.concat(curves, ignore_index=True)
    labels = pairs.drop_duplicates(["run_id", "run_id_b"])
    barriers = interpolation_barriers(curves).merge(labels, on=["run_id", "run_id_b"])
    curves = curves.merge(labels, on=["run_id", "run_id_b"])
    return curves, barriers


def pair_summary(distances: pd.DataFrame, barriers: pd.DataFrame, *, split: str = "train",
                 metric: str = "loss") -> pd.DataFrame:
    """One row per pair and quantity at the end of training, tidy for :mod:`analysis_lib.stats`.

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
                   n_boot: int = 2000,
                   source: str = "Altıntaş et al. 2025, the butterfly effect (claim 10)") -> list[dict]:
    """Verdict rows: do twins perturbed at step 0 end as far apart as independent runs, with a barrier?

    Rules fixed in advance: *apart* holds when the 95% CI (bootstrap over seeds) of the ratio of a
    step-0 twin pair's final distance to its seed's independent pair's lies above ``comparable``
    (fails below); *barrier* holds when the CI of the step-0 twins' barrier (without matching) lies
    above ``barrier_min`` (fails below). ``perturb_scale`` (the twins' initial relative distance)
    is quoted beside the final distances.
    """
    from .effects import mean_ci
    from .verdicts import verdict_from_interval

    s = summary[~summary["matched"]].pivot_table(index="seed", columns=["metric", "pair"], values="value")
    label = twin_label(0)
    ratio = (s[("relative_distance", label)] / s[("relative_distance", "independent")]).dropna()
    r = mean_ci(pd.DataFrame({"g": 0, "value": ratio}), ["g"], n_boot=n_boot).iloc[0]
    b = mean_ci(pd.DataFrame({"g": 0, "value": s[("barrier", label)].dropna()}), ["g"], n_boot=n_boot).iloc[0]
    grown = (f"relative distance {perturb_scale:.2g} at the perturbation, {s[('relative_distance', label)].mean():.3g} "
             f"at the end vs {s[('relative_distance', 'independent')].mean():.3g} for independent runs")
    return [{"claim": "A tiny perturbation at initialisation sends the twins as far apart as independent runs",
             "source": source, "measured": f"twin / independent final distance = {r['mean']:.3g} "
             f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}] (rule: above {comparable:g}; {grown})", "n": int(r["n"]),
             "reproduced": verdict_from_interval(r["ci_low"] - comparable, r["ci_high"] - comparable)},
            {"claim": "... into a different minimum, with a loss barrier between the twins", "source": source,
             "measured": f"train-loss barrier = {b['mean']:.3g} [{b['ci_low']:.3g}, {b['ci_high']:.3g}] nats "
             f"(rule: above {barrier_min:g})", "n": int(b["n"]),
             "reproduced": verdict_from_interval(b["ci_low"] - barrier_min, b["ci_high"] - barrier_min)}]


def check_twin_design(seeds: Sequence[int], twin_seeds: Sequence[int], perturb_scale: float,
                      probe_names: Sequence[str], comparable: float, barrier_min: float) -> None:
    """Raise ConfigError unless the study can pair every twin seed, has trajectories to compare
    and its thresholds are in range."""
    from .config import ConfigError, check_fraction, check_subset

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
