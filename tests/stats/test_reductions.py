"""Per-run reductions against direct numpy/pandas computations on hand-made tidy tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.summaries import final_values, layer_spread, log10_values, mean_over_training, run_table
from analysis_lib.verdicts import verdict_from_interval, verdict_row, verdict_table


def _tidy():
    rows = []
    for run, opt, seed in (("r0", "sgd", 0), ("r1", "adam", 0)):
        for step in (0, 10, 20):
            for layer, scale in (("fc1", 1.0), ("fc2", 10.0), ("model", 5.0)):
                rows.append((run, opt, seed, step, layer, "update_ratio", scale * (step + 1)))
            rows.append((run, opt, seed, step, "model", "test_acc", 0.1 * step / 20 + (opt == "adam") * 0.05))
    return pd.DataFrame(rows, columns=["run_id", "optimizer", "seed", "step", "layer", "metric", "value"])


def test_final_values_take_the_last_step_per_run_layer_metric():
    df = _tidy()
    df = df[~((df["run_id"] == "r1") & (df["step"] == 20))]  # r1 "diverged" after step 10
    final = final_values(df)
    assert set(final[final["run_id"] == "r0"]["step"]) == {20}
    assert set(final[final["run_id"] == "r1"]["step"]) == {10}
    assert len(final) == 2 * 4


def test_layer_spread_is_sd_of_log10_across_layers_excluding_model():
    spread = layer_spread(_tidy(), "update_ratio")
    # fc1 and fc2 differ by a factor of 10 at every step: SD of (a, a + 1) with ddof=1 = 1/sqrt(2).
    assert np.allclose(spread["value"], 1 / np.sqrt(2))
    assert set(spread["layer"]) == {"across layers"}
    assert len(spread) == 2 * 3  # per run and step


def test_mean_over_training_skips_step_zero():
    mean = mean_over_training(_tidy()[lambda d: d["metric"] == "update_ratio"])
    fc1 = mean[(mean["run_id"] == "r0") & (mean["layer"] == "fc1")]
    assert fc1["value"].item() == pytest.approx((11 + 21) / 2)
    assert fc1["step"].item() == 20
    assert list(mean.columns) == list(_tidy().columns)


def test_run_table_and_log10():
    final = final_values(_tidy())
    table = run_table(final, {"ratio": ("update_ratio", "mean"), "acc": ("test_acc", "model")}).set_index("run_id")
    assert table.loc["r0", "ratio"] == pytest.approx((21 + 210) / 2)  # mean over layers, not the model row
    assert table.loc["r1", "acc"] == pytest.approx(0.15)
    logged = log10_values(final, ["update_ratio"])
    assert set(logged["metric"]) == {"log10 update_ratio", "test_acc"}
    assert logged[logged["layer"] == "fc2"]["value"].iloc[0] == pytest.approx(np.log10(210))


@pytest.mark.parametrize("low, high, expected, outcome", [
    (0.1, 0.5, "positive", "yes"),
    (-0.5, -0.1, "positive", "no"),
    (-0.1, 0.5, "positive", "inconclusive"),
    (-0.5, -0.1, "negative", "yes"),
    (0.1, 0.5, "negative", "no"),
    (float("nan"), 0.5, "positive", "inconclusive"),
])
def test_verdict_from_interval(low, high, expected, outcome):
    assert verdict_from_interval(low, high, expected) == outcome


def test_verdict_rows_and_table():
    result = pd.Series({"estimate": 0.4, "ci_low": 0.1, "ci_high": 0.7, "pvalue": 0.01, "p_adj": 0.02, "n": 12})
    row = verdict_row("claim", "paper", result, "rho", "positive")
    assert row["reproduced"] == "yes" and row["n"] == 12 and "rho = 0.4 [0.1, 0.7]" in row["measured"]
    assert list(verdict_table([row]).columns) == ["claim", "source", "measured", "n", "reproduced"]
    weak = verdict_row("claim", "paper", result.replace({0.02: 0.2}), "rho", "positive")
    assert weak["reproduced"] == "inconclusive"  # CI above 0 but p_adj >= alpha
    with pytest.raises(ValueError, match="reproduced"):
        verdict_table([{**row, "reproduced": "maybe"}])
