"""Kendall τ against scipy and a brute-force pair count, its bootstrap CI's coverage, and the granulated τ."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib.stats.rank_correlation import granulated_kendall, kendall_table, kendall_tau, tau_b
from analysis_lib.stats.results import RESULT_COLUMNS


def _brute_tau_b(x, y) -> float:
    concordant = discordant = tied_x = tied_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        tied_x += dx == 0
        tied_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    n0 = len(x) * (len(x) - 1) / 2
    return (concordant - discordant) / np.sqrt((n0 - tied_x) * (n0 - tied_y))


@pytest.mark.parametrize("ties", [False, True])
def test_tau_matches_scipy_and_a_pair_count(ties):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(30)
    y = 0.6 * x + rng.standard_normal(30)
    if ties:
        x, y = np.round(x), np.round(y * 2) / 2
    assert tau_b(np.stack([x, y], 1)) == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
    assert tau_b(np.stack([x, y], 1)) == pytest.approx(_brute_tau_b(x, y), abs=1e-12)
    row = kendall_tau(x, y, n_boot=200, seed=0)
    assert row["estimate"] == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
    assert row["pvalue"] == pytest.approx(sps.kendalltau(x, y).pvalue, rel=1e-9)
    assert row["ci_low"] < row["estimate"] < row["ci_high"] and row["n"] == 30


def test_batched_tau_equals_one_at_a_time():
    rng = np.random.default_rng(2)
    batch = rng.standard_normal((7, 12, 2))
    expected = [sps.kendalltau(b[:, 0], b[:, 1]).statistic for b in batch]
    np.testing.assert_allclose(tau_b(batch, axis=1), expected, atol=1e-12)


def test_bootstrap_ci_covers_the_population_tau():
    # bivariate normal with correlation r: population τ = (2/π) arcsin(r) (Kendall, 1948)
    r, n, reps = 0.5, 40, 200
    true_tau = 2 / np.pi * np.arcsin(r)
    rng = np.random.default_rng(3)
    cover = 0
    for k in range(reps):
        x = rng.standard_normal(n)
        y = r * x + np.sqrt(1 - r * r) * rng.standard_normal(n)
        row = kendall_tau(x, y, n_boot=300, seed=k)
        cover += row["ci_low"] <= true_tau <= row["ci_high"]
    assert 0.88 <= cover / reps <= 0.99  # nominal 0.95; ±0.03 is one binomial s.e. at 200 reps


def test_undefined_tau_gives_no_interval_and_bad_input_is_refused():
    row = kendall_tau([1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4], n_boot=50)
    assert np.isnan(row["estimate"]) and np.isnan(row["ci_low"])
    with pytest.raises(ValueError, match="measure"):
        kendall_tau([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="measure"):
        kendall_tau([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])


def test_kendall_table_has_the_result_columns_per_measure_and_group():
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"scenario": np.repeat(["a", "b"], 10), "m1": rng.standard_normal(20),
                       "m2": rng.standard_normal(20), "err": rng.standard_normal(20)})
    table = kendall_table(df, ["m1", "m2"], "err", by=["scenario"], n_boot=50)
    assert list(table.columns) == list(RESULT_COLUMNS) and len(table) == 4
    sub = df[df["scenario"] == "b"]
    got = table[(table["metric"] == "m2") & table["contrast"].str.contains("scenario=b")]["estimate"].item()
    assert got == pytest.approx(sps.kendalltau(sub["m2"], sub["err"]).statistic, abs=1e-12)


def _hand_sweep() -> pd.DataFrame:
    # error rises with a and with b. Along a the measure agrees with the error at b = 0 (τ = 1) and
    # disagrees at b = 1 (τ = -1): ψ_a = 0. Along b (one pair per a) the measure rises with the
    # error at every a: ψ_b = 1. So ψ = 0.5, while the pooled τ over all six is something else.
    rows = []
    for a in (0, 1, 2):
        for b in (0, 1):
            rows.append({"a": a, "b": b, "err": a + 10 * b, "measure": a if b == 0 else 100 - a})
    return pd.DataFrame(rows)


def test_granulated_tau_on_a_hand_made_sweep():
    table = granulated_kendall(_hand_sweep(), "measure", "err", ["a", "b"], n_boot=100).set_index("contrast")
    assert table.loc["ψ[a]", "estimate"] == pytest.approx(0.0) and table.loc["ψ[a]", "n"] == 2
    assert table.loc["ψ[b]", "estimate"] == pytest.approx(1.0) and table.loc["ψ[b]", "n"] == 3
    assert table.loc["ψ (mean over axes)", "estimate"] == pytest.approx(0.5)
    assert table.loc["ψ[a]", "ci_low"] == pytest.approx(-1.0) and table.loc["ψ[a]", "ci_high"] == pytest.approx(1.0)
    pooled = sps.kendalltau(_hand_sweep()["measure"], _hand_sweep()["err"]).statistic
    assert pooled == pytest.approx(0.6)  # pooled: 12 concordant, 3 discordant of 15 pairs, not ψ


def test_granulated_tau_leaves_out_constant_groups_and_refuses_duplicates():
    df = _hand_sweep()
    df.loc[df["b"] == 1, "measure"] = 7.0  # constant along a at b = 1: no τ there
    table = granulated_kendall(df, "measure", "err", ["a", "b"], n_boot=50).set_index("contrast")
    assert table.loc["ψ[a]", "estimate"] == pytest.approx(1.0) and table.loc["ψ[a]", "n"] == 1
    with pytest.raises(ValueError, match="axes"):
        granulated_kendall(pd.concat([df, df]), "measure", "err", ["a", "b"])
    with pytest.raises(ValueError, match="axes"):
        granulated_kendall(df, "measure", "err", [])
