"""Twin runs end to end on a tiny grid: pairing, distances over training (zero before the
perturbation, its exact size right after) and interpolation between final weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.config import config_from_dict
from analysis_lib.data import load_dataset
from analysis_lib.grid import expand_grid, run_grid
from analysis_lib.interpolation import BARRIER_COLUMNS
from analysis_lib.models import build_model
from analysis_lib.trajectory import layer_sizes
from analysis_lib.twins import PAIR_COLUMNS, pair_distances, pair_interpolations, twin_pairs

BASE = {"data": {"name": "gaussian_mixture", "n_train": 120, "n_test": 60, "n_classes": 3, "n_features": 5},
        "model": {"kind": "mlp", "depth": 2, "width": 8},
        "train": {"optimizer": "sgd", "lr": 0.1, "batch_size": 30, "steps": 30},
        "probes": {"names": ["eval", "weights"], "every": 5}}
CONFIG = config_from_dict(BASE)
SCALE = 1e-3


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("twins") / "runs")
    parents = expand_grid(BASE, {"parent": {"train.perturb_step": [0], "train.perturb_scale": [0.0]}}, [0, 1, 2, 3])
    twins = expand_grid(BASE, {"twin": {"train.perturb_step": [0, 10], "train.perturb_scale": [SCALE]}}, [0, 1])
    result = run_grid(parents + twins, store_root=store, progress=False)
    return result, store


def test_pairs(grid):
    result, _ = grid
    pairs = twin_pairs(result.runs)
    assert list(pairs.columns) == PAIR_COLUMNS and len(pairs) == 6
    runs = result.runs.set_index("run_id")
    indep = pairs[pairs["pair"] == "independent"]
    assert [(runs.loc[r.run_id, "seed"], runs.loc[r.run_id_b, "seed"]) for r in indep.itertuples()] == [(0, 2), (1, 3)]
    twins = pairs[pairs["pair"] != "independent"]
    assert (runs.loc[twins["run_id"], "arm"] == "parent").all() and (runs.loc[twins["run_id_b"], "arm"] == "twin").all()
    assert (runs.loc[twins["run_id"], "seed"].to_numpy() == runs.loc[twins["run_id_b"], "seed"].to_numpy()).all()
    # A twin whose run did not finish has no pair.
    broken = result.runs.assign(status=np.where(result.runs["run_id"] == twins["run_id_b"].iloc[0], "diverged",
                                                result.runs["status"]))
    assert len(twin_pairs(broken)) == 5


def test_distances_are_zero_before_the_perturbation_and_its_size_after(grid):
    result, store = grid
    pairs = twin_pairs(result.runs)
    trajectories = result.checkpoints("trajectory", store)
    model = build_model(CONFIG.model, 5, 3, 0)
    dist = pair_distances(pairs, trajectories, layer_sizes(model))
    assert set(dist["layer"]) == {"model", "fc1", "fc2", "out"}
    rel = dist[(dist["metric"] == "relative_distance") & (dist["layer"] == "model")]
    at0 = rel[rel["pair"] == "twin, step 0"].set_index(["seed", "step"])["value"]
    assert at0.xs(0, level="step").to_numpy() == pytest.approx(SCALE, rel=1e-4)  # float32 weights
    late = rel[rel["pair"] == "twin, step 10"]
    assert (late.loc[late["step"] < 10, "value"] == 0).all() and (late.loc[late["step"] >= 10, "value"] > 0).all()
    indep = rel[rel["pair"] == "independent"]
    assert (indep["value"] > 0.5).all()  # different initial weights


def test_interpolations_between_final_weights(grid):
    result, store = grid
    pairs = twin_pairs(result.runs)
    finals = result.checkpoints("final", store)
    data = load_dataset(CONFIG.data)
    model = build_model(CONFIG.model, data.n_features, data.n_classes, 0)
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    curves, barriers = pair_interpolations(pairs, finals, model, splits, alphas=np.linspace(0, 1, 5))
    assert len(curves) == 6 * 2 * 2 * 2 * 5  # pairs × matching × splits × metrics × alphas
    assert list(barriers.columns) == BARRIER_COLUMNS + ["pair", "perturb_step", "seed"]
    assert len(barriers) == 6 * 2 * 2 * 2 and (barriers["barrier"] >= 0).all()
    # The end points are the two runs' own final train loss, whatever the matching.
    metrics = result.metrics
    final_loss = metrics[(metrics["metric"] == "train_loss") & (metrics["step"] == 30)].set_index("run_id")["value"]
    train_loss = barriers[(barriers["split"] == "train") & (barriers["metric"] == "loss")]
    np.testing.assert_allclose(train_loss["value_a"], final_loss.loc[train_loss["run_id"]], rtol=1e-5)
    np.testing.assert_allclose(train_loss["value_b"], final_loss.loc[train_loss["run_id_b"]], rtol=1e-5)
    assert isinstance(curves, pd.DataFrame) and set(curves["pair"]) == set(pairs["pair"])


def _summary(twin_distance: float, barrier: float) -> pd.DataFrame:
    """A pair summary of five seeds: step-0 twins at ``twin_distance``, independent pairs at 1.4."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        for pair, dist, bar in (("twin, step 0", twin_distance, barrier), ("independent", 1.4, 2.0)):
            rows += [{"pair": pair, "seed": seed, "matched": False, "metric": "relative_distance",
                      "value": dist * (1 + 0.02 * rng.standard_normal())},
                     {"pair": pair, "seed": seed, "matched": False, "metric": "barrier",
                      "value": bar * (1 + 0.02 * rng.standard_normal())}]
    return pd.DataFrame(rows)


def test_apart_verdicts_follow_the_rules():
    from analysis_lib.twins import apart_verdicts

    near = apart_verdicts(_summary(0.3, 0.001), comparable=0.5, barrier_min=0.05, perturb_scale=1e-4, n_boot=200)
    assert [r["reproduced"] for r in near] == ["no", "no"] and near[0]["n"] == 5
    assert "0.0001 at the perturbation" in near[0]["measured"] and "= 0.21" in near[0]["measured"]
    far = apart_verdicts(_summary(1.3, 0.5), comparable=0.5, barrier_min=0.05, perturb_scale=1e-4, n_boot=200)
    assert [r["reproduced"] for r in far] == ["yes", "yes"]


def test_twin_design_is_checked():
    from analysis_lib.config import ConfigError
    from analysis_lib.twins import check_twin_design

    check_twin_design([0, 1, 2, 3], [0, 1], 1e-4, ["weights"], 0.5, 0.05)
    for args, name in [(([0, 1, 2], [0, 1], 1e-4, ["weights"], 0.5, 0.05), "twin_seeds"),
                       (([0, 1, 2, 3], [0], 0.0, ["weights"], 0.5, 0.05), "perturb_scale"),
                       (([0, 1, 2, 3], [0], 1e-4, ["eval"], 0.5, 0.05), "probes.names"),
                       (([0, 1, 2, 3], [0], 1e-4, ["weights"], 1.5, 0.05), "comparable"),
                       (([0, 1, 2, 3], [0], 1e-4, ["weights"], 0.5, -1.0), "barrier_min")]:
        with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
            check_twin_design(*args)
