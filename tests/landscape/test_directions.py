"""Directions for loss landscapes in float64, against the weights and references they must match.

Filter, layer and model normalisation against the weights' own norms, seeded reproducibility without touching
the global RNG, invariance of filter-normalised surfaces to an equivalent rescaling, Hessian directions against
the independent dense reference, and trajectory directions against an SVD.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis_lib.landscape.directions import (
    equivalent_rescaling,
    hessian_directions,
    normalize_direction,
    random_directions,
    trajectory_directions,
)
from analysis_lib.landscape.evaluate import unflatten
from analysis_lib.landscape.surfaces import loss_surface
from analysis_lib.training.config import ModelConfig
from analysis_lib.training.models import build_model
from tests.cases import cross_entropy
from tests.reference import dense_hessian

MODELS = {
    "mlp-batchnorm": ModelConfig(kind="mlp", depth=2, width=6, norm="batch"),
    "mlp-residual-layernorm": ModelConfig(kind="mlp", depth=3, width=5, norm="layer", residual=True),
    "cnn-batchnorm": ModelConfig(kind="cnn", depth=2, width=3, kernel_size=3, norm="batch"),
}


def _tiny(name: str, features: int = 8, classes: int = 3):
    """A float64 model of ``MODELS``."""
    return build_model(MODELS[name], features, classes, seed=1).double()


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


@pytest.mark.parametrize("name", ["mlp-batchnorm", "cnn-batchnorm"])
def test_filter_normalised_direction_has_the_weights_filter_norms(name):
    model = _tiny(name)
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
    model = _tiny("mlp-residual-layernorm")
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
    model = _tiny("cnn-batchnorm")
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
    # fc1 × 4 and fc2.weight / 4 is the same ReLU function; its filter-normalised surface is the
    # same, its unnormalised one is not (Dinh et al. 2017; Li et al. 2018).
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
            values[norm, key] = loss_surface(net, D, (x, y), grid)["value"].to_numpy()
    np.testing.assert_allclose(values["filter", "original"], values["filter", "scaled"], rtol=1e-10)
    assert np.abs(values["none", "original"] - values["none", "scaled"]).max() > 1e-3


def test_equivalent_rescaling_needs_a_plain_relu_mlp():
    model = _tiny("mlp-residual-layernorm")
    with pytest.raises(ValueError, match="ReLU MLP"):
        equivalent_rescaling(model, 2.0)


def test_hessian_directions_are_the_top_eigenvectors():
    model = build_model(ModelConfig(kind="mlp", depth=1, width=4, activation="tanh"), 3, 2, seed=0).double()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen, dtype=torch.float64), torch.randint(0, 2, (20,), generator=gen)
    directions, eigenvalues = hessian_directions(model, F.cross_entropy, (x, y), k=2, tol=1e-10)
    values, vectors = torch.linalg.eigh(dense_hessian(model, cross_entropy, x, y))
    # Lanczos reports converged residuals ~1e-20 here while the true residual is ~2e-8, so 1e-6.
    torch.testing.assert_close(eigenvalues, values.flip(0)[:2], rtol=1e-6, atol=1e-10)
    for i in range(2):
        assert abs(torch.dot(directions[i], vectors[:, -1 - i]).item()) == pytest.approx(1.0, abs=1e-6)
        assert directions[i][directions[i].abs().argmax()] > 0  # sign convention


def test_trajectory_directions_are_the_top_right_singular_vectors():
    gen = torch.Generator().manual_seed(0)
    walk = torch.randn(30, 12, generator=gen, dtype=torch.float64).cumsum(0)  # (S, P) random walk
    directions = trajectory_directions(walk, k=2)
    _, _, vh = torch.linalg.svd(walk - walk.mean(0), full_matrices=False)
    for i in range(2):
        assert abs(torch.dot(directions[i], vh[i]).item()) == pytest.approx(1.0, abs=1e-10)
