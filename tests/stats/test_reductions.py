"""Tests of analysis_lib.stats.reductions against direct numpy/pandas computations on hand-made tidy tables.

last_step and final_values (the end of each run, also when runs end at different steps), layer_spread,
mean_over_training, run_table and log10_values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.stats.reductions import (
    final_values,
    last_step,
    layer_spread,
    log10_values,
    mean_over_training,
    run_table,
)


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


def test_last_step_keeps_every_metric_at_each_runs_last_step():
    df = _tidy()
    df = df[~((df["run_id"] == "r1") & (df["step"] == 20))]  # r1 ended at step 10
    last = last_step(df)
    for run, end in (("r0", 20), ("r1", 10)):
        rows = last[last["run_id"] == run]
        assert set(rows["step"]) == {end}
        expected = df[(df["run_id"] == run) & (df["step"] == end)]
        pd.testing.assert_frame_equal(rows, expected)  # every metric and layer of that step, rows unchanged
        assert set(rows["metric"]) == {"update_ratio", "test_acc"} and len(rows) == 4
    assert len(last) == 2 * 4


def test_last_step_is_one_step_per_run_unlike_final_values():
    # r0 stopped recording test_acc at step 10 but probed update_ratio until 20.
    df = _tidy()
    df = df[~((df["run_id"] == "r0") & (df["step"] == 20) & (df["metric"] == "test_acc"))]
    last = last_step(df)
    assert set(last.loc[last["run_id"] == "r0", "step"]) == {20}
    assert set(last.loc[last["run_id"] == "r0", "metric"]) == {"update_ratio"}  # test_acc not taken from step 10
    final = final_values(df)
    assert final.loc[(final["run_id"] == "r0") & (final["metric"] == "test_acc"), "step"].item() == 10
    by_seed = last_step(df, by=["optimizer", "seed"])  # another grouping: the same runs here
    pd.testing.assert_frame_equal(by_seed, last)


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
