"""Study 06 (run-to-run variance): twin grid, pairing, pair summary, verdict rules and parameter checks.

The twin grid and its pairs on a tiny trained grid, the end-of-training pair summary, and the rules and checks
of the twins (claim 10), the accuracy variance (claim 11) and the trajectory PCA (claim 12), each check naming
the parameter it refuses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from analysis_lib.stats.seed_variance import accuracy_variance
from analysis_lib.studies.run_to_run import (
    PAIR_COLUMNS,
    apart_verdicts,
    check_parameters,
    check_pca_parameters,
    check_twin_design,
    check_variance_factor,
    pair_summary,
    pca_verdicts,
    twin_grid,
    twin_pairs,
    variance_verdict,
)
from analysis_lib.trajectories.pca import explained_variance_table
from analysis_lib.validation import ConfigError
from tests.cases import TWIN_BASE, TWIN_SCALE, random_walk

STUDY = dict(seeds=[0, 1, 2, 3], twin_seeds=[0, 1], perturb_scale=TWIN_SCALE, comparable=0.5, barrier_min=0.05,
             batchnorm="recompute", alphas=11, pca_from=[0, 10], pca_components=3, pca_top=2, pca_margin=0.05,
             variance_factor=2.0, n_boot=200)


# --------------------------------------------------------------------------------------------
# Claim 10: twins.

def test_twin_grid_has_parents_and_perturbed_twins():
    configs = twin_grid(TWIN_BASE, [0, 1, 2, 3], [1, 3], [0, 10], TWIN_SCALE, 7)
    parents = [c for c in configs if c.label("arm") == "parent"]
    twins = [c for c in configs if c.label("arm") == "twin"]
    assert len(configs) == 4 + 2 * 2 and len(parents) + len(twins) == len(configs)
    assert [c.seed for c in parents] == [0, 1, 2, 3]
    assert all(c.train.perturb_scale == 0.0 and c.train.perturb_step == 0 for c in parents)
    assert sorted((c.train.perturb_step, c.seed) for c in twins) == [(0, 1), (0, 3), (10, 1), (10, 3)]
    assert all(c.train.perturb_scale == TWIN_SCALE and c.train.perturb_seed == 7 for c in twins)
    assert all(c.label("perturb_step") == c.train.perturb_step for c in configs)
    # A twin is its parent's run but for the perturbation: same data, model, optimiser and seed.
    by_seed = {c.seed: c for c in parents}
    for twin in twins:
        unperturbed = dataclasses.replace(twin.train, perturb_step=0, perturb_scale=0.0, perturb_seed=0)
        parent = by_seed[twin.seed]
        assert (twin.data, twin.model, twin.probes, unperturbed) == (parent.data, parent.model, parent.probes,
                                                                     parent.train)


def test_pairs(twin_runs):
    pairs = twin_pairs(twin_runs.runs)
    assert list(pairs.columns) == PAIR_COLUMNS and len(pairs) == 6
    runs = twin_runs.runs.set_index("run_id")
    indep = pairs[pairs["pair"] == "independent"]
    assert [(runs.loc[r.run_id, "seed"], runs.loc[r.run_id_b, "seed"]) for r in indep.itertuples()] == [(0, 2), (1, 3)]
    twins = pairs[pairs["pair"] != "independent"]
    assert (runs.loc[twins["run_id"], "arm"] == "parent").all() and (runs.loc[twins["run_id_b"], "arm"] == "twin").all()
    assert (runs.loc[twins["run_id"], "seed"].to_numpy() == runs.loc[twins["run_id_b"], "seed"].to_numpy()).all()
    # A twin whose run did not finish has no pair.
    broken = twin_runs.runs.assign(status=np.where(twin_runs.runs["run_id"] == twins["run_id_b"].iloc[0], "diverged",
                                              twin_runs.runs["status"]))
    assert len(twin_pairs(broken)) == 5


def test_pair_summary_takes_the_last_common_step_and_the_chosen_barrier():
    pairs = [("twin, step 0", 0.0, 0), ("independent", np.nan, 0)]
    distances = pd.DataFrame([{"pair": p, "perturb_step": s, "seed": seed, "step": step, "layer": layer,
                               "metric": metric, "value": 100 * i + step + (0.5 if metric == "distance" else 0)
                               + (1000 if layer == "fc1" else 0)}
                              for i, (p, s, seed) in enumerate(pairs) for step in (0, 10, 20 + 10 * i)
                              for layer in ("model", "fc1") for metric in ("distance", "relative_distance")])
    barriers = pd.DataFrame([{"pair": p, "perturb_step": s, "seed": seed, "matched": matched, "split": split,
                              "metric": metric, "barrier": 10 * i + matched + (0.25 if split == "test" else 0)
                              + (0.5 if metric == "acc" else 0)}
                             for i, (p, s, seed) in enumerate(pairs) for matched in (False, True)
                             for split in ("train", "test") for metric in ("loss", "acc")])
    summary = pair_summary(distances, barriers)
    assert list(summary.columns) == ["pair", "perturb_step", "seed", "matched", "layer", "metric", "value"]
    assert (summary["layer"] == "model").all()
    dist = summary[summary["metric"] == "relative_distance"].set_index("pair")
    assert len(dist) == 2 and not dist["matched"].any()
    assert dist.loc["twin, step 0", "value"] == 20 and dist.loc["independent", "value"] == 100 + 30
    bar = summary[summary["metric"] == "barrier"].set_index(["pair", "matched"])["value"]
    assert bar.to_dict() == {("twin, step 0", False): 0, ("twin, step 0", True): 1,
                             ("independent", False): 10, ("independent", True): 11}
    test_acc = pair_summary(distances, barriers, split="test", metric="acc")
    assert test_acc.loc[test_acc["metric"] == "barrier", "value"].tolist() == [0.75, 1.75, 10.75, 11.75]


def _summary(twin_distance: float, barrier: float) -> pd.DataFrame:
    """A pair summary of five seeds: step-0 twins at ``twin_distance``, independent pairs at 1.4."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        for pair, dist, bar in (("twin, step 0", twin_distance, barrier), ("independent", 1.4, 2.0)):
            rows += [{"pair": pair, "seed": seed, "matched": False, "metric": "relative_distance",
                      "value": dist * (1 + 0.02 * rng.standard_normal())},
                     {"pair": pair, "seed": seed, "matched": False, "metric": "barrier",
                      "value": bar * (1 + 0.02 * rng.standard_normal())}]
    return pd.DataFrame(rows)


