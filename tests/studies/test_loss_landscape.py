"""Study 05 (filter-normalised loss landscapes): verdict rules and parameter checks.

The normalisation and scale-invariance verdicts on constructed tables, and the checks that refuse a bad study
before any training, naming the parameter.
"""

from __future__ import annotations

import pandas as pd
import pytest

from analysis_lib.runs.grid import expand_grid
from analysis_lib.studies.loss_landscape import (
    check_parameters,
    check_surface_parameters,
    normalisation_verdict,
    scale_invariance_verdict,
)
from analysis_lib.validation import ConfigError

BASE = {"data": {"name": "gaussian_mixture", "n_train": 120, "n_test": 60, "n_classes": 3, "n_features": 5},
        "model": {"kind": "mlp", "depth": 2, "width": 8},
        "train": {"optimizer": "sgd", "lr": 0.1, "steps": 12},
        "probes": {"names": ["eval", "weights"], "every": 12}}
ARMS = {"batch": {"train.batch_size": [16, 60], "train.weight_decay": [0.0, 0.005]},
        "residual": {"model.depth": [3], "train.batch_size": [32], "model.residual": [False, True]}}
STUDY = dict(probes=BASE["probes"], fit_fraction=0.25, radius={"filter": 1.0, "none": 0.05}, slice_points=11,
             map_points=9, direction_seeds=[0, 1, 2], rescale_factor=4.0, small_batch=16, n_boot=200)


def _test_row(layer, contrast, low, high, p=0.001):
    return {"metric": "curvature", "layer": layer, "contrast": contrast, "estimate": (low + high) / 2,
            "ci_low": low, "ci_high": high, "pvalue": p, "p_adj": p, "n": 5}


@pytest.mark.parametrize("none_ci, outcome", [((-1.0, 2.0), "yes"), ((0.5, 2.0), "no")])
def test_normalisation_verdict(none_ci, outcome):
    tests = pd.DataFrame([_test_row("filter", "b - a [wd=0]", 0.5, 1.0), _test_row("none", "b - a [wd=0]", *none_ci)])
    assert normalisation_verdict(tests, "curvature", claim="c", source="s")["reproduced"] == outcome
    no_filter_effect = tests.assign(ci_low=-1.0)
    assert normalisation_verdict(no_filter_effect, "curvature", claim="c", source="s")["reproduced"] == "inconclusive"


def test_scale_invariance_verdict():
    rows = [{"normalization": n, "model": m, "direction_seed": 0, "metric": "curvature", "value": v}
            for n, m, v in [("filter", "original", 2.0), ("filter", "rescaled", 2.0),
                            ("none", "original", 2.0), ("none", "rescaled", 8.0)]]
    assert scale_invariance_verdict(pd.DataFrame(rows), claim="c", source="s")["reproduced"] == "yes"
    rows[1]["value"] = 3.0
    assert scale_invariance_verdict(pd.DataFrame(rows), claim="c", source="s")["reproduced"] == "no"


def test_check_surface_parameters_names_the_bad_one():
    good = dict(radius={"filter": 1.0}, slice_points=11, map_points=9, direction_seeds=[0, 1], rescale_factor=2.0)
    check_surface_parameters(**good)
    for name, value in [("radius", {"filters": 1.0}), ("radius", {"filter": -1.0}), ("slice_points", 10),
                        ("map_points", 3), ("direction_seeds", []), ("direction_seeds", [1, 1]), ("rescale_factor", 0)]:
        with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
            check_surface_parameters(**{**good, name: value})


def test_check_parameters_names_the_bad_one():
    check_parameters(expand_grid(BASE, ARMS, [0, 1]), arms=ARMS, **STUDY)
    batch_only = {"batch": ARMS["batch"]}
    with pytest.raises(ConfigError, match="invalid parameter arms="):
        check_parameters(expand_grid(BASE, batch_only, [0, 1]), arms=batch_only, **STUDY)
    with pytest.raises(ConfigError, match="invalid parameter radius=.*'none'"):
        check_parameters(expand_grid(BASE, ARMS, [0, 1]), arms=ARMS, **{**STUDY, "radius": {"filter": 1.0}})
    # 32 is a batch size of the residual arm, not of the batch arm the comparison uses.
    with pytest.raises(ConfigError, match="invalid parameter small_batch="):
        check_parameters(expand_grid(BASE, ARMS, [0, 1]), arms=ARMS, **{**STUDY, "small_batch": 32})
