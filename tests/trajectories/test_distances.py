"""Distances between weight trajectories, direct and between twin runs of a tiny trained grid.

Against a direct computation (whole model and per layer, at the steps both share); between twins: zero before
the perturbation, its exact size right after, large between independent runs.
"""

from __future__ import annotations

import pytest
import torch

from analysis_lib.layers import layer_sizes
from analysis_lib.studies.run_to_run import twin_pairs
from analysis_lib.training.config import ModelConfig
from analysis_lib.training.models import build_model
from analysis_lib.trajectories.distances import pair_distances, trajectory_distances
from tests.cases import TWIN_SCALE


def test_distances_match_a_direct_computation():
    model = build_model(ModelConfig(kind="mlp", depth=2, width=4), 3, 2, 0)
    sizes = layer_sizes(model)
    assert sizes == {"fc1": 16, "fc2": 20, "out": 10}
    gen = torch.Generator().manual_seed(0)
    a = {"steps": torch.tensor([0, 10, 20, 30]), "weights": torch.randn(4, 46, generator=gen)}
    b = {"steps": torch.tensor([0, 20, 30]), "weights": torch.randn(3, 46, generator=gen)}
    table = trajectory_distances(a, b, sizes)
    assert sorted(table["step"].unique()) == [0, 20, 30]
    for step, ia, ib in ((0, 0, 0), (20, 2, 1), (30, 3, 2)):
        diff = a["weights"][ia].double() - b["weights"][ib].double()
        row = table[(table["step"] == step) & (table["layer"] == "model")].iloc[0]
        assert row["distance"] == pytest.approx(diff.norm().item(), rel=1e-12)
        assert row["relative_distance"] == pytest.approx((diff.norm() / a["weights"][ia].double().norm()).item(),
                                                         rel=1e-12)
        fc2 = table[(table["step"] == step) & (table["layer"] == "fc2")]["distance"].item()
        assert fc2 == pytest.approx(diff[16:36].norm().item(), rel=1e-12)
    with pytest.raises(ValueError, match="add up to"):
        trajectory_distances(a, b, {"fc1": 3})


def test_distances_are_zero_before_the_perturbation_and_its_size_after(twin_runs):
    result, config = twin_runs, next(iter(twin_runs.configs.values()))
    pairs = twin_pairs(result.runs)
    trajectories = result.checkpoints("trajectory")
    dist = pair_distances(pairs, trajectories, layer_sizes(config.build_model()))
    assert list(dist.columns) == [*pairs.columns, "step", "layer", "metric", "value"]
    assert set(dist["layer"]) == {"model", "fc1", "fc2", "out"}
    rel = dist[(dist["metric"] == "relative_distance") & (dist["layer"] == "model")]
    at0 = rel[rel["pair"] == "twin, step 0"].set_index(["seed", "step"])["value"]
    assert at0.xs(0, level="step").to_numpy() == pytest.approx(TWIN_SCALE, rel=1e-4)  # float32 weights
    late = rel[rel["pair"] == "twin, step 10"]
    assert (late.loc[late["step"] < 10, "value"] == 0).all() and (late.loc[late["step"] >= 10, "value"] > 0).all()
    indep = rel[rel["pair"] == "independent"]
    assert (indep["value"] > 0.5).all()  # different initial weights
