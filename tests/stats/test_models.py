"""Tests of analysis_lib.stats.models (mixed_model, spearman_ci) against direct statsmodels/scipy calls.

The mixed model's fixed effects, Wald intervals, Holm family (Intercept left out) and boundary flag against
``smf.mixedlm``; the Spearman correlation and its bootstrap interval against ``scipy.stats.spearmanr``; and the
arguments each refuses by name. Synthetic tidy frames with a known effect, float64 throughout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from analysis_lib.stats import models
from analysis_lib.stats.results import RESULT_COLUMNS
from tests.cases import RTOL, make_frame

BAD_ARGS = [  # (function, keyword arguments, argument named in the message)
    (models.mixed_model, dict(formula="value ~ C(optimizer)", groups="nope"), "groups"),
    (models.mixed_model, dict(formula="value C(optimizer)"), "formula"),
    (models.mixed_model, dict(formula="value ~ C(optimizer)", metric="acc"), "metric"),
    (models.mixed_model, dict(formula="value ~ C(optimizer)", adjust="sidak-ish"), "adjust"),
    (models.spearman_ci, dict(x="nope", y="value"), "x"),
    (models.spearman_ci, dict(x="seed", y="nope"), "y"),
    (models.spearman_ci, dict(x="seed", y="value", metric="acc"), "metric"),
]


@pytest.mark.parametrize("fn, kwargs, name", BAD_ARGS)
def test_bad_arguments(fn, kwargs, name):
    with pytest.raises(ValueError, match=f"invalid argument {name}"):
        fn(make_frame(), **kwargs)


def test_mixed_model_needs_one_metric():
    df = make_frame(metrics=("loss", "grad_norm"))
    with pytest.raises(ValueError, match="invalid argument metric=None.*several metrics"):
        models.mixed_model(df, "value ~ C(optimizer)")


def test_mixed_model_matches_direct_mixedlm():
    df = make_frame({"sgd": 0.0, "adam": 1.0}, layers=("fc1", "fc2", "fc3"),
                    metrics=("loss", "grad_norm"))
    formula = "value ~ C(optimizer) * C(layer)"
    out = models.mixed_model(df, formula, metric="loss")
    data = (df[df.metric == "loss"].sort_values(["optimizer", "layer", "seed"])
            .reset_index(drop=True))
    fit = smf.mixedlm(formula, data, groups=data["seed"]).fit(reml=True)
    assert list(out.columns) == list(RESULT_COLUMNS)
    assert list(out.contrast) == list(fit.fe_params.index)
    np.testing.assert_allclose(out.estimate, fit.fe_params, rtol=1e-6)
    np.testing.assert_allclose(out.pvalue, fit.pvalues[fit.fe_params.index], rtol=1e-4)
    conf = fit.conf_int().loc[fit.fe_params.index]
    np.testing.assert_allclose(out[["ci_low", "ci_high"]], conf, rtol=1e-6)
    assert (out.n == 60).all() and (out.metric == "loss").all() and (out.layer == "all").all()
    assert out.method.iloc[0] == "MixedLM (random intercept: seed), holm"
    terms = out.set_index("contrast")
    assert np.isnan(terms.loc["Intercept", "p_adj"])
    family = out.contrast != "Intercept"
    np.testing.assert_allclose(out.p_adj[family],
                               multipletests(out.pvalue[family], method="holm")[1], rtol=RTOL)
    sgd = terms.loc["C(optimizer)[T.sgd]"]  # reference level is "adam"
    assert sgd.ci_low < -1.0 < sgd.ci_high and sgd.p_adj < 1e-6


def test_mixed_model_flags_boundary_fit():
    # No seed effect at all: REML puts the seed variance on the boundary (0).
    df = make_frame(seed_sd=0.0, n_seeds=5)
    df["value"] = np.random.default_rng(4).normal(size=len(df))
    out = models.mixed_model(df, "value ~ C(optimizer) * C(layer)")
    assert out.method.str.endswith("; variance on boundary").all()
    assert np.isfinite(out.estimate).all()


def test_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"lr": rng.uniform(size=40), "metric": "loss"})
    df["value"] = -df.lr + rng.normal(0, 0.3, size=40)
    df.loc[[3, 11], "value"] = np.nan
    out = models.spearman_ci(df, "lr", "value", n_boot=1000)
    clean = df.dropna()
    ref = sps.spearmanr(clean.lr, clean.value)
    row = out.iloc[0]
    assert list(out.columns) == list(RESULT_COLUMNS)
    np.testing.assert_allclose([row.estimate, row.statistic, row.pvalue, row.p_adj],
                               [ref.statistic, ref.statistic, ref.pvalue, ref.pvalue], rtol=RTOL)
    assert row.ci_low < row.estimate < row.ci_high < 0
    assert (row.n, row.contrast, row.layer, row.metric) == (38, "value ~ lr", "model", "loss")


def test_spearman_with_fewer_than_three_rows_gives_nan():
    df = pd.DataFrame({"lr": [0.1, 0.2, np.nan], "value": [1.0, 2.0, 3.0]})
    row = models.spearman_ci(df, "lr", "value").iloc[0]
    assert row.n == 2 and row.metric == "value"  # no metric column: labelled by y
    assert np.isnan([row.estimate, row.ci_low, row.ci_high, row.pvalue, row.p_adj]).all()
