"""Tests of study 10's claim-18 protocol (analysis_lib.studies.weights_and_phases) on hand-made runs and tables.

A hand-made run whose alignment level crosses the threshold at a known step gives the time to alignment, the
early flag, the loss ratio there, the final stable rank and a 1/t slope computed here by hand (a loss c/t^a gives
slope -a exactly); the scaling fit recovers a known slope from synthetic times; the verdict rules and the
parameter checks follow the rules fixed in advance; with no data every row is "not tested".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib.runs.grid import expand_grid
from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies import weights_and_phases as study
from analysis_lib.validation import ConfigError

LR = 0.05
STEPS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
LEVEL = [0.1, 0.1, 0.2, 0.4, 0.7, 0.85, 0.93, 0.99, 1.0, 1.0, 1.0]  # first >= 0.9 at step 50
PROTOCOL = dict(threshold=0.9, fraction=0.75, early_loss=0.9, tail=0.1)


def _loss(step: int, exponent: float = 1.0) -> float:
    return math.log(2) if step < 50 else 0.69 * (50 / step) ** exponent  # flat, then c / t^a


def _run(rid: str, *, level=LEVEL, exponent: float = 1.0, rank: float = 1.2, arm: str = "scales",
         init_scale: float = 1e-3, n_train: int = 200, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    rows = [(s, "fc1", "alignment_f75", v) for s, v in zip(STEPS, level)]
    rows += [(s, "fc1", "alignment_mean", v) for s, v in zip(STEPS, level)]
    rows += [(s, "fc1", "stable_rank", 5.0 if s == 0 else rank) for s in STEPS]
    rows += [(s, "model", "train_loss", _loss(s, exponent)) for s in STEPS]
    df = pd.DataFrame(rows, columns=["step", "layer", "metric", "value"])
    for i, (name, value) in enumerate({"run_id": rid, "arm": arm, "init_scale": init_scale, "n_train": n_train,
                                       "noise": noise, "seed": seed}.items()):
        df.insert(i, name, value)
    return df


def test_a_run_that_aligns_early():
    out = study.run_alignment(_run("a"), LR, **PROTOCOL)
    assert out["aligned"] == 1.0 and out["align_step"] == 50.0 and out["align_time"] == pytest.approx(50 * LR)
    assert out["loss_at_align"] == pytest.approx(0.69 / math.log(2))  # 0.995 >= 0.9: early
    assert out["early"] == 1.0
    assert out["final_stable_rank"] == 1.2 and out["final_alignment"] == 1.0
    assert out["loss_slope"] == pytest.approx(-1.0, abs=1e-12)  # steps >= 100: exactly 1/t


def test_the_slope_of_a_power_law_loss_and_a_late_alignment():
    out = study.run_alignment(_run("b", exponent=2.0), LR, **{**PROTOCOL, "early_loss": 0.999})
    assert out["loss_slope"] == pytest.approx(-2.0, abs=1e-12)
    assert out["early"] == 0.0  # 0.995 L(0) < 0.999 L(0): the loss had started to fall
    never = study.run_alignment(_run("c", level=[0.5] * len(STEPS)), LR, **PROTOCOL)
    assert never["aligned"] == 0.0 and never["early"] == 0.0 and math.isnan(never["align_time"])
    loss = pd.Series([1.0, 0.5, 0.25], index=[0, 10, 20])
    assert math.isnan(study.loss_slope(loss, 0.1))  # two usable points only (step 0 is left out)


def test_alignment_table_reads_the_learning_rate_per_run():
    metrics = pd.concat([_run("a"), _run("b", seed=1)])
    table = study.alignment_table(metrics, {"a": LR, "b": 2 * LR}, **PROTOCOL)
    times = table[table["metric"] == "align_time"].set_index("run_id")["value"]
    assert times["a"] == pytest.approx(50 * LR) and times["b"] == pytest.approx(100 * LR)
    assert set(table["metric"]) == set(study.RUN_METRICS) and (table["layer"] == "fc1").all()


def _sweep_summary(slope: float, intercept: float, noise_sd: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    separation = pd.DataFrame({"n_train": [50, 200, 800], "noise": [0.05, 0.05, 0.1], "mu": [0.6, 0.4, 0.1]})
    separation["log_n_over_sqrt_mu"] = np.log(separation["n_train"]) / np.sqrt(separation["mu"])
    rows = []
    for seed in range(4):
        for r in separation.itertuples():
            value = intercept + slope * r.log_n_over_sqrt_mu + noise_sd * rng.standard_normal()
            rows.append({"run_id": f"{seed}-{r.n_train}", "arm": "sweep", "init_scale": 1e-3, "n_train": r.n_train,
                         "noise": r.noise, "seed": seed, "layer": "fc1", "metric": "align_time", "value": value})
    return pd.DataFrame(rows), separation


def test_the_scaling_fit_recovers_a_known_slope():
    summary, separation = _sweep_summary(0.5, 2.0)
    fit = study.scaling_fit(summary, separation, n_boot=200)
    assert fit["slope"] == pytest.approx(0.5, abs=1e-10) and fit["intercept"] == pytest.approx(2.0, abs=1e-9)
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == 12 and fit["n_datasets"] == 3
    assert fit["ci_low"] == pytest.approx(0.5, abs=1e-9) and fit["ci_high"] == pytest.approx(0.5, abs=1e-9)
    assert fit["exponent"] == pytest.approx(np.polyfit(np.log(np.tile(separation["log_n_over_sqrt_mu"], 4)),
                                                       np.log(summary["value"]), 1)[0], abs=1e-12)
    proportional = study.scaling_fit(*_sweep_summary(0.5, 0.0), n_boot=20)
    assert proportional["exponent"] == pytest.approx(1.0, abs=1e-12)
    noisy = study.scaling_fit(*_sweep_summary(0.5, 2.0, noise_sd=0.3), n_boot=500)
    x = np.log(separation["n_train"]) / np.sqrt(separation["mu"])
    s, _ = _sweep_summary(0.5, 2.0, noise_sd=0.3)
    assert noisy["slope"] == pytest.approx(np.polyfit(np.tile(x, 4), s["value"], 1)[0], abs=1e-12)
    assert noisy["ci_low"] < noisy["slope"] < noisy["ci_high"]


def _summary_rows(n_seeds: int = 3, *, scale_early=(1.0, 1.0, 1.0), slope: float = -1.1, rank: float = 1.1):
    rows = []
    for seed in range(n_seeds):
        for scale, values in ((1e-3, {"early": scale_early[seed], "loss_slope": slope + 0.01 * seed,
                                      "final_stable_rank": rank + 0.01 * seed}),
                              (1.0, {"early": 0.0, "loss_slope": -1.0, "final_stable_rank": 6.0 + seed})):
            for metric, value in values.items():
                rows.append({"run_id": f"{scale}-{seed}", "arm": "scales", "init_scale": scale, "n_train": 200,
                             "noise": 0.05, "seed": seed, "layer": "fc1", "metric": metric, "value": value})
    return pd.DataFrame(rows)


RULES = dict(threshold=0.9, fraction=0.75, early_loss=0.9, slope_margin=0.25, low_rank=2.0, reference_scale=1.0,
             n_boot=200)


def _verdicts(summary, scaling=None, **rules):
    scaling = scaling or {"slope": 0.4, "ci_low": 0.1, "ci_high": 0.7, "r2": 0.8, "n": 9, "n_missing": 0,
                          "n_datasets": 3, "intercept": 1.0}
    tests = study.stable_rank_tests(summary, reference_scale=1.0, n_boot=200)
    rows = study.verdict_rows(summary, scaling, tests, init_scales=[1e-3, 1.0], **{**RULES, **rules})
    return {r["claim"].split(" (")[0] if r["claim"].startswith("...") else r["claim"]: r for r in rows}


def test_verdict_rows_follow_the_rules():
    rows = _verdicts(_summary_rows())
    early = rows["With init scale 0.001, the first-layer neurons align early with x̄₊ or x̄₋"]
    assert early["reproduced"] == "yes" and early["n"] == 3  # one row per small scale, not for the reference
    assert rows["... within a time growing like log n / √μ"]["reproduced"] == "yes"
    assert rows["... then the loss falls at the rate 1/t or faster"]["reproduced"] == "yes"  # CI <= -0.75
    assert rows["... and the first layer ends approximately low-rank"]["reproduced"] == "yes"
    lower = [r for c, r in rows.items() if c.startswith("Small init")]
    assert len(lower) == 1 and lower[0]["reproduced"] == "yes"  # about -5.9, paired by seed
    partly = _verdicts(_summary_rows(scale_early=(1.0, 0.0, 1.0), slope=-0.5, rank=3.0))
    assert partly["With init scale 0.001, the first-layer neurons align early with x̄₊ or x̄₋"]["reproduced"] == "partly"
    assert partly["... then the loss falls at the rate 1/t or faster"]["reproduced"] == "no"  # slower than 1/t
    assert partly["... and the first layer ends approximately low-rank"]["reproduced"] == "no"


@pytest.mark.parametrize("ci, outcome", [((-0.2, -0.1), "no"), ((-0.1, 0.2), "inconclusive")])
def test_the_scaling_verdict_reads_the_slope_interval(ci, outcome):
    scaling = {"slope": sum(ci) / 2, "ci_low": ci[0], "ci_high": ci[1], "r2": 0.1, "n": 9, "n_missing": 1,
               "n_datasets": 3, "intercept": 1.0}
    row = _verdicts(_summary_rows(), scaling)["... within a time growing like log n / √μ"]
    assert row["reproduced"] == outcome and "1 runs never aligned" in row["measured"]


def test_without_data_every_row_is_not_tested():
    empty = pd.DataFrame(columns=[*study.SUMMARY_COLUMNS, "layer", "metric", "value"])
    scaling = study.scaling_fit(empty, pd.DataFrame(columns=["n_train", "noise", "mu", "log_n_over_sqrt_mu"]),
                                n_boot=10)
    tests = study.stable_rank_tests(empty, reference_scale=1.0, n_boot=10)
    rows = study.verdict_rows(empty, scaling, tests, init_scales=[1e-4, 1e-2, 1.0], **RULES)
    assert len(rows) == 2 * 3 + 1  # early, 1/t and low rank for each small scale, and the scaling row
    table = verdict_table(rows, runs={"finished": 0, "diverged": 9, "failed": 0})
    assert set(table["reproduced"]) == {"not tested"}


BASE = {"data": {"name": "gaussian_mixture", "n_classes": 2, "n_features": 10, "noise": 0.05, "n_train": 60,
                 "n_test": 20},
        "model": {"kind": "mlp", "depth": 1, "width": 8, "init_scale": 1e-3},
        "train": {"optimizer": "sgd", "lr": 0.05, "batch_size": 0, "steps": 10},
        "probes": {"names": ["eval", "neuron_alignment", "weight_spectra"], "schedule": "log", "points": 5}}
ARMS = {"scales": {"model.init_scale": [1e-3, 1.0]}, "sweep": {"data.n_train": [40, 60]}}
CHECKS = dict(threshold=0.9, fraction=0.75, early_loss=0.9, tail=0.1, slope_margin=0.25, low_rank=2.0,
              reference_scale=1.0, n_boot=100)


def _check(base=BASE, arms=ARMS, **overrides):
    configs = expand_grid(base, arms, [0])
    return study.check_parameters(configs, arms, **{**CHECKS, **overrides})


def test_good_parameters_pass_and_give_the_separation_of_each_dataset():
    separation = _check()
    assert sorted(separation["n_train"]) == [40, 60] and (separation["mu"] > 0).all()
    row = separation.iloc[0]
    assert row["log_n_over_sqrt_mu"] == pytest.approx(math.log(row["n_train"]) / math.sqrt(row["mu"]))


@pytest.mark.parametrize("change, name", [
    ({"fraction": 0.6}, "fraction"),
    ({"threshold": 1.0}, "threshold"),
    ({"early_loss": 0.0}, "early_loss"),
    ({"tail": 1.5}, "tail"),
    ({"slope_margin": 0.0}, "slope_margin"),
    ({"low_rank": 0.5}, "low_rank"),
    ({"reference_scale": 0.5}, "reference_scale"),
    ({"n_boot": 0}, "n_boot"),
    ({"arms": {"scales": ARMS["scales"]}}, "arms"),
    ({"arms": {**ARMS, "sweep": {"model.width": [4]}}}, "arms.sweep"),
    ({"arms": {**ARMS, "scales": {"model.width": [4, 8]}}}, "arms.scales"),
    ({"arms": {**ARMS, "scales": {"model.init_scale": [1e-3, 1.0], "train.lr": [0.1]}}}, "arms.scales"),
    ({"arms": {**ARMS, "sweep": {"data.n_train": [40, 60], "data.n_features": [5, 10]}}}, "arms.sweep"),
    ({"base": {**BASE, "model": {**BASE["model"], "depth": 2}}}, "model.depth"),
    ({"base": {**BASE, "data": {**BASE["data"], "n_classes": 3}}}, "data.n_classes"),
    ({"base": {**BASE, "probes": {**BASE["probes"], "names": ["eval"]}}}, "probes.names"),
    ({"base": {**BASE, "data": {**BASE["data"], "noise": 1.0}}}, "data.noise"),  # overlapping clusters: mu <= 0
])
def test_bad_parameters_are_refused_by_name(change, name):
    kwargs = dict(change)
    base, arms = kwargs.pop("base", BASE), kwargs.pop("arms", ARMS)
    with pytest.raises(ConfigError, match=name):
        _check(base, arms, **kwargs)


@pytest.mark.parametrize("one_x_per_seed", [False, True])
def test_the_scaling_bootstrap_equals_refitting_each_resample(one_x_per_seed):
    """Closed-form bootstrap slopes equal np.polyfit on each pooled resample (same draws); degenerate ones dropped."""
    rng = np.random.default_rng(1)
    xs = [[1.0 + s] for s in range(4)] if one_x_per_seed else [[1.0, 2.0, 3.5]] * 5
    table = pd.DataFrame([{"seed": s, "log_n_over_sqrt_mu": x, "value": 0.3 * x + rng.normal()}
                          for s, row in enumerate(xs) for x in row])
    seeds = table["seed"].unique()
    draws = np.random.default_rng(0).choice(len(seeds), size=(300, len(seeds)))
    expected = []
    for row in draws:
        sample = pd.concat([table[table["seed"] == seeds[i]] for i in row])
        if sample["log_n_over_sqrt_mu"].nunique() > 1:
            expected.append(np.polyfit(sample["log_n_over_sqrt_mu"], sample["value"], 1)[0])
    got = study._bootstrap_slopes(table, seeds, 300, 0)
    assert len(got) == len(expected) and (len(expected) < 300) == one_x_per_seed
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
