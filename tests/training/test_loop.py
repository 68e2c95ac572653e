"""Training: probes do not perturb it, it is deterministic, divergence is data, warm-up and batching work."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from analysis_lib.config import PROBES, with_overrides
from analysis_lib.grid import ensure_run, expand_grid, run_grid
from analysis_lib.runstore import RunStore, run_id
from analysis_lib.training import batches, lr_at, train


def _losses(metrics: pd.DataFrame) -> pd.Series:
    return metrics[metrics["metric"] == "batch_loss"].set_index("step")["value"]


@pytest.mark.parametrize("overrides", [
    {},
    {"model.norm": "batch"},  # eval-mode probes must leave BatchNorm running stats alone
    {"train.optimizer": "adam", "train.lr": 0.01, "model.kind": "cnn", "model.width": 4},
])
def test_probes_do_not_change_training(tiny_config, overrides):
    with_probes = with_overrides(tiny_config, {**overrides, "probes.every": 1, "probes.names": list(PROBES)})
    without = with_overrides(with_probes, {"probes.names": []})
    a, b = _losses(train(with_probes).metrics), _losses(train(without).metrics)
    assert len(a) == tiny_config.train.steps
    pd.testing.assert_series_equal(a, b, check_exact=True)


def test_training_leaves_global_rng_untouched(tiny_config):
    state = torch.random.get_rng_state()
    train(tiny_config)
    assert torch.equal(state, torch.random.get_rng_state())


def test_same_config_and_seed_give_identical_metrics(tiny_config, tmp_path):
    ensure_run(tiny_config, str(tmp_path / "a"))
    ensure_run(tiny_config, str(tmp_path / "b"))
    rid = run_id(tiny_config)
    a = RunStore(tmp_path / "a").load_metrics(rid)
    b = RunStore(tmp_path / "b").load_metrics(rid)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_different_seeds_give_different_runs(tiny_config):
    a = _losses(train(tiny_config).metrics)
    b = _losses(train(with_overrides(tiny_config, {"seed": 1})).metrics)
    assert not a.equals(b)


def test_divergence_is_recorded_and_the_grid_goes_on(tiny_config, store_root):
    configs = expand_grid(tiny_config, {"train.lr": [0.1, 1e8]}, [0])
    result = run_grid(configs, store_root=store_root, progress=False)
    runs = result.runs.set_index("lr")
    assert runs.loc[0.1, "status"] == "finished"
    assert runs.loc[1e8, "status"] == "diverged"
    step = runs.loc[1e8, "diverged_step"]
    assert 1 <= step <= tiny_config.train.steps
    diverged = result.metrics[result.metrics["lr"] == 1e8]
    assert diverged["step"].max() == step  # metrics up to the divergence are kept
    assert result.status_counts() == {"finished": 1, "diverged": 1, "failed": 0}


def test_warmup_is_linear_then_constant(tiny_config):
    tc = with_overrides(tiny_config, {"train.warmup_steps": 4, "train.lr": 0.2}).train
    assert [lr_at(s, tc) for s in (1, 2, 4, 5, 100)] == pytest.approx([0.05, 0.1, 0.2, 0.2, 0.2])


def test_batches_cover_each_epoch_once_and_full_batch():
    gen = batches(10, 3, seed=0, device="cpu")
    epoch = torch.cat([next(gen) for _ in range(3)])  # 3 batches of 3; the ragged 10th is dropped
    assert len(set(epoch.tolist())) == 9
    full = batches(10, 0, seed=0, device="cpu")
    assert next(full).tolist() == list(range(10))


def test_full_batch_gradient_descent_is_monotone_at_small_lr(tiny_config):
    config = with_overrides(tiny_config, {"train.batch_size": 0, "train.lr": 0.05, "train.steps": 20})
    losses = _losses(train(config).metrics).to_numpy()
    assert (losses[1:] <= losses[:-1] + 1e-7).all()


def test_sharpness_probe_matches_the_dense_hessian(tiny_config):
    """λ_max and the trace recorded during training equal those of the dense Hessian at θ(t)."""
    from analysis_lib.data import load_dataset
    from analysis_lib.hessian import dense_hessian
    from analysis_lib.models import build_model

    config = with_overrides(tiny_config, {"train.dtype": "float64", "train.steps": 1,
                                          "probes.names": ["sharpness", "hessian_trace"],
                                          "probes.sharpness_tol": 1e-9, "probes.trace_matvecs": 200,
                                          "probes.curvature_samples": 50})
    metrics = train(config).metrics.set_index(["step", "metric"])["value"]
    data = load_dataset(config.data).to("cpu", torch.float64)
    model = build_model(config.model, data.n_features, data.n_classes, config.seed).double()
    H = dense_hessian(model, data.x_train[:50], data.y_train[:50])  # θ(0)
    assert metrics[(0, "lambda_max")] == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-8)
    assert metrics[(0, "lambda_max_converged")] == 1.0
    trace, se = metrics[(0, "hessian_trace")], metrics[(0, "hessian_trace_se")]
    assert abs(trace - torch.trace(H).item()) < 4 * se + 1e-9


def test_weights_probe_stores_the_trajectory_and_final_weights(tiny_config, store_root):
    config = with_overrides(tiny_config, {"probes.names": ["weights"]})
    result = train(config)
    traj, final = result.tables["trajectory"], result.tables["final"]
    assert traj["steps"].tolist() == [0, 3, 6, 9, 12]
    assert traj["weights"].shape == (5, sum(v.numel() for k, v in final.items()))
    flat_final = torch.cat([v.reshape(-1) for v in final.values()])
    assert torch.equal(traj["weights"][-1], flat_final)
    ensure_run(config, store_root)
    stored = RunStore(store_root).load_checkpoint(run_id(config), "trajectory")
    assert torch.equal(stored["weights"], traj["weights"])


def test_perturbation_has_the_requested_relative_size_and_changes_only_the_twin(tiny_config):
    base = with_overrides(tiny_config, {"probes.names": ["weights"]})
    twin = with_overrides(base, {"train.perturb_scale": 1e-3, "train.perturb_seed": 5})
    a, b = train(base).tables["trajectory"]["weights"], train(twin).tables["trajectory"]["weights"]
    rel = ((a[0].double() - b[0].double()).norm() / a[0].double().norm()).item()
    assert rel == pytest.approx(1e-3, rel=1e-4)
    late = with_overrides(twin, {"train.perturb_step": 6})
    c = train(late).tables["trajectory"]["weights"]
    assert torch.equal(a[:2], c[:2])  # steps 0, 3: identical until the perturbation
    assert not torch.equal(a[2], c[2])  # step 6 is probed after the perturbation


def test_perturbation_step_beyond_training_is_rejected(tiny_config):
    from analysis_lib.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.perturb_step=99"):
        with_overrides(tiny_config, {"train.perturb_step": 99})
