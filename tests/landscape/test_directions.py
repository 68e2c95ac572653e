"""Landscapes: batched evaluation against a Python loop of functional_call (float64), grid
orientation on a model with a closed-form loss, direction normalisation, reproducibility, no
mutation of the model, and slice summaries on known curves."""

from __future__ import annotations

import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from analysis_lib.config import ConfigError, DataConfig, ModelConfig, ProbeConfig, RunConfig, TrainConfig
from analysis_lib.directions import (equivalent_rescaling, hessian_directions, normalize_direction,
                                     random_directions, trajectory_directions)
from analysis_lib.effects import bootstrap_ci
from analysis_lib.hessian import dense_hessian
from analysis_lib.landscape import evaluate_params, flat_parameters, unflatten
from analysis_lib.grid import expand_grid, run_grid
from analysis_lib.landscape_summaries import (normalisation_verdict, scale_invariance_verdict, slice_summaries,
                                              summary_table)
from analysis_lib.models import build_model
from analysis_lib.surfaces import (SURFACE_COLUMNS, check_surface_parameters, load_run_model, loss_surface,
                                   run_surfaces, surface_table)

MODELS = {
    "mlp-batchnorm": ModelConfig(kind="mlp", depth=2, width=6, norm="batch"),
    "mlp-residual-layernorm": ModelConfig(kind="mlp", depth=3, width=5, norm="layer", residual=True),
    "cnn-batchnorm": ModelConfig(kind="cnn", depth=2, width=3, kernel_size=3, norm="batch"),
}


def _tiny(name: str, n: int = 23, features: int = 8, classes: int = 3):
    """A float64 model with non-trivial BatchNorm running statistics, and data (x, y)."""
    model = build_model(MODELS[name], features, classes, seed=1).double()
    gen = torch.Generator().manual_seed(2)
    for buf_name, buf in model.named_buffers():
        if buf_name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen, dtype=torch.float64))
        elif buf_name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen, dtype=torch.float64) + 0.5)
    x = torch.randn(n, features, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return model, x, y


def _reference(model: nn.Module, point: torch.Tensor, x, y) -> tuple[float, float]:
    """Loss and accuracy at one flat point: one functional_call in eval mode, no batching."""
    ref = copy.deepcopy(model).eval()
    params = dict(zip([n for n, _ in ref.named_parameters()],
                      torch.split(point, [p.numel() for p in ref.parameters()])))
    params = {n: v.reshape(dict(ref.named_parameters())[n].shape) for n, v in params.items()}
    with torch.no_grad():
        logits = functional_call(ref, {**params, **dict(ref.named_buffers())}, (x,))
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


def _state(model: nn.Module) -> dict:
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers()},
            "modes": [m.training for m in model.modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()]}


def _assert_same_state(before: dict, after: dict) -> None:
    for key in ("params", "buffers"):
        for name in before[key]:
            assert torch.equal(before[key][name], after[key][name]), f"{key} {name} changed"
    assert before["modes"] == after["modes"] and before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("strategy", ["inplace", "loop", "vmap"])
def test_evaluate_params_matches_a_loop_of_functional_call(name, strategy):
    model, x, y = _tiny(name)
    theta = flat_parameters(model)
    gen = torch.Generator().manual_seed(3)
    points = theta + 0.3 * torch.randn(7, theta.numel(), generator=gen, dtype=torch.float64)
    # A tiny memory budget forces several data batches and point chunks.
    out = evaluate_params(model, points, x, y, strategy=strategy, memory_mb=0.002)
    for g in range(len(points)):
        loss, acc = _reference(model, points[g], x, y)
        assert out["loss"][g].item() == pytest.approx(loss, rel=1e-12, abs=1e-12)
        assert out["acc"][g].item() == acc


