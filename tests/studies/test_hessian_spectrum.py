"""Tests of study 03's rules (analysis_lib.studies.hessian_spectrum) on hand-made tables.

Outlier counts all in {C − 1, C} give "yes", some "partly", none "no"; the gradient overlap's CI above, below or
straddling overlap_bar gives yes / no / inconclusive; a bulk-width contrast expects a positive difference for a
wider network and a negative one for a narrower one; bulk_widths keeps exact spectra only; check_parameters refuses
bad parameters by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.stats.results import result_table
from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies import hessian_spectrum as study
from analysis_lib.validation import ConfigError

COUNT_COLUMNS = ["run_id", "dataset", "n_classes", "width", "seed", "step", "layer", "metric", "value"]


def _counts(groups: dict) -> pd.DataFrame:
    """Outlier-count rows: {(dataset, C, width): [count per seed]}."""
    rows = [(f"{ds}-{c}-{w}-{s}", ds, c, w, s, 100, "model", "n_outliers", float(v))
            for (ds, c, w), values in groups.items() for s, v in enumerate(values)]
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def _test_row(contrast, low, high, p=0.01):
    return dict(metric="bulk_width", layer="model", contrast=contrast, estimate=(low + high) / 2, ci_low=low,
                ci_high=high, effect_size=np.nan, statistic=np.nan, pvalue=p, p_adj=p, method="paired t-test, holm",
                n=3)


def _overlaps(rows):
    return pd.DataFrame(rows, columns=["dataset", "n_classes", "width", "mean", "ci_low", "ci_high", "n"])


NO_TESTS = result_table([])
NO_OVERLAPS = _overlaps([])


def test_outlier_counts_in_c_minus_one_or_c_reproduce():
    counts = _counts({("gaussian_mixture", 4, 32): [4, 3, 4],  # all in {3, 4}: yes
                      ("gaussian_mixture", 8, 32): [8, 2, 7],  # one of three off: partly
                      ("mnist1d", 10, 32): [2, 1, 12]})  # none: no
    table = verdict_table(study.verdict_rows(counts, NO_TESTS, NO_OVERLAPS, base_width=32, overlap_bar=0.9))
    by_claim = table.set_index("claim")["reproduced"]
    assert len(table) == 3
    assert by_claim[by_claim.index.str.contains("gaussian_mixture, C = 4")].item() == "yes"
    assert by_claim[by_claim.index.str.contains("gaussian_mixture, C = 8")].item() == "partly"
    assert by_claim[by_claim.index.str.contains("mnist1d, C = 10")].item() == "no"
    assert (table["n"] == 3).all() and (table["source"] == study.SAGUN).all()
    assert "outliers per run: [2, 7, 8]" in table["measured"].tolist()


@pytest.mark.parametrize("low, high, outcome", [(0.92, 0.97, "yes"), (0.3, 0.6, "no"), (0.8, 0.95, "inconclusive")])
def test_overlap_ci_against_the_bar(low, high, outcome):
    overlaps = _overlaps([("gaussian_mixture", 4, 32, (low + high) / 2, low, high, 5)])
    rows = study.verdict_rows(_counts({}), NO_TESTS, overlaps, base_width=32, overlap_bar=0.9)
    assert len(rows) == 1
    assert rows[0]["reproduced"] == outcome and rows[0]["n"] == 5 and rows[0]["source"] == study.GUR_ARI


@pytest.mark.parametrize("contrast, low, high, p, outcome", [
    ("64 - 32", 0.1, 0.5, 0.01, "yes"),  # wider network, wider bulk
    ("64 - 32", -0.5, -0.1, 0.01, "no"),
    ("16 - 32", -0.5, -0.1, 0.01, "yes"),  # narrower network, narrower bulk: a negative difference
    ("16 - 32", 0.1, 0.5, 0.01, "no"),
    ("64 - 32", 0.1, 0.5, 0.2, "inconclusive"),  # the CI alone is not enough without p < 0.05
    ("16 - 32", -0.5, 0.1, 0.01, "inconclusive"),
])
def test_bulk_width_contrast_expects_the_sign_of_the_width_change(contrast, low, high, p, outcome):
    rows = study.verdict_rows(_counts({}), result_table([_test_row(contrast, low, high, p)]), NO_OVERLAPS,
                              base_width=32, overlap_bar=0.9)
    assert len(rows) == 1 and rows[0]["reproduced"] == outcome and contrast in rows[0]["claim"]


def test_verdict_rows_count_every_group_test_and_overlap():
    counts = _counts({("gaussian_mixture", 4, 32): [4, 4], ("gaussian_mixture", 4, 64): [3, 4]})
    tests = result_table([_test_row("64 - 32", 0.1, 0.5), _test_row("16 - 32", -0.5, -0.1)])
    overlaps = _overlaps([("gaussian_mixture", 4, 32, 0.95, 0.92, 0.97, 2), ("mnist1d", 10, 32, 0.5, 0.3, 0.6, 2)])
    table = verdict_table(study.verdict_rows(counts, tests, overlaps, base_width=32, overlap_bar=0.9))
    assert table["reproduced"].tolist() == ["yes", "yes", "yes", "yes", "yes", "no"]


def _final():
    """Final summary rows of four runs: exact and SLQ spectra, two class counts, two datasets."""
    runs = [("e4", "gaussian_mixture", 4, 1.0), ("s4", "gaussian_mixture", 4, 0.0),
            ("e8", "gaussian_mixture", 8, 1.0), ("m4", "mnist1d", 4, 1.0)]
    rows = []
    for rid, ds, c, exact in runs:
        for metric, value in (("bulk_width", 0.5), ("exact", exact), ("n_outliers", c if exact else np.nan),
                              ("n_classes", c)):
            rows.append((rid, ds, c, 32, 0, 100, "model", metric, value))
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def test_bulk_widths_select_exact_gaussian_mixture_spectra_of_c_classes():
    widths = study.bulk_widths(_final(), 4)
    assert widths["run_id"].tolist() == ["e4"] and (widths["metric"] == "bulk_width").all()
    assert study.bulk_widths(_final(), 8)["run_id"].tolist() == ["e8"]


def test_outlier_counts_leave_out_slq_spectra():
    counts = study.outlier_counts(_final())
    assert counts["run_id"].tolist() == ["e4", "e8", "m4"] and (counts["metric"] == "n_outliers").all()


GOOD = dict(overlap_bar=0.9, initial_phase=10, n_boot=100)


def test_check_parameters_accepts_a_good_design():
    study.check_parameters({"classes": {}, "width": {}}, **GOOD)


@pytest.mark.parametrize("arms, change, name", [
    ({"width": {}}, {}, "arms"),
    ({"classes": {}}, {"overlap_bar": 1.0}, "overlap_bar"),
    ({"classes": {}}, {"overlap_bar": 0}, "overlap_bar"),
    ({"classes": {}}, {"initial_phase": -1}, "initial_phase"),
    ({"classes": {}}, {"initial_phase": 1.5}, "initial_phase"),
    ({"classes": {}}, {"n_boot": 0}, "n_boot"),
])
def test_check_parameters_refuses_by_name(arms, change, name):
    with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
        study.check_parameters(arms, **{**GOOD, **change})
