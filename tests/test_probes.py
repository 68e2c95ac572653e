"""Per-layer probes against hand-made tensors and a manual torch.autograd.grad loop, in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis_lib import probes as P
from analysis_lib.config import ProbeConfig, with_overrides
from analysis_lib.data import load_dataset
from analysis_lib.models import build_model
from analysis_lib.training import batches, train


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _as_dict(triples):
    return {(layer, suffix): value for layer, suffix, value in triples}


# (θ(0), θ(t), expected rotation 1 − cos): same direction, orthogonal, opposite, 45 degrees.
ROTATIONS = [
    ([1.0, 0.0], [2.0, 0.0], 0.0),
    ([1.0, 0.0], [0.0, 3.0], 1.0),
    ([1.0, 0.0], [-1.0, 0.0], 2.0),
    ([1.0, 0.0], [1.0, 1.0], 1.0 - 1.0 / math.sqrt(2.0)),
]


@pytest.mark.parametrize("initial, current, expected", ROTATIONS)
def test_rotation_on_hand_made_vectors(initial, current, expected):
    out = _as_dict(P.layer_rotations({"fc1.weight": _t(*current)}, {"fc1.weight": _t(*initial)}))
    assert out[("fc1", "")] == pytest.approx(expected, abs=1e-12)
    assert out[("model", "")] == pytest.approx(expected, abs=1e-12)


def test_layer_groups_weight_and_bias_together():
    # fc1 = (weight [3, 0], bias [4]) -> norm 5; out = (weight [[1, 0], [0, 0]]) -> norm 1; model = sqrt(26).
    params = {"fc1.weight": _t(3.0, 0.0), "fc1.bias": _t(4.0), "out.weight": _t(1.0, 0.0, 0.0, 0.0).reshape(2, 2)}
    out = _as_dict(P.layer_weight_norms(params))
    assert out[("fc1", "")] == pytest.approx(5.0)
    assert out[("fc1", ".weight")] == pytest.approx(3.0)
    assert out[("fc1", ".bias")] == pytest.approx(4.0)
    assert out[("out", "")] == pytest.approx(1.0)
    assert out[("model", "")] == pytest.approx(math.sqrt(26.0))


def test_update_ratio_and_distance_on_hand_made_tensors():
    before = {"fc1.weight": _t(3.0, 4.0), "fc1.bias": _t(0.0)}
    after = {"fc1.weight": _t(3.3, 4.4), "fc1.bias": _t(0.0)}
    ratio = _as_dict(P.layer_update_ratios(after, before))
    assert ratio[("fc1", "")] == pytest.approx(0.1)
    assert ratio[("fc1", ".weight")] == pytest.approx(0.1)
    assert math.isnan(ratio[("fc1", ".bias")])  # 0/0: a zero bias has no defined ratio
    dist = _as_dict(P.layer_distances(after, before))
    assert dist[("fc1", "")] == pytest.approx(0.5)


@pytest.mark.parametrize("config, steps, expected", [
    (ProbeConfig(schedule="every", every=5), 12, [0, 5, 10, 12]),
    (ProbeConfig(schedule="every", every=4), 12, [0, 4, 8, 12]),
    (ProbeConfig(schedule="log", points=4), 100, [0, 1, 10, 100]),
])
def test_probe_steps(config, steps, expected):
    assert P.probe_steps(config, steps) == expected


def test_gradient_norms_match_a_manual_autograd_loop(tiny_config):
    """grad_norm at step 1 is the norm of the first mini-batch gradient at θ(0), per layer and tensor."""
    config = with_overrides(tiny_config, {"train.dtype": "float64", "probes.every": 1, "train.steps": 1})
    metrics = train(config).metrics
    recorded = metrics[(metrics["step"] == 1) & metrics["metric"].str.startswith("grad_norm")]

    data = load_dataset(config.data).to("cpu", torch.float64)
    model = build_model(config.model, data.n_features, data.n_classes, config.seed).double()
    idx = next(batches(len(data.y_train), config.train.batch_size, 1_000_003 * config.seed + 17, "cpu"))
    loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, params)
    manual = {}
    for name, g in zip(names, grads):
        layer, kind = name.rsplit(".", 1)
        manual[(layer, f"grad_norm.{kind}")] = g.norm().item()
        manual[(layer, "grad_norm")] = math.hypot(manual.get((layer, "grad_norm"), 0.0), g.norm().item())
    manual[("model", "grad_norm")] = math.sqrt(sum(g.pow(2).sum().item() for g in grads))
    got = {(r.layer, r.metric): r.value for r in recorded.itertuples()}
    assert set(got) == set(manual)
    for key, value in manual.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_update_ratio_in_training_matches_parameter_snapshots(tiny_config):
    """update_ratio at step 1 equals ‖θ(1) − θ(0)‖/‖θ(0)‖ rebuilt from the recorded distance and norm."""
    config = with_overrides(tiny_config, {"train.dtype": "float64", "probes.every": 1})
    metrics = train(config).metrics
    norms = metrics[(metrics["metric"] == "dist_init") & (metrics["layer"] == "model")].set_index("step")["value"]
    ratio = metrics[(metrics["metric"] == "update_ratio") & (metrics["layer"] == "model")].set_index("step")["value"]
    # At step 1, ‖θ(1) − θ(0)‖ is dist_init(1), and ‖θ(0)‖ is weight_norm at step 0.
    w0 = metrics[(metrics["metric"] == "weight_norm") & (metrics["layer"] == "model") & (metrics["step"] == 0)]
    assert ratio[1] == pytest.approx(norms[1] / w0["value"].item(), rel=1e-12)
    assert np.all(ratio.to_numpy() > 0)
