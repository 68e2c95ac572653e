"""Interpolation between two solutions in float64, and between the final weights of twin runs.

The barrier of closed-form paths, curve values against a direct loop over α (each BatchNorm rule), weight
matching before interpolation, and the curves and barriers between twin runs of a tiny trained grid.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from analysis_lib.landscape.interpolation import (
    BARRIER_COLUMNS,
    INTERPOLATION_COLUMNS,
    barrier,
    default_alphas,
    interpolation_barriers,
    interpolation_curve,
    pair_interpolations,
)
from analysis_lib.studies.run_to_run import twin_pairs
from analysis_lib.training.config import ModelConfig
from analysis_lib.training.models import build_model

N_FEATURES, N_CLASSES = 5, 3
MODELS = [
    ("plain", ModelConfig(kind="mlp", depth=2, width=6)),
    ("batchnorm", ModelConfig(kind="mlp", depth=2, width=6, norm="batch")),
    ("layernorm-residual", ModelConfig(kind="mlp", depth=2, width=6, norm="layer", residual=True)),
]


# --------------------------------------------------------------------------------------------
# The barrier of known 1-D paths.

def test_barrier_of_a_symmetric_quadratic_path():
    # L(α) = (1−α)L_A + αL_B + c·α(1−α): the rise above the line is c·α(1−α), largest c/4 at α = 1/2.
    alphas = default_alphas(21)
    la, lb, c = 0.3, 0.7, 2.0
    path = (1 - alphas) * la + alphas * lb + c * alphas * (1 - alphas)
    height, at = barrier(alphas, path)
    assert height == pytest.approx(c / 4, abs=1e-15) and at == 0.5


def test_barrier_of_an_asymmetric_path_and_of_an_accuracy():
    # Rise c·α²(1−α): maximum 4c/27 at α = 2/3, which the grid contains.
    alphas = np.linspace(0.0, 1.0, 301)
    c = 1.5
    path = 0.2 + 0.1 * alphas + c * alphas**2 * (1 - alphas)
    height, at = barrier(alphas, path)
    assert height == pytest.approx(4 * c / 27, rel=1e-12) and at == pytest.approx(2 / 3, abs=1e-12)
    # An accuracy dips below the line: the barrier is the largest drop, positive.
    acc = 0.9 - 0.05 * alphas - c * alphas**2 * (1 - alphas)
    assert barrier(alphas, acc, worse="lower")[0] == pytest.approx(4 * c / 27, rel=1e-12)
    assert barrier(alphas, acc)[0] == pytest.approx(0.0, abs=1e-15)  # never above the line


def test_default_alphas_span_the_segment_and_refuse_fewer_than_two_points():
    np.testing.assert_array_equal(default_alphas(5), [0.0, 0.25, 0.5, 0.75, 1.0])
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="invalid argument points="):
            default_alphas(bad)


def test_barrier_ignores_points_outside_the_segment_and_needs_both_ends():
    alphas = np.array([-0.5, 0.0, 0.25, 0.5, 1.0, 1.5])
    values = np.array([9.0, 1.0, 1.5, 1.2, 1.0, 9.0])
    assert barrier(alphas, values) == (0.5, 0.25)
    with pytest.raises(ValueError, match="contain 0 and 1"):
        barrier([0.0, 0.5], [1.0, 2.0])


# --------------------------------------------------------------------------------------------
# Curves against a direct loop.

def _state(config: ModelConfig, seed: int) -> dict:
    """A float64 state with non-trivial BatchNorm statistics (a few train-mode passes)."""
    gen = torch.Generator().manual_seed(50 + seed)
    model = build_model(config, N_FEATURES, N_CLASSES, seed).double()
    with torch.no_grad():
        for _ in range(3):
            model.train()(2.0 * torch.randn(40, N_FEATURES, generator=gen, dtype=torch.float64) + seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _data(seed: int, n: int):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, N_FEATURES, generator=gen, dtype=torch.float64),
            torch.randint(0, N_CLASSES, (n,), generator=gen))


def _direct(model, state_a, state_b, alpha, x, y, recompute_on=None):
    """The obvious loop: load the interpolated state, optionally re-estimate BN statistics, evaluate."""
    m = copy.deepcopy(model)
    m.load_state_dict({k: (1 - alpha) * v + alpha * state_b[k] if v.is_floating_point() else v
                       for k, v in state_a.items()})
    with torch.no_grad():
        if recompute_on is not None:
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm1d):
                    mod.reset_running_stats()
                    mod.momentum = None
            m.train()(recompute_on)
        logits = m.eval()(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


@pytest.mark.parametrize("name,config", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("rule", ["interpolate", "recompute"])
def test_curve_matches_a_direct_loop(name, config, rule):
    model = build_model(config, N_FEATURES, N_CLASSES, 9).double()
    before = copy.deepcopy(model.state_dict())
    state_a, state_b = _state(config, 0), _state(config, 1)
    splits = {"train": _data(2, 37), "test": _data(3, 23)}
    alphas = [-0.25, 0.0, 0.3, 0.5, 1.0, 1.2]
    curve = interpolation_curve(model, state_a, state_b, splits, alphas=alphas, batchnorm=rule,
                                run_ids=("a", "b"))
    assert list(curve.columns) == INTERPOLATION_COLUMNS and len(curve) == 2 * 2 * len(alphas)
    for split, (x, y) in splits.items():
        for alpha in alphas:
            loss, acc = _direct(model, state_a, state_b, alpha, x, y,
                                splits["train"][0] if rule == "recompute" else None)
            row = curve[(curve["split"] == split) & (curve["alpha"] == alpha)].set_index("metric")["value"]
            assert row["loss"] == pytest.approx(loss, rel=1e-12)
            assert row["acc"] == pytest.approx(acc, abs=1e-15)
    for key, value in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(value, before[key])


def test_the_batchnorm_rules_differ_only_with_batchnorm():
    for name, config in MODELS:
        model = build_model(config, N_FEATURES, N_CLASSES, 9).double()
        args = (model, _state(config, 0), _state(config, 1), {"test": _data(3, 30)})
        a = interpolation_curve(*args, batchnorm="interpolate")["value"]
        b = interpolation_curve(*args, batchnorm="recompute", stats_x=_data(2, 50)[0])["value"]
        assert np.allclose(a, b, rtol=1e-12) == (name != "batchnorm"), name


def test_matching_keeps_the_end_points_and_changes_the_path():
    config = MODELS[0][1]
    model = build_model(config, N_FEATURES, N_CLASSES, 9).double()
    state_a, state_b = _state(config, 0), _state(config, 1)
    splits = {"test": _data(3, 60)}
    plain = interpolation_curve(model, state_a, state_b, splits)
    matched = interpolation_curve(model, state_a, state_b, splits, match=True)
    assert matched["matched"].all() and not plain["matched"].any()
    ends = plain["alpha"].isin([0.0, 1.0])
    np.testing.assert_allclose(matched.loc[ends, "value"], plain.loc[ends, "value"], rtol=1e-12)
    assert not np.allclose(matched.loc[~ends, "value"], plain.loc[~ends, "value"])


def test_barrier_table_agrees_with_barrier_of_each_curve():
    config = MODELS[0][1]
    model = build_model(config, N_FEATURES, N_CLASSES, 9).double()
    curves = pd.concat([interpolation_curve(model, _state(config, 0), _state(config, s), {"test": _data(3, 40)},
                                            run_ids=("a", f"b{s}")) for s in (1, 2)])
    table = interpolation_barriers(curves)
    assert len(table) == 4
    for row in table.itertuples():
        sub = curves[(curves["run_id_b"] == row.run_id_b) & (curves["metric"] == row.metric)]
        expected = barrier(sub["alpha"], sub["value"], worse="lower" if row.metric == "acc" else "higher")
        assert (row.barrier, row.alpha_max) == expected
        assert row.value_a == sub.loc[sub["alpha"] == 0.0, "value"].item()


def test_bad_arguments_are_refused():
    config = MODELS[1][1]
    model = build_model(config, N_FEATURES, N_CLASSES, 9).double()
    args = (model, _state(config, 0), _state(config, 1))
    with pytest.raises(ValueError, match="contain 0 and 1"):
        interpolation_curve(*args, {"test": _data(3, 10)}, alphas=[0.0, 0.5])
    with pytest.raises(ValueError, match="batchnorm='mean'"):
        interpolation_curve(*args, {"test": _data(3, 10)}, batchnorm="mean")
    with pytest.raises(ValueError, match="needs stats_x"):
        interpolation_curve(*args, {"test": _data(3, 10)}, batchnorm="recompute")


# --------------------------------------------------------------------------------------------
# Between the final weights of twin runs (study 06's pairs).

def test_interpolations_between_final_weights(twin_runs):
    result, config = twin_runs, next(iter(twin_runs.configs.values()))
    pairs = twin_pairs(result.runs)
    finals = result.checkpoints("final")
    data = config.dataset()
    model = config.build_model()
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