def test_apart_verdicts_follow_the_rules():
    near = apart_verdicts(_summary(0.3, 0.001), comparable=0.5, barrier_min=0.05, perturb_scale=1e-4, n_boot=200)
    assert [r["reproduced"] for r in near] == ["no", "no"] and near[0]["n"] == 5
    assert "0.0001 at the perturbation" in near[0]["measured"] and "= 0.21" in near[0]["measured"]
    far = apart_verdicts(_summary(1.3, 0.5), comparable=0.5, barrier_min=0.05, perturb_scale=1e-4, n_boot=200)
    assert [r["reproduced"] for r in far] == ["yes", "yes"]


def test_twin_design_is_checked():
    check_twin_design([0, 1, 2, 3], [0, 1], 1e-4, ["weights"], 0.5, 0.05)
    for args, name in [(([0, 1, 2], [0, 1], 1e-4, ["weights"], 0.5, 0.05), "twin_seeds"),
                       (([0, 1, 2, 3], [0], 0.0, ["weights"], 0.5, 0.05), "perturb_scale"),
                       (([0, 1, 2, 3], [0], 1e-4, ["eval"], 0.5, 0.05), "probes.names"),
                       (([0, 1, 2, 3], [0], 1e-4, ["weights"], 1.5, 0.05), "comparable"),
                       (([0, 1, 2, 3], [0], 1e-4, ["weights"], 0.5, -1.0), "barrier_min")]:
        with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
            check_twin_design(*args)