@pytest.mark.parametrize("name", list(MODELS))
def test_surface_matches_loop_at_the_same_grid_points(name):
    model, x, y = _tiny(name)
    theta = flat_parameters(model)
    D = random_directions(model, seed=5, k=2)
    alphas, betas = [-0.5, 0.0, 0.25], [-1.0, -0.2, 0.0, 0.6]  # different lengths: a transpose fails
    surface = loss_surface(model, D, x, y, alphas, betas)
    loss = surface[surface["metric"] == "loss"]
    assert len(loss) == 12
    for row in loss.itertuples():
        expected, _ = _reference(model, theta + row.alpha * D[0] + row.beta * D[1], x, y)
        assert row.value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def _linear_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Two logits z = W x of one sample x = (1, 0) with label 0: L(W) = softplus(W10 - W00)."""
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -1.0], [0.5, 2.0]], dtype=torch.float64))
    return model, torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0])


def test_grid_orientation_with_a_closed_form_loss():
    # d1 moves W10 by 1, d2 moves W00 by 2: L(alpha, beta) = softplus(0.5 + alpha - 0.3 - 2 beta).
    model, x, y = _linear_model()
    d1 = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    d2 = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    grid = np.linspace(-1, 1, 5)
    surface = loss_surface(model, torch.stack([d1, d2]), x, y, grid, grid * 0.73)  # no ties z0 = z1
    for row in surface.itertuples():
        margin = 0.5 + row.alpha - 0.3 - 2 * row.beta  # z1 - z0
        expected = math.log1p(math.exp(margin)) if row.metric == "loss" else float(margin < 0)
        assert row.value == pytest.approx(expected, abs=1e-12), (row.alpha, row.beta, row.metric)


def test_surface_table_schema_and_axes_of_2d_surfaces():
    model, x, y = _tiny("mlp-batchnorm")
    table = surface_table(model, {"train": (x, y), "test": (x[:9], y[:9])}, seeds=[0, 1], dims=2,
                          radius=0.5, steps=3, run_id="r")
    assert list(table.columns) == SURFACE_COLUMNS
    assert len(table) == 2 * 2 * 2 * 9
    slices = surface_table(model, {"train": (x, y)}, seeds=[1], dims=1, radius=0.5, steps=3)
    plane = table[(table["direction_seed"] == 1) & (table["split"] == "train") & (table["beta"] == 0)]
    # The alpha axis of seed 1's plane is seed 1's 1-D slice (same first direction).
    np.testing.assert_allclose(plane["value"].to_numpy(), slices["value"].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("strategy", ["inplace", "loop", "vmap"])
def test_the_model_is_not_mutated(strategy):
    model, x, y = _tiny("mlp-batchnorm")
    model.train()
    model.norm1.eval()  # a mixed state must come back as it was
    F.cross_entropy(model(x), y).backward()  # .grad present and must stay
    with torch.no_grad():  # the forward above moved the running statistics; record after it
        before = _state(model)
    points = flat_parameters(model) + torch.ones(3, flat_parameters(model).numel(), dtype=torch.float64)
    evaluate_params(model, points, x, y, strategy=strategy)
    surface_table(model, {"train": (x, y)}, seeds=[0], dims=2, steps=3, strategy=strategy)
    _assert_same_state(before, _state(model))


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


@pytest.mark.parametrize("name", ["mlp-batchnorm", "cnn-batchnorm"])
def test_filter_normalised_direction_has_the_weights_filter_norms(name):
    model, _, _ = _tiny(name)
    params = dict(model.named_parameters())
    for bias in ("zero", "include"):
        d = unflatten(model, random_directions(model, seed=4, bias=bias)[0])
        for n, p in params.items():
            if p.dim() >= 2:  # Linear rows (out, in), Conv output channels (out, in, k)
                torch.testing.assert_close(_filter_norms(d[n]), _filter_norms(p.detach()), rtol=1e-12, atol=0)
            elif bias == "zero":  # biases and norm parameters
                assert torch.count_nonzero(d[n]) == 0, n
            else:
                assert d[n].norm().item() == pytest.approx(p.norm().item(), rel=1e-12), n
    assert any(p.dim() == 3 for p in params.values()) == (name == "cnn-batchnorm")


def test_layer_and_model_normalisation():
    model, _, _ = _tiny("mlp-residual-layernorm")
    params = dict(model.named_parameters())
    raw = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
           for n, p in params.items()}
    d = normalize_direction(raw, params, normalization="layer", bias="include")
    for layer in ("fc1", "norm2", "out"):
        names = [n for n in params if n.startswith(layer + ".")]
        norm = lambda t: torch.cat([t[n].reshape(-1) for n in names]).norm().item()  # noqa: E731
        assert norm(d) == pytest.approx(norm({n: params[n].detach() for n in names}), rel=1e-12)
    d = normalize_direction(raw, params, normalization="model", bias="include")
    whole = lambda t: torch.cat([v.reshape(-1) for v in t.values()]).norm().item()  # noqa: E731
    assert whole(d) == pytest.approx(whole({n: p.detach() for n, p in params.items()}), rel=1e-12)
    d = normalize_direction(raw, params, normalization="none", bias="include")
    assert all(torch.equal(d[n], raw[n]) for n in raw)
    with pytest.raises(ValueError, match="normalization"):
        normalize_direction(raw, params, normalization="filters")


def test_seeded_directions_are_reproducible_and_leave_the_global_rng_alone():
    model, _, _ = _tiny("cnn-batchnorm")
    state = torch.get_rng_state()
    a, b = random_directions(model, seed=7, k=2), random_directions(model, seed=7, k=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert torch.equal(random_directions(model, seed=7)[0], a[0])
    assert not torch.equal(random_directions(model, seed=8)[0], a[0])
    # The seed gives the same direction for a float32 copy of the model, up to float32 rounding.
    single = random_directions(copy.deepcopy(model).float(), seed=7)[0]
    torch.testing.assert_close(single.double(), a[0], rtol=1e-6, atol=1e-6)


def test_filter_normalisation_is_invariant_to_an_equivalent_rescaling():
    """fc1 × 4 and fc2.weight / 4 is the same ReLU function; its filter-normalised surface is the
    same, its unnormalised one is not (Dinh et al. 2017; Li et al. 2018)."""
    model = build_model(ModelConfig(kind="mlp", depth=2, width=6), 5, 3, seed=0).double()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (30,), generator=gen)
    scaled = equivalent_rescaling(model, 4.0)
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-12, atol=1e-12)  # the same function
    assert not torch.allclose(scaled.fc1.weight, model.fc1.weight)
    grid = torch.linspace(-1, 1, 5)
    values = {}
    for norm in ("filter", "none"):
        for key, net in (("original", model), ("scaled", scaled)):
            D = random_directions(net, seed=3, normalization=norm)
            values[norm, key] = loss_surface(net, D, x, y, grid)["value"].to_numpy()
    np.testing.assert_allclose(values["filter", "original"], values["filter", "scaled"], rtol=1e-10)
    assert np.abs(values["none", "original"] - values["none", "scaled"]).max() > 1e-3


def test_hessian_directions_are_the_top_eigenvectors():
    model = build_model(ModelConfig(kind="mlp", depth=1, width=4, activation="tanh"), 3, 2, seed=0).double()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen, dtype=torch.float64), torch.randint(0, 2, (20,), generator=gen)
    directions, eigenvalues = hessian_directions(model, x, y, k=2, tol=1e-10)
    values, vectors = torch.linalg.eigh(dense_hessian(model, x, y))
    # Lanczos reports converged residuals ~1e-20 here while the true residual is ~2e-8, so 1e-6.
    torch.testing.assert_close(eigenvalues, values.flip(0)[:2], rtol=1e-6, atol=1e-10)
    for i in range(2):
        assert abs(torch.dot(directions[i], vectors[:, -1 - i]).item()) == pytest.approx(1.0, abs=1e-6)
        assert directions[i][directions[i].abs().argmax()] > 0  # sign convention


def _slice(values, alphas, **labels) -> pd.DataFrame:
    return pd.DataFrame({"run_id": "r", "direction_seed": 0, "split": "train", **labels,
                         "alpha": alphas, "beta": 0.0, "metric": "loss", "value": values})


def test_summaries_of_a_known_quadratic():
    alphas = np.linspace(-1, 1, 11)
    k = 3.0
    slice_ = _slice(2.0 + 0.4 * alphas + 0.5 * k * alphas**2, alphas)
    got = slice_summaries(slice_, fit_fraction=0.5, rise_fraction=0.6).set_index("metric")["value"]
    assert got["curvature"] == pytest.approx(k, rel=1e-10)
    assert got["second_difference"] == pytest.approx(k, rel=1e-10)
    assert got["rise"] == pytest.approx(0.5 * k * 0.6**2, rel=1e-10)
    assert got["roughness"] == pytest.approx(0.0, abs=1e-12)


def test_roughness_counts_bumps():
    # Total variation 6 against a unimodal variation of (3 - 1) + (3 - 1) = 4: roughness 0.5.
    bumpy = _slice(np.array([3.0, 2, 1, 2, 1, 2, 3]), np.linspace(-3, 3, 7))
    got = slice_summaries(bumpy).set_index("metric")["value"]
    assert got["roughness"] == pytest.approx(0.5)
    assert got["second_difference"] == pytest.approx(-2.0)  # the centre is a local maximum
    with pytest.raises(ValueError, match="alpha = 0"):
        slice_summaries(_slice(np.ones(4), np.linspace(-1, 1, 4)))


def test_summary_table_is_the_mean_and_bootstrap_ci_over_directions():
    alphas = np.linspace(-1, 1, 9)
    curvatures = [1.0, 2.0, 4.0, 7.0]
    frames = [_slice(0.5 * c * alphas**2, alphas).assign(direction_seed=i) for i, c in enumerate(curvatures)]
    table = summary_table(slice_summaries(pd.concat(frames)), n_boot=500, seed=3)
    row = table[table["metric"] == "curvature"].iloc[0]
    assert row["mean"] == pytest.approx(np.mean(curvatures)) and row["n"] == 4
    low, high = bootstrap_ci(np.array(curvatures), n_boot=500, seed=3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert "direction_seed" not in table.columns


def test_bad_arguments_raise():
    model, x, y = _tiny("mlp-batchnorm")
    with pytest.raises(ValueError, match="points"):
        evaluate_params(model, torch.zeros(2, 5, dtype=torch.float64), x, y)
    with pytest.raises(ValueError, match="strategy"):
        evaluate_params(model, flat_parameters(model), x, y, strategy="fast")
    with pytest.raises(ValueError, match="betas"):
        loss_surface(model, random_directions(model, 0, k=2), x, y, [0.0])


def test_contour_maps_put_alpha_on_x_and_beta_on_y():
    from analysis_lib.landscape_plots import _grid, plot_slices, plot_surface_maps

    model, x, y = _linear_model()
    D = torch.tensor([[0.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    surface = loss_surface(model, D, x, y, np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3))
    alphas, betas, z = _grid(surface[surface["metric"] == "loss"])
    assert z.shape == (3, 5)  # rows: beta, columns: alpha
    expected = np.log1p(np.exp(0.2 + alphas[None, :] - 2 * betas[:, None]))
    np.testing.assert_allclose(z, expected, rtol=1e-12)
    for kind in ("contour", "filled", "3d"):
        assert plot_surface_maps(surface, kind=kind).axes
    assert plot_slices(surface.assign(direction_seed=0)).axes
    plt.close("all")


def test_equivalent_rescaling_needs_a_plain_relu_mlp():
    model, _, _ = _tiny("mlp-residual-layernorm")
    with pytest.raises(ValueError, match="ReLU MLP"):
        equivalent_rescaling(model, 2.0)


def test_trajectory_directions_are_the_top_right_singular_vectors():
    gen = torch.Generator().manual_seed(0)
    walk = torch.randn(30, 12, generator=gen, dtype=torch.float64).cumsum(0)  # (S, P) random walk
    directions = trajectory_directions(walk, k=2)
    _, _, vh = torch.linalg.svd(walk - walk.mean(0), full_matrices=False)
    for i in range(2):
        assert abs(torch.dot(directions[i], vh[i]).item()) == pytest.approx(1.0, abs=1e-10)


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


def test_run_surfaces_evaluates_each_runs_final_weights(tmp_path):
    base = RunConfig(data=DataConfig(name="gaussian_mixture", n_train=40, n_test=20, n_features=5, n_classes=3),
                     model=ModelConfig(depth=1, width=4), train=TrainConfig(batch_size=10, steps=5),
                     probes=ProbeConfig(names=("weights",), every=5))
    configs = expand_grid(base, {"train.lr": [0.05, 0.2]}, seeds=[0])
    result = run_grid(configs, store_root=str(tmp_path), progress=False)
    table = run_surfaces(configs, result, seeds=[3], normalizations=("filter", "none"),
                         radius={"filter": 1.0, "none": 0.1}, steps=5, splits=("train", "test"),
                         store_root=str(tmp_path))
    assert list(table.columns) == ["run_id", "lr", "seed", "normalization", *SURFACE_COLUMNS[1:]]
    assert len(table) == 2 * 2 * 2 * 5 * 2  # runs x normalisations x splits x points x metrics
    model, data = load_run_model(configs[1], store_root=str(tmp_path))
    expected = surface_table(model, {"test": (data.x_test, data.y_test)}, seeds=[3], radius=0.1, steps=5,
                             normalization="none", run_id=result.runs["run_id"][1])
    got = table[(table["lr"] == 0.2) & (table["normalization"] == "none") & (table["split"] == "test")]
    np.testing.assert_array_equal(got["value"].to_numpy(), expected["value"].to_numpy())
    assert not np.allclose(got["value"], table[(table["lr"] == 0.05) & (table["normalization"] == "none")
                                               & (table["split"] == "test")]["value"])


@pytest.mark.parametrize("strategy", ["inplace", "loop", "vmap"])
def test_loss_only_evaluation_gives_the_same_loss(strategy):
    model, x, y = _tiny("cnn-batchnorm")
    points = flat_parameters(model) + 0.1 * random_directions(model, 0, k=3)
    both = evaluate_params(model, points, x, y, strategy=strategy, memory_mb=0.002)
    loss_only = evaluate_params(model, points, x, y, strategy=strategy, memory_mb=0.002, metrics=("loss",))
    assert list(loss_only) == ["loss"]
    torch.testing.assert_close(loss_only["loss"], both["loss"], rtol=0, atol=0)
