"""Tests of analysis_lib.gradients.spread on hand-made layer profiles.

cross_layer_mad, difference_thirds and relative_difference.

The MAD of consecutive-layer differences overall and per third, raw and relative to the layer mean (scale-free),
in the order layers first appear, skipping projections present in a single layer; the thirds of the differences
for several depths; and the relative difference of condition means and of paired examples.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib.gradients.spread import SPREAD_COLUMNS, cross_layer_mad, difference_thirds, relative_difference


def _profile(values, projection="q", example=0, statistic="nuclear_norm"):
    return pd.DataFrame({"example": example, "layer": [f"blocks.{i}" for i in range(len(values))],
                         "projection": projection, "statistic": statistic, "value": values})


def test_cross_layer_mad_on_a_hand_made_profile():
    # s = 1, 3, 2, 6: differences 2, 1, 4 -> MAD 7/3; thirds one difference each.
    table = cross_layer_mad(_profile([1.0, 3.0, 2.0, 6.0]))
    assert list(table.columns) == SPREAD_COLUMNS and len(table) == 4 * 2  # segments × measures
    spread = table.set_index(["segment", "measure"])["value"]
    expected = {("all", "mad"): 7 / 3, ("early", "mad"): 2.0, ("middle", "mad"): 1.0, ("late", "mad"): 4.0,
                ("all", "relative_mad"): (7 / 3) / 3.0, ("early", "relative_mad"): 2.0 / 2.0,
                ("middle", "relative_mad"): 1.0 / 2.5, ("late", "relative_mad"): 4.0 / 4.0}
    assert spread.to_dict() == pytest.approx(expected, rel=1e-12)


def test_relative_mad_is_scale_free_and_mad_is_not():
    profile = _profile([1.0, 3.0, 2.0, 6.0, 5.0])
    scaled = profile.assign(value=profile["value"] * 10)
    a, b = cross_layer_mad(profile), cross_layer_mad(scaled)
    relative = a["measure"] == "relative_mad"
    np.testing.assert_allclose(a.loc[relative, "value"], b.loc[relative, "value"], rtol=1e-12)
    np.testing.assert_allclose(a.loc[~relative, "value"] * 10, b.loc[~relative, "value"], rtol=1e-12)


@pytest.mark.parametrize("n_layers, expected", [
    (2, {"all": [0], "early": [0]}),
    (4, {"all": [0, 1, 2], "early": [0], "middle": [1], "late": [2]}),
    (7, {"all": [0, 1, 2, 3, 4, 5], "early": [0, 1], "middle": [2, 3], "late": [4, 5]}),
    (6, {"all": [0, 1, 2, 3, 4], "early": [0, 1], "middle": [2, 3], "late": [4]}),
])
def test_difference_thirds(n_layers, expected):
    got = {k: v.tolist() for k, v in difference_thirds(n_layers).items()}
    assert got == expected


def test_cross_layer_mad_uses_forward_order_and_skips_single_layer_projections():
    table = pd.concat([_profile([1.0, 3.0, 2.0, 6.0]).iloc[::-1],  # rows in reverse: order from first appearance
                       pd.DataFrame({"example": [0], "layer": ["head"], "projection": ["weight"],
                                     "statistic": ["nuclear_norm"], "value": [9.0]})])
    spread = cross_layer_mad(table)
    assert set(spread["projection"]) == {"q"}
    mad = spread[(spread["segment"] == "early") & (spread["measure"] == "mad")]["value"].item()
    assert mad == pytest.approx(4.0)  # reversed order 6, 2, 3, 1: first difference 4


def test_relative_difference_of_means_and_paired():
    a = _profile([2.0, 2.0]).assign(example=[0, 1], layer="blocks.0")
    b = a.assign(value=[1.0, 4.0])
    out = relative_difference(a, b).iloc[0]
    assert out["mean_a"] == 2.0 and out["mean_b"] == 2.5
    assert out["rel_diff"] == pytest.approx(-0.2)  # (2 - 2.5) / 2.5
    assert out["paired_rel_diff"] == pytest.approx(0.25)  # mean of (2-1)/1 and (2-4)/4
    assert out["n_pairs"] == 2
    unpaired = relative_difference(a, b.assign(example=[5, 6])).iloc[0]
    assert unpaired["n_pairs"] == 0 and math.isnan(unpaired["paired_rel_diff"])
