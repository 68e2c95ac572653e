"""Study 07's protocol: parameter refusals, per-run summaries and verdict rules on hand-made tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis_lib import LMRunConfig, config_from_dict, expand_grid
from analysis_lib.studies import transformer_instabilities as study
from analysis_lib.validation import ConfigError

BASE = {"task": {"n_digits": 1, "n_train": 40, "n_test": 10}, "model": {"n_layers": 1, "d_model": 8, "n_heads": 2,
                                                                          "d_mlp": 16},
        "train": {"steps": 10, "warmup_steps": 0}, "finetune": {"steps": 0},
        "probes": {"names": ["eval", "attention_stats", "logit_stats"], "every": 5}}
ARMS = {"baseline": {"train.lr": [0.01, 0.1]}, "qk_norm": {"train.lr": [0.01, 0.1], "model.qk_norm": [True]},
        "z_loss": {"train.lr": [0.01, 0.1], "train.z_loss": [1e-4]},
        "curvature": {"train.lr": [0.01], "probes.names": [["eval", "attention_stats", "logit_stats",
                                                             "block_sharpness", "gradient_snr"]]}}


def _check(arms=ARMS, base=BASE, **kw):
    configs = expand_grid(config_from_dict(base, LMRunConfig), arms, [0, 1])
    study.check_parameters(configs, arms, **{"factor": 10.0, "summary": "peak", "n_boot": 100, **kw})


def test_good_parameters_pass():
    _check()
    _check({**ARMS, "warmup": {"train.lr": [0.01, 0.1], "train.warmup_steps": [5]}})


@pytest.mark.parametrize("arms, kw, name", [
    ({k: v for k, v in ARMS.items() if k != "z_loss"}, {}, "arms"),
    ({**ARMS, "other": {"train.lr": [0.01]}}, {}, "arms"),
    ({**ARMS, "qk_norm": {"train.lr": [0.01, 0.1]}}, {}, "model.qk_norm"),
    ({**ARMS, "z_loss": {"train.lr": [0.01, 0.1], "train.z_loss": [1e-4], "model.qk_norm": [True]}}, {},
     "model.qk_norm"),
    ({**ARMS, "qk_norm": {"train.lr": [0.01, 0.03], "model.qk_norm": [True]}}, {}, "arms"),
    ({**ARMS, "baseline": {"train.lr": [0.01, 0.1, 0.2]}}, {}, "arms"),  # not log-spaced
    ({**ARMS, "curvature": {"train.lr": [0.01]}}, {}, "probes.names"),
    (ARMS, {"factor": 1.0}, "factor"),
    (ARMS, {"summary": "mean"}, "summary"),
    (ARMS, {"n_boot": 0}, "n_boot"),
])
def test_bad_parameters_are_refused_naming_them(arms, kw, name):
    with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
        _check(arms, **kw)


def test_finetuning_is_refused():
    with pytest.raises(ConfigError, match="finetune.steps"):
        _check(base={**BASE, "finetune": {"steps": 5}})


def _metrics(run_id, arm, seed, attn, logz, loss=(2.0, 1.0)):
    rows = []
    for i, (a, z) in enumerate(zip(attn, logz)):
        step = 5 * (i + 1)
        rows += [{"run_id": run_id, "arm": arm, "seed": seed, "step": step, "layer": "blocks.0.attn",
                  "metric": "attn_logit_max", "value": a},
                 {"run_id": run_id, "arm": arm, "seed": seed, "step": step, "layer": "blocks.1.attn",
                  "metric": "attn_logit_max", "value": a / 2},
                 {"run_id": run_id, "arm": arm, "seed": seed, "step": step, "layer": "model",
                  "metric": "log_z_mean", "value": z}]
    for step, value in zip((0, 10), loss):
        rows += [{"run_id": run_id, "arm": arm, "seed": seed, "step": step, "layer": "model",
                  "metric": f"train_loss_{f}", "value": value + d} for f, d in (("fast", 0.1), ("slow", -0.1))]
    return rows


def _runs(rows):
    return pd.DataFrame(rows, columns=["run_id", "arm", "seed", "lr"])


def test_series_summaries_by_hand():
    metrics = pd.DataFrame(_metrics("a", "baseline", 0, attn=[1.0, 5.0, 3.0], logz=[-2.0, -6.0, 4.0]))
    runs = _runs([("a", "baseline", 0, 0.1)])
    peak = study.series_summaries(metrics, runs, "peak").set_index("metric")["value"]
    assert peak["attn_logit_first"] == 1.0 and peak["attn_logit_peak"] == 5.0 and peak["attn_logit_growth"] == 4.0
    assert peak["abs_log_z_first"] == 2.0 and peak["abs_log_z_peak"] == 6.0 and peak["log_z_drift"] == 4.0
    final = study.series_summaries(metrics, runs, "final").set_index("metric")["value"]
    assert final["attn_logit_final"] == 3.0 and final["log_z_drift"] == 2.0


def test_run_table_losses_and_divergence():
    metrics = pd.DataFrame(_metrics("a", "baseline", 0, [1.0], [1.0], loss=(2.5, 0.5))
                           + _metrics("b", "baseline", 0, [1.0], [1.0], loss=(3.5, np.nan))[-4:-2])
    configs = {rid: config_from_dict({**BASE, "conditions": [("arm", "baseline")]}, LMRunConfig) for rid in "abc"}
    result = SimpleNamespace(metrics=metrics, configs=configs, runs=pd.DataFrame(
        {"run_id": ["a", "b", "c"], "status": ["finished", "diverged", "diverged"], "diverged_step": [np.nan, 4, 1]}))
    table = study.run_table(result).set_index("run_id")
    assert table.loc["a", "initial_loss"] == pytest.approx(2.5) and table.loc["a", "final_loss"] == pytest.approx(0.5)
    assert table.loc["b", "diverged"] and table.loc["b", "diverged_step"] == 4
    assert np.isnan(table.loc["b", "final_loss"])
    assert table.loc["c", "initial_loss"] == pytest.approx((2.5 + 3.5) / 2)  # no step-0 loss: the mean L_0
    assert not table.loc["a", "diverged"] and table.loc["a", "last_step"] == 10


def test_spread_table_is_max_over_min_of_the_blocks():
    rows = [{"run_id": "a", "seed": 0, "step": s, "layer": layer, "metric": "block_lambda_max", "value": v}
            for s, values in ((0, (1.0, 4.0, 2.0)), (5, (0.0, 3.0, 1.0)))
            for layer, v in zip(["blocks.0.attn.q", "blocks.0.attn.k", "blocks.1.mlp.up"], values)]
    rows.append({"run_id": "a", "seed": 0, "step": 0, "layer": "blocks.0.norm1", "metric": "block_lambda_max",
                 "value": 1e-6})  # not a q/k/v/o/up/down block: left out
    rows.append({"run_id": "a", "seed": 0, "step": 0, "layer": "model", "metric": "block_lambda_max", "value": 1e-9})
    spread = study.spread_table(pd.DataFrame(rows)).set_index("step")["ratio"]
    assert spread[0] == 4.0 and np.isnan(spread[5])  # min <= 0: no ratio


def _values(growth_base, growth_qk, n=5, lr=0.1):
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(n):
        noise = rng.normal(0, 0.1)
        for arm, growth in (("baseline", growth_base), ("qk_norm", growth_qk), ("z_loss", growth_base)):
            for name in ("attn_logit", "abs_log_z"):
                rows += [{"arm": arm, "seed": seed, "lr": lr, "layer": "model", "metric": f"{name}_first",
                          "value": 1.0},
                         {"arm": arm, "seed": seed, "lr": lr, "layer": "model", "metric": f"{name}_peak",
                          "value": 1.0 + growth + noise}]
    return pd.DataFrame(rows)


def test_instability_rules_on_hand_made_tables():
    tests = study.instability_tests(_values(10.0, 1.0), lr=0.1, summary="peak", n_boot=200)
    assert tests["estimate"].iloc[0] == pytest.approx(10.0 + np.mean(np.random.default_rng(0).normal(0, 0.1, 5)))
    assert tests["estimate"].iloc[1] == pytest.approx(-9.0)  # qk_norm - baseline, the same noise per seed
    assert tests["estimate"].iloc[3] == pytest.approx(0.0)  # z_loss equal to the baseline
    rows = study.verdict_rows(tests, study.sensitivity_tests(_runs([]).assign(final_loss=[], initial_loss=[],
                                                                              diverged=[]), n_boot=10),
                              pd.DataFrame(columns=tests.columns), study.spread_tests(
                                  pd.DataFrame(columns=["run_id", "seed", "step", "ratio"]), factor=10, n_boot=10))
    outcomes = [r["reproduced"] for r in rows]
    assert outcomes[:4] == ["yes", "yes", "yes", "inconclusive"]
    assert outcomes[4:] == ["not tested", "not tested"]  # no curvature runs: n = 0
    no_growth = study.instability_tests(_values(-5.0, -5.0), lr=0.1, summary="peak", n_boot=200)
    assert study.verdict_rows(no_growth, pd.DataFrame(columns=tests.columns), pd.DataFrame(columns=tests.columns),
                              study.spread_tests(pd.DataFrame(columns=["run_id", "seed", "step", "ratio"]),
                                                 factor=10, n_boot=10))[0]["reproduced"] == "no"


def test_sensitivity_and_spread_rules():
    rows = []
    for seed in range(4):
        for lr, base, qk in ((0.01, 1.0, 1.0), (0.1, 3.0, 1.1)):  # baseline capped at L_0 = 3 at high lr
            rows += [{"arm": "baseline", "seed": seed, "lr": lr, "final_loss": base + 0.01 * seed, "initial_loss": 3.0,
                      "diverged": False},
                     {"arm": "qk_norm", "seed": seed, "lr": lr, "final_loss": qk + 0.02 * seed, "initial_loss": 3.0,
                      "diverged": False}]
    sens = study.sensitivity_tests(pd.DataFrame(rows), n_boot=200)
    # per seed s: baseline capped at L_0 = 3 at high lr, mean(1 + s/100, 3) - (1 + s/100); qk_norm 0.1 / 2
    expected = np.mean([0.05 - (3.0 - 1.0 - 0.01 * s) / 2 for s in range(4)])
    assert sens["estimate"].iloc[0] == pytest.approx(expected)
    spread = pd.DataFrame([{"run_id": f"r{s}", "seed": s, "step": step, "ratio": r * (1 + 0.1 * s)}
                           for s in range(4) for step, r in ((0, 1000.0), (10, 50.0))])
    tests = study.spread_tests(spread, factor=10, n_boot=200)
    expected = np.mean([np.mean(np.log10([1000 * (1 + 0.1 * s), 50 * (1 + 0.1 * s)])) - 1 for s in range(4)])
    assert tests["estimate"].iloc[0] == pytest.approx(expected)
    assert tests["estimate"].iloc[1] == pytest.approx(np.log10(50 / 1000))
    rows = study.verdict_rows(study.instability_tests(_values(1.0, 0.0), lr=0.1, summary="peak", n_boot=50), sens,
                              pd.DataFrame(columns=sens.columns), tests)
    assert [r["reproduced"] for r in rows[4:]] == ["yes", "yes", "yes"]
    both = study.verdict_rows(study.instability_tests(_values(1.0, 0.0), lr=0.1, summary="peak", n_boot=50), sens,
                              pd.DataFrame(columns=sens.columns), pd.concat([tests, tests.iloc[::-1]]))
    claims = [r["claim"][:14] for r in both[5:]]
    assert claims == ["Block λ_max di", "... and the ma", "Gradient noise", "... and the ma"]
    assert [r["reproduced"] for r in both[5:]] == ["yes", "yes", "no", "yes"]  # rows swapped: -1.3 vs log10 ratio
