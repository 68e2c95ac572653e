"""Weight matching in float64: known permutations are recovered and the function is preserved.

A known permutation of an MLP's hidden units is recovered exactly, permuting preserves the function, and
unsupported models and states are refused (the study-level refusal of model.kind "cnn" is tested in
tests/studies/test_run_to_run.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis_lib.training.config import ModelConfig
from analysis_lib.training.models import build_model
from analysis_lib.weights.matching import mlp_permutation_spec, permute_state, weight_matching

# Models as data: (name, ModelConfig).
MLPS = [
    ("plain", ModelConfig(kind="mlp", depth=3, width=7)),
    ("residual", ModelConfig(kind="mlp", depth=3, width=6, residual=True)),
    ("batchnorm", ModelConfig(kind="mlp", depth=2, width=6, norm="batch")),
    ("layernorm", ModelConfig(kind="mlp", depth=2, width=5, norm="layer", activation="tanh")),
]
N_FEATURES, N_CLASSES = 4, 3


def _trained(config: ModelConfig, seed: int):
    """A float64 model after 30 SGD steps on random data (BatchNorm statistics are non-trivial)."""
    gen = torch.Generator().manual_seed(100 + seed)
    model = build_model(config, N_FEATURES, N_CLASSES, seed).double()
    x = torch.randn(64, N_FEATURES, generator=gen, dtype=torch.float64)
    y = torch.randint(0, N_CLASSES, (64,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x


def _outputs(model, state, x):
    model.load_state_dict(state)
    with torch.no_grad():
        return model.eval()(x)


def _random_perms(spec, state, seed):
    rng = np.random.default_rng(seed)
    sizes = {name: state[key].shape[axis] for key, names in spec.items()
             for axis, name in enumerate(names) if name is not None}
    return {name: rng.permutation(n) for name, n in sizes.items()}


@pytest.fixture(params=MLPS, ids=[m[0] for m in MLPS])
def config(request):
    return request.param[1]


def test_permuting_hidden_units_preserves_the_function(config):
    model, x = _trained(config, 0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = mlp_permutation_spec(model)
    perms = _random_perms(spec, state, seed=1)
    permuted = permute_state(state, spec, perms)
    assert any(not torch.equal(permuted[k], state[k]) for k in state)
    torch.testing.assert_close(_outputs(model, permuted, x), _outputs(model, state, x), rtol=1e-12, atol=1e-12)


def test_a_wrong_spec_changes_the_function(config):
    """The check above can fail: permuting rows but not the next layer's columns breaks the model."""
    model, x = _trained(config, 0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = {k: tuple(None if (k == "out.weight" and axis == 1) else n for axis, n in enumerate(names))
            for k, names in mlp_permutation_spec(model).items()}
    permuted = permute_state(state, spec, _random_perms(spec, state, seed=1))
    assert not torch.allclose(_outputs(model, permuted, x), _outputs(model, state, x))


def test_matching_recovers_a_known_permutation_exactly(config):
    model, _ = _trained(config, 0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = mlp_permutation_spec(model)
    shuffled = permute_state(state, spec, _random_perms(spec, state, seed=2))
    result = weight_matching(model, state, shuffled, seed=3)
    for key in state:
        assert torch.equal(result.state[key], state[key]), key
    before, after = result.objective
    assert after > before


def test_matching_two_different_models_preserves_b_and_raises_the_objective(config):
    model, x = _trained(config, 0)
    state_a = {k: v.clone() for k, v in model.state_dict().items()}
    other, _ = _trained(config, 1)
    state_b = {k: v.clone() for k, v in other.state_dict().items()}
    result = weight_matching(model, state_a, state_b, seed=0)
    torch.testing.assert_close(_outputs(model, result.state, x), _outputs(model, state_b, x),
                               rtol=1e-12, atol=1e-12)
    before, after = result.objective
    assert after >= before
    # A local optimum of coordinate descent: no single permutation can improve alone.
    again = weight_matching(model, state_a, result.state, seed=5)
    assert again.objective[1] == pytest.approx(after, rel=1e-12)
    for perm in again.perms.values():
        np.testing.assert_array_equal(perm, np.arange(len(perm)))
    for key in state_a:
        assert torch.equal(result.state[key], permute_state(state_b, mlp_permutation_spec(model), result.perms)[key])


def test_matching_a_model_to_itself_is_the_identity():
    model, _ = _trained(MLPS[0][1], 0)
    state = model.state_dict()
    result = weight_matching(model, state, state)
    assert result.iterations == 1
    for perm in result.perms.values():
        np.testing.assert_array_equal(perm, np.arange(len(perm)))


def test_residual_mlp_shares_one_permutation():
    model, _ = _trained(MLPS[1][1], 0)
    spec = mlp_permutation_spec(model)
    assert {n for names in spec.values() for n in names if n is not None} == {"P_1"}
    assert spec["fc2.weight"] == ("P_1", "P_1") and spec["out.weight"] == (None, "P_1")


def test_unsupported_models_are_refused():
    cnn = build_model(ModelConfig(kind="cnn", depth=2, width=3, kernel_size=3), 8, 3, 0)
    with pytest.raises(ValueError, match="supports analysis_lib.training.models.MLP"):
        weight_matching(cnn, cnn.state_dict(), cnn.state_dict())
    model, _ = _trained(MLPS[0][1], 0)
    wrong = {k: v for k, v in model.state_dict().items() if k != "out.bias"}
    with pytest.raises(ValueError, match="invalid argument state_b"):
        weight_matching(model, model.state_dict(), wrong)
