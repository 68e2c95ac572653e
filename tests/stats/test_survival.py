"""Divergence survival: Kaplan–Meier and log-rank against hand computations and scipy, refusals.

Kaplan–Meier against a hand computation and ``scipy.stats.ecdf`` (log-log intervals), the
log-rank test against a hand computation and ``scipy.stats.logrank``; finished runs are censored.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib.stats.results import RESULT_COLUMNS
from analysis_lib.stats.survival import CURVE_COLUMNS, divergence_times, kaplan_meier, logrank_test


def _runs(arm, spec, last=5):
    """spec: steps of diverged runs as ints, finished runs as None (censored at ``last``)."""
    return pd.DataFrame({"arm": arm, "seed": range(len(spec)), "diverged": [s is not None for s in spec],
                         "diverged_step": [np.nan if s is None else s for s in spec], "last_step": last})


# arm "a": divergences at 2, 3, 3; one run ends at step 4, two at 5
A = pd.concat([_runs("a", [2, 3, 3]), _runs("a", [None], last=4), _runs("a", [None, None])], ignore_index=True)


def test_divergence_times_censor_finished_runs_at_their_last_step():
    times = divergence_times(A)
    assert times["time"].tolist() == [2, 3, 3, 4, 5, 5]
    assert times["event"].tolist() == [True, True, True, False, False, False]
    assert divergence_times(A.drop(columns="last_step"), 7)["time"].tolist() == [2, 3, 3, 7, 7, 7]


def test_kaplan_meier_matches_the_hand_computation():
    curve = kaplan_meier(A, ci=0.95)
    assert list(curve.columns) == CURVE_COLUMNS
    assert curve["step"].tolist() == [0, 2, 3, 4, 5]
    assert curve["at_risk"].tolist() == [6, 6, 5, 3, 2]
    assert curve["events"].tolist() == [0, 1, 2, 0, 0] and curve["censored"].tolist() == [0, 0, 0, 1, 2]
    np.testing.assert_allclose(curve["survival"], [1, 5 / 6, 1 / 2, 1 / 2, 1 / 2], rtol=1e-14)
    z = 1.959963984540054
    for step, s, greenwood in ((2, 5 / 6, 1 / 30), (3, 1 / 2, 1 / 30 + 2 / 15)):
        spread, centre = z * math.sqrt(greenwood) / abs(math.log(s)), math.log(-math.log(s))
        low, high = math.exp(-math.exp(centre + spread)), math.exp(-math.exp(centre - spread))
        row = curve[curve["step"] == step].iloc[0]
        assert row["ci_low"] == pytest.approx(low, rel=1e-12)
        assert row["ci_high"] == pytest.approx(high, rel=1e-12)
    assert curve.iloc[0][["ci_low", "ci_high"]].tolist() == [1.0, 1.0]


def test_kaplan_meier_matches_scipy_ecdf_with_log_log_intervals():
    rng = np.random.default_rng(0)
    steps = rng.integers(1, 40, size=30)
    runs = pd.DataFrame({"arm": "x", "diverged": rng.random(30) < 0.6, "diverged_step": steps,
                         "last_step": np.where(rng.random(30) < 0.5, 40, rng.integers(10, 40, size=30))})
    runs["diverged_step"] = np.minimum(runs["diverged_step"], runs["last_step"])
    times = divergence_times(runs)
    data = sps.CensoredData(uncensored=times.loc[times["event"], "time"].to_numpy(),
                            right=times.loc[~times["event"], "time"].to_numpy())
    sf = sps.ecdf(data).sf
    band = sf.confidence_interval(0.9, method="log-log")
    curve = kaplan_meier(runs, ci=0.9).set_index("step")
    events = curve.loc[sf.quantiles]  # scipy evaluates at every distinct time
    assert len(sf.quantiles) == len(curve) - 1
    np.testing.assert_allclose(events["survival"], sf.probabilities, rtol=1e-12)
    finite = np.isfinite(band.low.probabilities) & (sf.probabilities > 0)
    assert finite.sum() >= 10
    np.testing.assert_allclose(events["ci_low"].to_numpy()[finite], band.low.probabilities[finite], rtol=1e-9)
    np.testing.assert_allclose(events["ci_high"].to_numpy()[finite], band.high.probabilities[finite], rtol=1e-9)


def test_every_run_diverging_ends_the_curve_at_zero():
    curve = kaplan_meier(_runs("b", [1, 2]))
    assert curve["survival"].tolist() == [1.0, 0.5, 0.0]
    assert curve.iloc[-1][["ci_low", "ci_high"]].tolist() == [0.0, 0.0]


def test_logrank_matches_the_hand_computation():
    # a: diverges at 1, one run ends at 3; b: diverges at 2, one ends at 3.
    # t=1: n=4, n_a=2, d=1 (a): O-E = 1 - 1/2, V = 2·2·1·3/(16·3) = 1/4
    # t=2: n=3, n_a=1, d=1 (b): O-E = 0 - 1/3, V = 1·2·1·2/(9·2) = 2/9
    runs = pd.concat([_runs("a", [1, None], last=3), _runs("b", [2, None], last=3)], ignore_index=True)
    row = logrank_test(runs, "a", "b").iloc[0]
    u, v = 0.5 - 1 / 3, 1 / 4 + 2 / 9
    assert row["statistic"] == pytest.approx(u**2 / v, rel=1e-12)  # = 1/17
    assert row["pvalue"] == pytest.approx(sps.chi2.sf(1 / 17, 1), rel=1e-12)
    assert row["effect_size"] == pytest.approx(u, rel=1e-12)
    assert row["estimate"] == pytest.approx(math.exp(u / v), rel=1e-12)
    assert row["ci_low"] == pytest.approx(math.exp(u / v - 1.959963984540054 / math.sqrt(v)), rel=1e-12)
    assert row["contrast"] == "a vs b" and row["n"] == 4


def test_logrank_matches_scipy_and_returns_a_result_row():
    rng = np.random.default_rng(1)
    frames = []
    for arm, rate in (("qk", 0.3), ("plain", 0.8)):
        diverged = rng.random(25) < rate
        frames.append(pd.DataFrame({"arm": arm, "diverged": diverged, "diverged_step": rng.integers(0, 50, 25),
                                    "last_step": 50}))
    runs = pd.concat(frames, ignore_index=True)
    table = logrank_test(runs, "qk", "plain")
    assert list(table.columns) == list(RESULT_COLUMNS)
    times = divergence_times(runs)

    def censored(arm):
        part = times[times["arm"] == arm]
        return sps.CensoredData(uncensored=part.loc[part["event"], "time"].to_numpy(),
                                right=part.loc[~part["event"], "time"].to_numpy())

    reference = sps.logrank(censored("qk"), censored("plain"))
    assert table["statistic"].iloc[0] == pytest.approx(reference.statistic**2, rel=1e-10)
    assert table["pvalue"].iloc[0] == pytest.approx(reference.pvalue, rel=1e-8)
    assert table["estimate"].iloc[0] < 1  # fewer divergences in "qk"


def test_logrank_without_divergences_is_undefined_not_zero():
    runs = pd.concat([_runs("a", [None, None]), _runs("b", [None])], ignore_index=True)
    row = logrank_test(runs, "a", "b").iloc[0]
    assert np.isnan(row["statistic"]) and np.isnan(row["pvalue"]) and "no divergence" in row["method"]


@pytest.mark.parametrize("change,text", [
    (lambda r: r.assign(diverged_step=np.where(r["diverged"], 9, np.nan)), r"diverged_step.*\[0, its last step\]"),
    (lambda r: r.assign(diverged_step=np.nan), r"diverged_step.*a diverged run needs a finite step"),
    (lambda r: r.assign(diverged="yes"), r"diverged'\]=\['yes'\]: must be True or False"),
    (lambda r: r.drop(columns="last_step"), r"last_step='last_step': not a column"),
    (lambda r: r.drop(columns="arm"), r"runs\['arm'\]='arm': not a column")])
def test_bad_tables_are_refused(change, text):
    with pytest.raises(ValueError, match=text):
        kaplan_meier(change(A))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"treatment='c': not an arm of runs"):
        logrank_test(A, "c", "a")
    with pytest.raises(ValueError, match=r"treatment='a': must differ from baseline"):
        logrank_test(A, "a", "a")
    with pytest.raises(ValueError, match=r"ci=1.0"):
        kaplan_meier(A, ci=1.0)
    with pytest.raises(ValueError, match=r"last_step=0: must be a column name or an integer >= 1"):
        kaplan_meier(A, 0)
