"""Tests of study 09's protocol (analysis_lib.studies.sharpness_generalisation) on hand-made tables and tiny runs.

The rule "flatness and generalisation come apart" on every combination that decides it; verdict rows read off a
hand-made test table; SAM − SGD differences against scipy's paired t-test and a hand-written Holm adjustment per
family; measure tables pick the measuring radius; per-seed differences by hand; the cached battery equals
sharpness_battery on the stored final weights; claim 8's rule on a hand-made table, its per-run changes by hand, re
against the exact Hessian's eigenvalues (float64) and the shifted accuracy; parameter checks name the parameter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib.curvature.sharpness import sharpness_battery
from analysis_lib.runs.execute import run_grid
from analysis_lib.stats.results import RESULT_COLUMNS, result_table
from analysis_lib.studies import sharpness_generalisation as study
from analysis_lib.studies.sharpness_generalisation import measures as measures_mod
from analysis_lib.studies.sharpness_generalisation import shift, verdicts
from analysis_lib.training.problem import final_models
from analysis_lib.validation import ConfigError

NAMES = study.measure_names(3)
BASE = {"data": {"n_train": 40, "n_test": 30, "n_features": 4}, "model": {"kind": "mlp", "depth": 1, "width": 6},
        "train": {"lr": 0.1, "batch_size": 10, "steps": 15}, "probes": {"names": ["eval", "weights"], "every": 5}}
SCENARIOS = {"xor": {"name": "xor", "noise": 0.5}, "mix": {"name": "gaussian_mixture", "n_classes": 2}}


@pytest.mark.parametrize("error, measures, expected", [
    ("yes", ["yes", "no", "yes"], "yes"),  # better test error, measurably sharper by one measure
    ("no", ["inconclusive", "yes"], "yes"),  # flatter by one measure, measurably worse test error
    ("yes", ["yes", "yes"], "no"),  # moved together, every side decided
    ("no", ["no", "no"], "no"),
    ("yes", ["yes", "inconclusive"], "inconclusive"),  # an undecided measure demonstrates nothing
    ("inconclusive", ["no", "yes"], "inconclusive"),
    ("not tested", ["yes"], "not tested"),
    ("yes", ["not tested", "not tested"], "not tested"),
])
def test_apart_rule(error, measures, expected):
    assert verdicts.apart_verdict(error, measures) == expected


def _row(metric: str, scenario: str, estimate: float, low: float, high: float, p: float = 0.001) -> dict:
    return dict(metric=metric, layer="model", contrast=f"SAM ρ=0.05 - SGD [scenario={scenario}]", estimate=estimate,
                ci_low=low, ci_high=high, effect_size=1.0, statistic=3.0, pvalue=p, p_adj=p,
                method="paired t-test, holm", n=5)


def test_verdict_rows_follow_the_rules_on_a_hand_made_table():
    # scenario a: SAM better (CI below 0) and sharper by lambda_max (CI above 0): apart. Scenario b: everything
    # lower, decided: together.
    rows = [_row("test_error", "a", -0.05, -0.08, -0.02), _row("test_error", "b", -0.05, -0.08, -0.02)]
    rows += [_row(m, "a", 1.0, 0.5, 1.5) if m == "lambda_max" else _row(m, "a", -1.0, -1.5, -0.5) for m in NAMES]
    rows += [_row(m, "b", -1.0, -1.5, -0.5) for m in NAMES]
    out = verdicts.verdict_rows(result_table(rows), ["a", "b"], sam_rho=0.05, measure_rho=0.05, samples=64,
                                ascent_steps=3)
    by_claim = {r["claim"]: r for r in out}
    assert len(out) == 2 * (len(NAMES) + 2) + 1
    assert by_claim["SAM generalises better than SGD (lower test error) [a]"]["reproduced"] == "yes"
    assert by_claim["SAM reaches a flatter solution by lambda_max [a]"]["reproduced"] == "no"
    assert by_claim["SAM reaches a flatter solution by trace [a]"]["reproduced"] == "yes"
    assert by_claim["Flatness and generalisation come apart under SAM [a]"]["reproduced"] == "yes"
    assert "sharper by lambda_max" in by_claim["Flatness and generalisation come apart under SAM [a]"]["measured"]
    assert by_claim["Flatness and generalisation come apart under SAM [b]"]["reproduced"] == "no"
    assert out[-1]["reproduced"] == "yes" and out[-1]["n"] == 2
    # another radius has no rows: every row not tested
    none = verdicts.verdict_rows(result_table(rows), ["a"], sam_rho=0.1, measure_rho=0.05, samples=64, ascent_steps=3)
    assert {r["reproduced"] for r in none} == {"not tested"}


def _measures(values: dict[tuple[str, float], list[float]], metric: str = "test_error") -> pd.DataFrame:
    rows = []
    for (scenario, rho), vals in values.items():
        for seed, v in enumerate(vals):
            rows.append({"run_id": f"{scenario}-{rho}-{seed}", "scenario": scenario, "sam_rho": rho, "seed": seed,
                         "layer": "model", "metric": metric, "value": v})
    return pd.DataFrame(rows)


def test_differences_are_paired_t_tests_holm_adjusted_per_comparison():
    rng = np.random.default_rng(0)
    sgd = rng.normal(0.3, 0.05, 6)
    sam = {rho: sgd + rng.normal(-0.02 * k, 0.02, 6) for k, rho in enumerate([0.05, 0.1], start=1)}
    err = _measures({("s", 0.0): list(sgd), **{("s", r): list(v) for r, v in sam.items()}})
    lam = err.assign(metric="lambda_max", value=err["value"] * 10 + rng.normal(0, 0.1, len(err)))
    tests = verdicts.difference_tests(pd.concat([err, lam], ignore_index=True), n_boot=200)
    assert list(tests.columns) == list(RESULT_COLUMNS) and len(tests) == 4
    for rho in (0.05, 0.1):
        family = tests[tests["contrast"] == f"SAM ρ={rho:g} - SGD [scenario=s]"].set_index("metric")
        raw = []
        for metric, frame in (("test_error", err), ("lambda_max", lam)):
            t = frame[frame["sam_rho"] == rho].sort_values("seed")["value"].to_numpy()
            b = frame[frame["sam_rho"] == 0].sort_values("seed")["value"].to_numpy()
            assert family.loc[metric, "estimate"] == pytest.approx(np.mean(t - b), abs=1e-12)
            raw.append(sps.ttest_rel(t, b).pvalue)
            assert family.loc[metric, "pvalue"] == pytest.approx(raw[-1], rel=1e-9)
        order = np.argsort(raw)  # Holm over the two tests of this comparison only
        holm = np.empty(2)
        holm[order[0]] = min(1.0, 2 * raw[order[0]])
        holm[order[1]] = min(1.0, max(holm[order[0]], raw[order[1]]))
        np.testing.assert_allclose(family.loc[["test_error", "lambda_max"], "p_adj"], holm, rtol=1e-9)


def test_paired_differences_by_hand():
    err = _measures({("s", 0.0): [0.3, 0.4], ("s", 0.1): [0.25, 0.5]})
    diffs = verdicts.paired_differences(err).sort_values("seed")
    np.testing.assert_allclose(diffs["test_error"], [-0.05, 0.1], atol=1e-12)
    assert (diffs["sam_rho"] == 0.1).all()


def test_measure_table_picks_the_measuring_radius():
    battery = pd.DataFrame([
        {"run_id": "r", "seed": 0, "measure": "lambda_max", "rho": np.nan, "value": 5.0},
        {"run_id": "r", "seed": 0, "measure": "rho_sharpness_1step", "rho": 0.05, "value": 0.1},
        {"run_id": "r", "seed": 0, "measure": "rho_sharpness_1step", "rho": 0.1, "value": 0.4},
    ])
    runs = pd.DataFrame({"run_id": ["r"], "arm": ["xor"], "sam_rho": [0.05], "seed": [0]})
    errors = pd.DataFrame({"run_id": ["r"], "value": [0.2]})
    table = study.measure_table(battery, errors, runs, rho=0.1, ascent_steps=3).set_index("metric")
    assert table.loc["rho_sharpness_1step", "value"] == 0.4 and table.loc["lambda_max", "value"] == 5.0
    assert table.loc["test_error", "value"] == 0.2 and (table["scenario"] == "xor").all()


def test_cached_battery_equals_the_battery_on_the_final_weights(store_root):
    configs = study.build_configs(BASE, {"xor": SCENARIOS["xor"]}, [0.05], [0])
    result = run_grid(configs, store_root=store_root, progress=False)
    batteries = study.run_measures(result, rhos=[0.05], ascent_steps=3, n_directions=4, samples=[16], progress=False)
    table = batteries[16]
    assert set(table["measure"]) == set(NAMES) and set(table["sam_rho"]) == {0.0, 0.05}
    rid, config, model, problem = next(iter(final_models(result)))
    x, y = problem.splits["train"]
    direct = sharpness_battery(model, problem.loss_fn, (x[:16], y[:16]), rho=[0.05], steps=(1, 3), n_directions=4)
    got = table[table["run_id"] == rid].set_index("measure")["value"]
    assert got["lambda_max"] == pytest.approx(direct.loc[direct["measure"] == "lambda_max", "value"].item(), rel=1e-6)
    one_step = direct[(direct["measure"] == "rho_sharpness") & (direct["steps"] == 1)]["value"].item()
    assert got["rho_sharpness_1step"] == pytest.approx(one_step, rel=1e-6)
    errors = measures_mod.final_test_errors(result)
    accs = result.metrics[(result.metrics["metric"] == "test_acc") & (result.metrics["step"] == 15)]
    np.testing.assert_allclose(np.sort(errors["value"]), np.sort(1 - accs["value"].to_numpy()))
    again = study.run_measures(result, rhos=[0.05], ascent_steps=3, n_directions=4, samples=[16], progress=False)
    pd.testing.assert_frame_equal(again[16], table)  # read back from the store


def _check(configs, **overrides):
    kwargs = dict(sam_rhos=[0.05], verdict_rho=0.05, measure_rhos=[0.05], measure_rho=0.05, measure_samples=16,
                  sample_alternatives=[0], ascent_steps=3, n_directions=4, n_boot=10)
    study.check_parameters(configs, **{**kwargs, **overrides})


@pytest.mark.parametrize("overrides, name", [
    ({"verdict_rho": 0.1}, "verdict_rho"), ({"measure_rho": 0.2}, "measure_rho"),
    ({"measure_samples": 41}, "measure_samples"),
    ({"sample_alternatives": [-1]}, "sample_alternatives"), ({"ascent_steps": 1}, "ascent_steps"),
    ({"n_directions": 1}, "n_directions"), ({"measure_rhos": []}, "measure_rhos"), ({"n_boot": 0}, "n_boot"),
])
def test_bad_study_parameters_are_named(overrides, name):
    configs = study.build_configs(BASE, SCENARIOS, [0.05], [0])
    _check(configs)  # the defaults pass
    with pytest.raises(ConfigError, match=name):
        _check(configs, **overrides)


def test_grid_and_architecture_checks():
    configs = study.build_configs(BASE, SCENARIOS, [0.05, 0.1], [0, 1])
    assert len(configs) == 2 * 3 * 2
    assert {c.train.sam_rho for c in configs} == {0.0, 0.05, 0.1}
    assert {c.label("arm") for c in configs} == {"xor", "mix"}
    deep = study.build_configs({**BASE, "model": {"kind": "mlp", "depth": 2}}, SCENARIOS, [0.05], [0])
    with pytest.raises(ConfigError, match="model"):
        _check(deep)
    blind = study.build_configs({**BASE, "probes": {"names": ["eval"]}}, SCENARIOS, [0.05], [0])
    with pytest.raises(ConfigError, match="probes.names"):
        _check(blind)
    for bad, name in [({}, "scenarios"), ({"x": {"noise": 1.0}}, "scenarios.x")]:
        with pytest.raises(ConfigError, match=name):
            study.build_configs(BASE, bad, [0.05], [0])
    with pytest.raises(ConfigError, match="sam_rhos"):
        study.build_configs(BASE, SCENARIOS, [0.05, -0.1], [0])


def _shift_row(scenario: str, criterion: str, low: float, high: float) -> dict:
    return dict(metric=criterion, layer="model", contrast=f"τ({criterion}, test_acc) [scenario={scenario}]",
                estimate=(low + high) / 2, ci_low=low, ci_high=high, effect_size=np.nan, statistic=np.nan,
                pvalue=0.01, p_adj=0.01, method="Kendall", n=9)


def test_shift_rows_follow_the_rule():
    tests = result_table([_shift_row("a", "re", 0.1, 0.7), _shift_row("a", "Kh_0.5", -0.15, 0.1),
                          _shift_row("b", "re", -0.6, -0.05), _shift_row("b", "Kh_0.5", -0.3, 0.5)])
    rows = {r["claim"]: r for r in shift.shift_rows(tests, ["a", "b", "c"], tau_margin=0.2, shift_noise=0.5)}
    got = {claim.split(" tracks")[0].split("in ")[-1] + claim[-3:]: r["reproduced"] for claim, r in rows.items()}
    assert got == {"re[a]": "yes", "Kh_0.5[a]": "no", "re[b]": "yes", "Kh_0.5[b]": "inconclusive",
                   "re[c]": "not tested", "Kh_0.5[c]": "not tested"}


def test_shift_changes_by_hand():
    rows = [{"run_id": "r", "arm": "xor", "sam_rho": 0.0, "seed": 0, "split": split, "metric": m, "value": v}
            for split, values in (("original", (0.1, 0.2, 0.9)), ("shifted", (0.3, 0.25, 0.7)))
            for m, v in zip(("re", "Kh_0.5", "test_acc"), values)]
    changes = shift.shift_changes(pd.DataFrame(rows)).iloc[0]
    assert changes["re"] == pytest.approx(0.2) and changes["Kh_0.5"] == pytest.approx(0.05)
    assert changes["test_acc"] == pytest.approx(-0.2) and changes["scenario"] == "xor"


def test_criteria_task_against_the_exact_hessian(store_root):
    import torch

    base = {**BASE, "train": {**BASE["train"], "dtype": "float64"}}
    result = run_grid(study.build_configs(base, {"xor": SCENARIOS["xor"]}, [0.05], [0]), store_root=store_root,
                      progress=False)
    rid, _, model, problem = next(iter(final_models(result)))
    dim = sum(p.numel() for p in model.parameters())
    table = shift.criteria_task(result, [rid], shift_noise=0.5, samples=20, n_probes=1, slq_steps=dim).set_index(
        ["split", "metric"])["value"]
    x, y = problem.splits["test"]
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta, inputs):
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = theta[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (inputs[:20],)), y[:20])

    for split, inputs in (("original", x), ("shifted", shift.shifted_inputs(x, 0.5, 0))):
        eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(lambda t: loss(t, inputs), flat)).numpy()
        assert table[split, "re"] == pytest.approx(abs(eig.min() / eig.max()), rel=1e-6)
        with torch.no_grad():
            acc = (model(inputs).argmax(1) == y).double().mean().item()
        assert table[split, "test_acc"] == pytest.approx(acc)
    assert not np.isclose(table["original", "re"], table["shifted", "re"])


@pytest.mark.parametrize("overrides, name", [
    ({"shift_noise": 0.0}, "shift_noise"), ({"shift_alternatives": [-1.0]}, "shift_alternatives"),
    ({"criteria_samples": 31}, "criteria_samples"), ({"slq_steps": 1}, "slq_steps"),
    ({"tau_margin": 1.0}, "tau_margin"),
])
def test_bad_shift_parameters_are_named(overrides, name):
    configs = study.build_configs(BASE, SCENARIOS, [0.05], [0])
    kwargs = dict(shift_noise=0.5, shift_alternatives=[1.0], criteria_samples=30, slq_probes=2, slq_steps=10,
                  tau_margin=0.2)
    study.check_shift_parameters(configs, **kwargs)
    with pytest.raises(ConfigError, match=name):
        study.check_shift_parameters(configs, **{**kwargs, **overrides})