def test_check_parameters_refuses_models_weight_matching_does_not_support():
    configs = twin_grid(TWIN_BASE, [0, 1, 2, 3], [0, 1], [0, 10], TWIN_SCALE, 0)
    check_parameters(configs, **STUDY)
    cnn = twin_grid({**TWIN_BASE, "model": {"kind": "cnn", "depth": 2, "width": 3}}, [0, 1, 2, 3], [0, 1], [0, 10],
                    TWIN_SCALE, 0)
    with pytest.raises(ConfigError, match="invalid parameter model.kind='cnn'"):
        check_parameters(cnn, **STUDY)
    for name, value in [("batchnorm", "mean"), ("alphas", 1), ("pca_from", [0, 30]), ("variance_factor", 1.0),
                        ("n_boot", 0)]:
        with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
            check_parameters(configs, **{**STUDY, name: value})


# --------------------------------------------------------------------------------------------
# Claim 11: accuracy variance.

def _bernoulli(p: np.ndarray, k: int, rng: np.random.Generator, shift: np.ndarray | None = None) -> np.ndarray:
    """(k, n) outcomes, independent over runs and examples; ``shift`` (k,) moves whole runs."""
    prob = np.clip(p[None, :] + (0.0 if shift is None else shift[:, None]), 0.0, 1.0)
    return (rng.random((k, len(p))) < prob).astype(np.float64)


def test_variance_verdict_reads_the_interval():
    rng = np.random.default_rng(6)
    independent = accuracy_variance(_bernoulli(rng.beta(0.5, 0.5, size=400), 400, rng))
    assert variance_verdict(independent, 2.0)["reproduced"] == "yes"
    shifted = accuracy_variance(_bernoulli(rng.uniform(0.2, 0.8, 400), 400, rng, rng.choice([-0.1, 0.1], 400)))
    assert variance_verdict(shifted, 2.0)["reproduced"] == "no"
    few = accuracy_variance(_bernoulli(rng.beta(0.5, 0.5, size=400), 4, rng))
    assert variance_verdict(few, 2.0)["reproduced"] == "inconclusive" and variance_verdict(few, 2.0)["n"] == 4
    for bad in (1.0, 0.5, float("inf"), True):
        with pytest.raises(ConfigError, match="variance_factor"):
            check_variance_factor(bad)


# --------------------------------------------------------------------------------------------
# Claim 12: trajectory PCA.

def test_pca_verdicts_follow_the_rules():
    steps = np.arange(0, 31) * 50
    walks = {f"w{s}": {"steps": torch.as_tensor(steps), "weights": random_walk(steps, 20_000, s)} for s in range(3)}
    rows = pca_verdicts(explained_variance_table(walks, 4), top=3, margin=0.05, n_boot=200)
    assert [r["reproduced"] for r in rows] == ["yes", "yes"] and rows[0]["n"] == 3
    # A straight drift plus a little noise puts nearly everything in PC1: not a random walk.
    gen = torch.Generator().manual_seed(0)
    drift = {f"d{s}": {"steps": torch.as_tensor(steps),
                       "weights": torch.as_tensor(steps, dtype=torch.float64)[:, None]
                       * torch.ones(1, 500, dtype=torch.float64)
                       + torch.randn(31, 500, generator=gen, dtype=torch.float64)} for s in range(3)}
    rows = pca_verdicts(explained_variance_table(drift, 4, from_steps=[0, 500]), top=3, margin=0.05, n_boot=200)
    assert [r["reproduced"] for r in rows] == ["yes", "no", "yes", "no"]
    assert "from step 500" in rows[2]["claim"]


def test_pca_parameters_are_checked():
    check_pca_parameters([0, 50], list(range(0, 101, 10)), 4, 3, 0.05)
    for args, name in [(([0, 70], 4, 3, 0.05), "pca_from"), (([0], 4, 5, 0.05), "pca_top"),
                       (([0], 11, 3, 0.05), "pca_components"), (([0], 4, 3, 0.0), "pca_margin")]:
        with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
            check_pca_parameters(args[0], list(range(0, 101, 10)), *args[1:])
