"""Tests of study 04's protocol (analysis_lib.studies.edge_of_stability) on hand-made λ_max and loss series.

A run whose λ_max crosses threshold·2/η at a known step gives the first step, the hover ratio over the window, the
loss claims, the early peak, the late ratio and λ_max at step 0 computed here by hand; a run that never reaches
the edge has NaN window fields; stability_table reads η from the learning_rates mapping, never from a label column;
hover_verdict, check_parameters and verdict_rows follow the rules fixed in advance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib.runs.grid import expand_grid
from analysis_lib.stats.effects import mean_ci
from analysis_lib.stats.results import result_table
from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies import edge_of_stability as study
from analysis_lib.validation import ConfigError
from tests.cases import tiny_config

LR = 0.1  # edge 2/η = 20; threshold 0.9 -> 18
PROBES = list(range(0, 101, 10))
CROSSING = [2.0, 5.0, 10.0, 15.0, 19.0, 20.0, 21.0, 19.5, 20.5, 20.0, 20.0]  # first >= 18 at step 40
NEVER = [2.0, 4.0, 6.0, 8.0, 10.0, 11.0, 12.0, 12.5, 13.0, 13.0, 13.0]
BUMPS = (20, 45, 52, 60, 85)  # steps where the mini-batch loss rises; 45, 52, 60 lie in the window (40, 70]
PROTOCOL = dict(threshold=0.9, window=30, early=20)


def _run(rid: str, lam: list[float], *, lr_label: float = LR, seed: int = 0, arm: str = "gd") -> pd.DataFrame:
    """Tidy metrics of one run: λ_max and train loss at the probes, batch loss at every step 1..100."""
    rows = [(step, "lambda_max", value) for step, value in zip(PROBES, lam)]
    rows += [(step, "train_loss", 2.0 - 0.01 * step) for step in PROBES]
    rows += [(step, "batch_loss", 1.0 - 0.001 * step + 0.05 * (step in BUMPS)) for step in range(1, 101)]
    df = pd.DataFrame(rows, columns=["step", "metric", "value"])
    df.insert(0, "run_id", rid)
    df.insert(1, "arm", arm)
    df.insert(2, "lr", lr_label)
    df.insert(3, "seed", seed)
    df.insert(5, "layer", "model")
    return df


def _summary(table: pd.DataFrame, rid: str) -> dict:
    return table[table["run_id"] == rid].set_index("metric")["value"].to_dict()


def test_a_run_that_crosses_the_edge():
    out = study.run_stability(_run("a", CROSSING), LR, **PROTOCOL)
    ratio = np.array(CROSSING) * LR / 2
    assert out["reached"] == 1.0 and out["first_step"] == 40.0
    assert out["hover_ratio"] == pytest.approx(ratio[4:8].mean())  # probes at steps 40, 50, 60, 70
    assert out["hover_ratio"] == pytest.approx((0.95 + 1.0 + 1.05 + 0.975) / 4)
    assert out["loss_falls"] == 1.0  # 1.3 at step 70 < 1.6 at step 40
    assert out["loss_increases"] == 3.0  # the rises at steps 45, 52 and 60; not those at 20 and 85
    assert out["early_peak"] == pytest.approx(10.0 * LR / 2)  # steps <= 20
    assert out["late_ratio"] == pytest.approx(ratio[7:].mean())  # steps >= 100 - 30
    assert out["lambda_max_0"] == 2.0 and out["lambda_max_peak"] == pytest.approx(21.0 * LR / 2)
    assert set(out) == set(study.SUMMARY_METRICS)


def test_a_run_that_never_reaches_the_edge():
    out = study.run_stability(_run("b", NEVER), LR, **PROTOCOL)
    assert out["reached"] == 0.0
    assert all(math.isnan(out[k]) for k in ("first_step", "hover_ratio", "loss_falls", "loss_increases"))
    assert out["lambda_max_0"] == 2.0 and out["lambda_max_peak"] == pytest.approx(13.0 * LR / 2)
    assert out["late_ratio"] == pytest.approx(np.mean([12.5, 13.0, 13.0, 13.0]) * LR / 2)


def test_stability_table_reads_eta_from_the_mapping_not_the_label():
    metrics = pd.concat([_run("a", CROSSING, lr_label=0.5), _run("b", NEVER, lr_label=0.5, seed=1)])
    table = study.stability_table(metrics, {"a": LR, "b": LR}, **PROTOCOL)
    assert list(table.columns) == ["run_id", "arm", "lr", "seed", "layer", "metric", "value"]
    assert len(table) == 2 * len(study.SUMMARY_METRICS) and (table["layer"] == "model").all()
    for rid, lam in (("a", CROSSING), ("b", NEVER)):
        got = _summary(table, rid)
        want = study.run_stability(_run(rid, lam), LR, **PROTOCOL)
        assert got == pytest.approx(want, nan_ok=True)
    assert _summary(table, "a")["first_step"] == 40.0
    # The label's η = 0.5 would put the edge at 4, crossed at step 10: the numbers above are not those.
    assert study.run_stability(_run("a", CROSSING), 0.5, **PROTOCOL)["first_step"] == 10.0
    as_series = study.stability_table(metrics, pd.Series({"a": LR, "b": LR}), **PROTOCOL)
    pd.testing.assert_frame_equal(as_series, table)


def _hover(rows):
    return pd.DataFrame(rows, columns=["lr", "metric", "mean", "ci_low", "ci_high", "n"]).set_index("lr")


@pytest.mark.parametrize("low, high, outcome", [(0.95, 1.05, "yes"), (0.5, 0.7, "no"), (1.2, 1.4, "no"),
                                                (0.85, 1.0, "inconclusive"), (math.nan, 1.0, "not tested")])
def test_hover_verdict(low, high, outcome):
    row = study.hover_verdict(_hover([(0.1, "hover_ratio", (low + high) / 2, low, high, 3)]), 0.1, 0.1)
    assert row["reproduced"] == outcome and row["n"] == 3 and "η = 0.1" in row["claim"]


def test_hover_verdict_without_a_run_at_the_edge():
    row = study.hover_verdict(_hover([(0.1, "hover_ratio", 1.0, 0.95, 1.05, 3)]), 0.05, 0.1)
    assert row == {"claim": "... then hovers at 2/η (η = 0.05)", "source": study.SOURCE,
                   "measured": "no run reached the edge", "n": 0, "reproduced": "not tested",
                   "rule": "yes when the 95% CI of η·λ_max/2 lies inside [0.9, 1.1], no when outside"}


def _arms():
    return {"gd": {"train.lr": [0.1, 0.05], "train.batch_size": [0]},
            "sgd": {"train.lr": [0.1], "train.batch_size": [30]},
            "warmup": {"train.lr": [0.1], "train.batch_size": [0], "train.warmup_steps": [4]}}


GOOD = dict(sgd_lr=0.1, warmup_lr=0.05, threshold=0.9, margin=0.1, window=30, early=20, n_boot=10)


def test_check_parameters_accepts_a_good_design():
    arms = _arms()
    study.check_parameters(expand_grid(tiny_config(), arms, [0]), arms, **GOOD)


@pytest.mark.parametrize("change, name", [
    ({"arms": "no warmup"}, "arms"),
    ({"threshold": 1}, "threshold"),
    ({"threshold": 0.0}, "threshold"),
    ({"margin": 1.5}, "margin"),
    ({"window": 0}, "window"),
    ({"early": 2.5}, "early"),
    ({"n_boot": 0}, "n_boot"),
    ({"sgd_lr": 0.3}, "sgd_lr"),
    ({"warmup_lr": 0.01}, "warmup_lr"),
])
def test_check_parameters_refuses_by_name(change, name):
    arms = _arms()
    configs = expand_grid(tiny_config(), arms, [0])
    if change.pop("arms", None):
        arms = {k: v for k, v in arms.items() if k != "warmup"}
    with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
        study.check_parameters(configs, arms, **{**GOOD, **change})


def test_sgd_lr_must_be_a_learning_rate_of_the_gd_arm():
    arms = _arms()
    arms["sgd"]["train.lr"] = [0.2]  # an SGD arm at a rate gd never ran: no baseline to pair with
    configs = expand_grid(tiny_config(), arms, [0])
    with pytest.raises(ConfigError, match=r"invalid parameter sgd_lr=\[0.2\]"):
        study.check_parameters(configs, arms, **{**GOOD, "sgd_lr": 0.2})


def _test_row(contrast, low, high, p):
    return dict(metric="m", layer="model", contrast=contrast, estimate=(low + high) / 2, ci_low=low, ci_high=high,
                effect_size=np.nan, statistic=np.nan, pvalue=p, p_adj=p, method="paired t-test, holm", n=3)


def test_verdict_rows_on_a_small_design():
    # η = 0.1: three seeds that reach and hover; η = 0.05 (edge 40): one seed reaches, two never do.
    runs = [_run(f"a{s}", [v * (1 + 0.01 * s) for v in CROSSING], seed=s) for s in range(3)]
    runs += [_run("b0", [2 * v for v in CROSSING], lr_label=0.05)]
    runs += [_run(f"b{s}", NEVER, lr_label=0.05, seed=s) for s in (1, 2)]
    metrics = pd.concat(runs, ignore_index=True)
    learning_rates = {rid: 0.1 if rid.startswith("a") else 0.05 for rid in metrics["run_id"].unique()}
    gd = study.stability_table(metrics, learning_rates, **PROTOCOL)
    edge = mean_ci(gd[gd["metric"].isin(["reached", "hover_ratio", "loss_falls"])], ["lr", "metric"], n_boot=200)
    sgd_tests = result_table([_test_row("30 - 0", -0.4, -0.1, 0.01), _test_row("60 - 0", -0.3, 0.1, 0.2)])
    warmup_tests = result_table([_test_row("4 - 0", 0.1, 0.3, 0.01)])
    rows = study.verdict_rows(gd, edge, sgd_tests, warmup_tests, threshold=0.9, margin=0.1)
    table = verdict_table(rows)
    assert len(table) == 1 + 2 + 1 + 2 + 1  # sharpening, one hover row per η, loss, SGD rows, warm-up rows
    assert table["reproduced"].tolist() == [
        "partly",  # 4 of 6 runs reached
        "not tested",  # η = 0.05: one run at the edge, no interval
        "yes",  # η = 0.1: hover ratios about 1.0, well inside [0.9, 1.1]
        "yes",  # the loss fell in all 4 runs at the edge
        "yes", "inconclusive",  # SGD below the edge; the second CI straddles 0
        "no"]  # warm-up raised the early peak
    assert table["measured"].iloc[0] == "4 of 6 runs reached 0.9·2/η" and table["n"].iloc[0] == 6
    assert "η = 0.05" in table["claim"].iloc[1] and "η = 0.1" in table["claim"].iloc[2]
    assert table["measured"].iloc[3] == "loss fell over the window in 4 of 4 runs at the edge"
