"""Loss surfaces in float64: values, orientation and schema, and surfaces of a trained grid's runs.

Values at every grid point against a direct functional_call, grid orientation on a model with a closed-form loss
(alpha on direction 1, beta on direction 2, also in the contour maps), the tidy surface schema, refused
arguments, and run_surfaces reading each run's final weights from a GridResult.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from analysis_lib.landscape.directions import random_directions
from analysis_lib.landscape.evaluate import flat_parameters
from analysis_lib.landscape.surfaces import SURFACE_COLUMNS, loss_surface, run_surfaces, surface_table
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import expand_grid
from analysis_lib.training.config import DataConfig, ModelConfig, ProbeConfig, RunConfig, TrainConfig
from tests.cases import LANDSCAPE_MODELS, landscape_problem
from tests.reference import loss_and_accuracy_at


def _linear_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Two logits z = W x of one sample x = (1, 0) with label 0: L(W) = softplus(W10 - W00)."""
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -1.0], [0.5, 2.0]], dtype=torch.float64))
    return model, torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0])


@pytest.mark.parametrize("name", list(LANDSCAPE_MODELS))
def test_surface_matches_loop_at_the_same_grid_points(name):
    model, x, y = landscape_problem(name)
    theta = flat_parameters(model)
    D = random_directions(model, seed=5, k=2)
    alphas, betas = [-0.5, 0.0, 0.25], [-1.0, -0.2, 0.0, 0.6]  # different lengths: a transpose fails
    surface = loss_surface(model, D, (x, y), alphas, betas)
    loss = surface[surface["metric"] == "loss"]
    assert len(loss) == 12
    for row in loss.itertuples():
        expected, _ = loss_and_accuracy_at(model, theta + row.alpha * D[0] + row.beta * D[1], x, y)
        assert row.value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_grid_orientation_with_a_closed_form_loss():
    # d1 moves W10 by 1, d2 moves W00 by 2: L(alpha, beta) = softplus(0.5 + alpha - 0.3 - 2 beta).
    model, x, y = _linear_model()
    d1 = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    d2 = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    grid = np.linspace(-1, 1, 5)
    surface = loss_surface(model, torch.stack([d1, d2]), (x, y), grid, grid * 0.73)  # no ties z0 = z1
    for row in surface.itertuples():
        margin = 0.5 + row.alpha - 0.3 - 2 * row.beta  # z1 - z0
        expected = math.log1p(math.exp(margin)) if row.metric == "loss" else float(margin < 0)
        assert row.value == pytest.approx(expected, abs=1e-12), (row.alpha, row.beta, row.metric)


def test_surface_table_schema_and_axes_of_2d_surfaces():
    model, x, y = landscape_problem("mlp-batchnorm")
    table = surface_table(model, {"train": (x, y), "test": (x[:9], y[:9])}, seeds=[0, 1], dims=2,
                          radius=0.5, steps=3, run_id="r")
    assert list(table.columns) == SURFACE_COLUMNS
    assert len(table) == 2 * 2 * 2 * 9
    slices = surface_table(model, {"train": (x, y)}, seeds=[1], dims=1, radius=0.5, steps=3)
    plane = table[(table["direction_seed"] == 1) & (table["split"] == "train") & (table["beta"] == 0)]
    # The alpha axis of seed 1's plane is seed 1's 1-D slice (same first direction).
    np.testing.assert_allclose(plane["value"].to_numpy(), slices["value"].to_numpy(), rtol=1e-12)


def test_a_2d_surface_needs_betas():
    model, x, y = landscape_problem("mlp-batchnorm")
    with pytest.raises(ValueError, match="betas"):
        loss_surface(model, random_directions(model, 0, k=2), (x, y), [0.0])


def test_contour_maps_put_alpha_on_x_and_beta_on_y():
    from analysis_lib.plots.landscape import _grid, plot_slices, plot_surface_maps

    model, x, y = _linear_model()
    D = torch.tensor([[0.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    surface = loss_surface(model, D, (x, y), np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3))
    alphas, betas, z = _grid(surface[surface["metric"] == "loss"])
    assert z.shape == (3, 5)  # rows: beta, columns: alpha
    expected = np.log1p(np.exp(0.2 + alphas[None, :] - 2 * betas[:, None]))
    np.testing.assert_allclose(z, expected, rtol=1e-12)
    for kind in ("contour", "filled", "3d"):
        assert plot_surface_maps(surface, kind=kind).axes
    assert plot_slices(surface.assign(direction_seed=0)).axes
    plt.close("all")


def test_run_surfaces_evaluates_each_runs_final_weights(tmp_path):
    base = RunConfig(data=DataConfig(name="gaussian_mixture", n_train=40, n_test=20, n_features=5, n_classes=3),
                     model=ModelConfig(depth=1, width=4), train=TrainConfig(batch_size=10, steps=5),
                     probes=ProbeConfig(names=("weights",), every=5))
    configs = expand_grid(base, {"train.lr": [0.05, 0.2]}, seeds=[0])
    result = run_grid(configs, store_root=str(tmp_path), progress=False)
    table = run_surfaces(result, seeds=[3], normalizations=("filter", "none"), radius={"filter": 1.0, "none": 0.1},
                         steps=5, splits=("train", "test"))
    assert list(table.columns) == ["run_id", "lr", "seed", "normalization", *SURFACE_COLUMNS[1:]]
    assert len(table) == 2 * 2 * 2 * 5 * 2  # runs x normalisations x splits x points x metrics
    rid = result.runs["run_id"][1]
    data = result.configs[rid].dataset()
    expected = surface_table(result.model(rid), {"test": (data.x_test, data.y_test)}, seeds=[3], radius=0.1,
                             steps=5, normalization="none", run_id=rid)
    got = table[(table["lr"] == 0.2) & (table["normalization"] == "none") & (table["split"] == "test")]
    np.testing.assert_array_equal(got["value"].to_numpy(), expected["value"].to_numpy())
    assert not np.allclose(got["value"], table[(table["lr"] == 0.05) & (table["normalization"] == "none")
                                               & (table["split"] == "test")]["value"])
    only = run_surfaces(result, [rid], seeds=[3], normalizations=("none",), radius=0.1, steps=5, splits=("test",))
    assert set(only["run_id"]) == {rid}
    np.testing.assert_array_equal(only["value"].to_numpy(), expected["value"].to_numpy())
