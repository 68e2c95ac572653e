"""Learning-rate sensitivity on a hand-made grid with a known answer, and its refusals.

Diverged runs are capped at L_0 (never dropped); the seed-mean level; the paired difference
between arms with a t-test and a bootstrap interval over seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib.stats.lr_sensitivity import (
    SENSITIVITY_COLUMNS,
    capped_loss_curves,
    capped_losses,
    lr_sensitivity,
    sensitivity_difference,
)
from analysis_lib.stats.results import RESULT_COLUMNS

LRS = [1e-3, 1e-2, 1e-1, 1.0]
NAN, INF = float("nan"), float("inf")


def _arm(arm, finals, diverged, l0=4.0):
    rows = []
    for seed, (losses, flags) in enumerate(zip(finals, diverged)):
        for lr, loss, flag in zip(LRS, losses, flags):
            rows.append(dict(arm=arm, seed=seed, lr=lr, final_loss=loss, initial_loss=l0, diverged=flag,
                             diverged_step=5 if flag else NAN))
    return pd.DataFrame(rows)


# seed 0: capped [3, 1, 2, 4] (diverged at lr 1): mean 2.5, min 1 -> 1.5
# seed 1: capped [1, 1.5, 4, 4] (5.0 > L_0 is capped; inf diverged): mean 2.625, min 1 -> 1.625
PLAIN = _arm("plain", [[3.0, 1.0, 2.0, NAN], [1.0, 1.5, 5.0, INF]],
             [[False, False, False, True], [False, False, False, True]])
# seed 0: capped [2, 1, 1, 4]: the diverged run's last finite loss 0.5 counts as L_0 -> 2 - 1 = 1
# seed 1: capped [1, 1, 1.5, 1.5] -> 1.25 - 1 = 0.25
QK = _arm("qk", [[2.0, 1.0, 1.0, 0.5], [1.0, 1.0, 1.5, 1.5]],
          [[False, False, False, True], [False, False, False, False]])
RUNS = pd.concat([PLAIN, QK], ignore_index=True)


def test_capping_at_the_initial_loss():
    capped = capped_losses(PLAIN)
    assert capped.tolist() == [3.0, 1.0, 2.0, 4.0, 1.0, 1.5, 4.0, 4.0]


def test_sensitivity_of_a_hand_made_grid_per_seed():
    table = lr_sensitivity(RUNS, n_boot=200)
    assert list(table.columns) == SENSITIVITY_COLUMNS
    plain, qk = table.set_index("arm").loc["plain"], table.set_index("arm").loc["qk"]
    assert plain["sensitivity"] == pytest.approx((1.5 + 1.625) / 2, rel=1e-14)
    assert qk["sensitivity"] == pytest.approx((1.0 + 0.25) / 2, rel=1e-14)
    assert (plain["n_seeds"], plain["n_lr"], plain["n_diverged"]) == (2, 4, 2)
    assert qk["n_diverged"] == 1  # counted, not dropped
    # two seeds: the bootstrap resamples are {s0, s0}, {s0, s1}, {s1, s1}; the interval lies in their range
    assert 1.5 - 1e-12 <= plain["ci_low"] <= plain["ci_high"] <= 1.625 + 1e-12


def test_a_grid_without_its_diverged_runs_is_refused_not_averaged():
    dropped = RUNS[~RUNS["diverged"]]
    with pytest.raises(ValueError, match=r"has no run at seed=0, lr=1.0"):
        lr_sensitivity(dropped)  # refused, rather than averaged over a shorter grid


def test_a_one_three_ten_grid_counts_as_log_spaced():
    grid = {1e-3: 3e-3, 1e-2: 1e-2, 1e-1: 3e-2, 1.0: 1e-1}  # 3e-3, 1e-2, 3e-2, 1e-1
    table = lr_sensitivity(RUNS.assign(lr=RUNS["lr"].map(grid)), n_boot=10)
    assert table["sensitivity"].tolist() == pytest.approx([(1.5 + 1.625) / 2, (1.0 + 0.25) / 2], rel=1e-14)
    with pytest.raises(ValueError, match=r"log-spaced grid"):
        lr_sensitivity(RUNS.assign(lr=RUNS["lr"].map({1e-3: 1e-3, 1e-2: 2e-3, 1e-1: 3e-3, 1.0: 4e-3})))


def test_seed_mean_level():
    # plain mean curve [2, 1.25, 3, 4]: 2.5625 - 1.25; qk mean curve [1.5, 1, 1.25, 2.75]: 1.625 - 1
    table = lr_sensitivity(RUNS, level="mean", n_boot=100).set_index("arm")
    assert table.loc["plain", "sensitivity"] == pytest.approx(1.3125, rel=1e-14)
    assert table.loc["qk", "sensitivity"] == pytest.approx(0.625, rel=1e-14)
    assert (table["level"] == "mean").all()


def test_bootstrap_interval_recomputed_by_hand():
    wide = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 4.0], [3.0, 3.5, 1.0], [0.5, 2.0, 2.0], [1.0, 1.0, 5.0]])
    runs = pd.DataFrame([dict(arm="a", seed=s, lr=10.0 ** -j, final_loss=wide[s, j], initial_loss=10.0,
                              diverged=False) for s in range(5) for j in range(3)])
    per_seed = wide.mean(1) - wide.min(1)
    idx = np.random.default_rng(7).integers(0, 5, size=(500, 5))
    low, high = np.quantile(per_seed[idx].mean(1), [0.05, 0.95])
    row = lr_sensitivity(runs, n_boot=500, ci=0.9, seed=7).iloc[0]
    assert row["sensitivity"] == pytest.approx(per_seed.mean(), rel=1e-14)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_curves_are_seed_means_of_the_capped_losses():
    curves = capped_loss_curves(RUNS, n_boot=100)
    plain = curves[curves["arm"] == "plain"]
    assert plain["lr"].tolist() == LRS
    assert plain["capped_loss"].tolist() == pytest.approx([2.0, 1.25, 3.0, 4.0], rel=1e-14)
    assert plain["n_diverged"].tolist() == [0, 0, 0, 2]


def test_paired_difference_between_arms():
    table = sensitivity_difference(RUNS, "qk", "plain", n_boot=200)
    assert list(table.columns) == list(RESULT_COLUMNS)
    row = table.iloc[0]
    diffs = np.array([1.0 - 1.5, 0.25 - 1.625])
    assert row["estimate"] == pytest.approx(diffs.mean(), rel=1e-14)
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(2))
    assert row["statistic"] == pytest.approx(t, rel=1e-12)
    assert row["effect_size"] == pytest.approx(diffs.mean() / diffs.std(ddof=1), rel=1e-12)
    assert row["contrast"] == "qk - plain" and row["metric"] == "lr_sensitivity" and row["n"] == 2
    assert diffs.min() - 1e-12 <= row["ci_low"] <= row["ci_high"] <= diffs.max() + 1e-12
    mean_level = sensitivity_difference(RUNS, "qk", "plain", level="mean", n_boot=50).iloc[0]
    assert mean_level["estimate"] == pytest.approx(0.625 - 1.3125, rel=1e-14) and np.isnan(mean_level["pvalue"])


@pytest.mark.parametrize("change,text", [
    (lambda r: r.assign(lr=r["lr"].replace({1e-1: 5e-2})), r"must be a log-spaced grid"),
    (lambda r: r[r["lr"] == 1e-3], r"at least two distinct finite learning rates"),
    (lambda r: pd.concat([r, r.iloc[:1]]), r"\(arm, seed, lr\) = \['plain', 0, 0.001\]\W*appears twice"),
    (lambda r: r.assign(diverged=False), r"final_loss'\]=\[nan, inf\]: is not finite on a run not marked diverged"),
    (lambda r: r.assign(initial_loss=NAN), r"initial_loss'\]=.*must be finite"),
    (lambda r: r.assign(diverged=1.5), r"must be True or False"),
    (lambda r: r.drop(columns="initial_loss"), r"runs\['initial_loss'\]='initial_loss': not a column")])
def test_bad_tables_are_refused(change, text):
    with pytest.raises(ValueError, match=text):
        lr_sensitivity(change(RUNS))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"level='median'"):
        lr_sensitivity(RUNS, level="median")
    with pytest.raises(ValueError, match=r"treatment='zl': not an arm of runs"):
        sensitivity_difference(RUNS, "zl", "plain")
    with pytest.raises(ValueError, match=r"must differ from baseline"):
        sensitivity_difference(RUNS, "qk", "qk")
    with pytest.raises(ValueError, match=r"must have the same seeds to be paired"):
        sensitivity_difference(RUNS[~((RUNS["arm"] == "qk") & (RUNS["seed"] == 1))], "qk", "plain")
    with pytest.raises(ValueError, match=r"n_boot=0"):
        lr_sensitivity(RUNS, n_boot=0)
