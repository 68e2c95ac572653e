"""Per-layer weight quantities against hand-made tensors, and the weight probes in a run, in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis_lib.runs.execute import ensure_run
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import with_overrides
from analysis_lib.weights import movement as P


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


def test_update_ratio_and_distance_on_hand_made_tensors():
    before = {"fc1.weight": _t(3.0, 4.0), "fc1.bias": _t(0.0)}
    after = {"fc1.weight": _t(3.3, 4.4), "fc1.bias": _t(0.0)}
    ratio = _as_dict(P.layer_update_ratios(after, before))
    assert ratio[("fc1", "")] == pytest.approx(0.1)
    assert ratio[("fc1", ".weight")] == pytest.approx(0.1)
    assert math.isnan(ratio[("fc1", ".bias")])  # 0/0: a zero bias has no defined ratio
    dist = _as_dict(P.layer_distances(after, before))
    assert dist[("fc1", "")] == pytest.approx(0.5)


def test_update_ratio_in_training_matches_parameter_snapshots(tiny_config):
    """update_ratio at step 1 equals ‖θ(1) − θ(0)‖/‖θ(0)‖ rebuilt from the recorded distance and norm."""
    config = with_overrides(tiny_config, {"train.dtype": "float64", "probes.every": 1})
    metrics = train_classifier(config).metrics
    norms = metrics[(metrics["metric"] == "dist_init") & (metrics["layer"] == "model")].set_index("step")["value"]
    ratio = metrics[(metrics["metric"] == "update_ratio") & (metrics["layer"] == "model")].set_index("step")["value"]
    # At step 1, ‖θ(1) − θ(0)‖ is dist_init(1), and ‖θ(0)‖ is weight_norm at step 0.
    w0 = metrics[(metrics["metric"] == "weight_norm") & (metrics["layer"] == "model") & (metrics["step"] == 0)]
    assert ratio[1] == pytest.approx(norms[1] / w0["value"].item(), rel=1e-12)
    assert np.all(ratio.to_numpy() > 0)


def test_weights_probe_stores_the_trajectory_and_final_weights(tiny_config, store_root):
    config = with_overrides(tiny_config, {"probes.names": ["weights"]})
    result = train_classifier(config)
    traj, final = result.tables["trajectory"], result.tables["final"]
    assert traj["steps"].tolist() == [0, 3, 6, 9, 12]
    assert traj["weights"].shape == (5, sum(v.numel() for k, v in final.items()))
    flat_final = torch.cat([v.reshape(-1) for v in final.values()])
    assert torch.equal(traj["weights"][-1], flat_final)
    ensure_run(config, store_root)
    stored = RunStore(store_root).load_checkpoint(run_id(config), "trajectory")
    assert torch.equal(stored["weights"], traj["weights"])


def test_rotation_and_distance_start_at_zero_and_weight_norm_matches_the_weights(tiny_config):
    config = with_overrides(tiny_config, {"probes.names": ["rotation", "dist_init", "weight_norm", "weights"]})
    result = train_classifier(config)
    m = result.metrics[result.metrics["layer"] == "model"].pivot_table(index="step", columns="metric", values="value")
    m = m[["rotation", "dist_init", "weight_norm"]].dropna()  # the probed steps
    assert m.loc[0, "rotation"] == pytest.approx(0.0, abs=1e-12) and m.loc[0, "dist_init"] == 0.0
    weights = result.tables["trajectory"]["weights"].double()
    assert m["weight_norm"].to_numpy() == pytest.approx(weights.norm(dim=1).numpy(), rel=1e-6)
    assert m["dist_init"].to_numpy() == pytest.approx((weights - weights[0]).norm(dim=1).numpy(), rel=1e-5, abs=1e-6)
