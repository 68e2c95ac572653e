"""The one training loop: probes do not perturb it, it is deterministic, divergence is data.

Phases and interventions happen where they should, and every model family goes through it.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from analysis_lib.runs.execute import ensure_run, run_grid
from analysis_lib.runs.grid import expand_grid
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import with_overrides
from analysis_lib.training.loop import Phase, make_optimizer, train_phases
from analysis_lib.training.objective import Classification
from analysis_lib.training.probe import build_probes, probe_names
from analysis_lib.training.schedules import batches, warmup_cosine
from analysis_lib.validation import ConfigError


def _losses(metrics: pd.DataFrame) -> pd.Series:
    return metrics[metrics["metric"] == "batch_loss"].set_index("step")["value"]


BINARY_ONLY = {"neuron_alignment"}  # refuses data whose labels are not 0 and 1, or inputs that are not flat
BINARY = {"data.n_classes": 2}


@pytest.mark.parametrize("overrides", [
    {},
    {"model.norm": "batch"},  # eval-mode probes must leave BatchNorm running stats alone
    {"train.optimizer": "adam", "train.lr": 0.01, "model.kind": "cnn", "model.width": 4},
    BINARY,  # every probe, the binary-only ones too
    {**BINARY, "model.norm": "batch", "train.sam_rho": 0.05},  # SAM's second pass too
])
def test_probes_do_not_change_training(tiny_config, overrides):
    names = [n for n in probe_names() if "data.n_classes" in overrides or n not in BINARY_ONLY]
    with_probes = with_overrides(tiny_config, {**overrides, "probes.every": 1, "probes.names": names})
    without = with_overrides(with_probes, {"probes.names": []})
    a, b = _losses(train_classifier(with_probes).metrics), _losses(train_classifier(without).metrics)
    assert len(a) == tiny_config.train.steps
    pd.testing.assert_series_equal(a, b, check_exact=True)


def test_training_leaves_global_rng_untouched(tiny_config):
    state = torch.random.get_rng_state()
    train_classifier(tiny_config)
    assert torch.equal(state, torch.random.get_rng_state())


def test_same_config_and_seed_give_identical_metrics(tiny_config, tmp_path):
    ensure_run(tiny_config, str(tmp_path / "a"))
    ensure_run(tiny_config, str(tmp_path / "b"))
    rid = run_id(tiny_config)
    a = RunStore(tmp_path / "a").load_metrics(rid)
    b = RunStore(tmp_path / "b").load_metrics(rid)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_different_seeds_give_different_runs(tiny_config):
    a = _losses(train_classifier(tiny_config).metrics)
    b = _losses(train_classifier(with_overrides(tiny_config, {"seed": 1})).metrics)
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


def test_a_diverged_run_keeps_its_probe_tables_and_no_unfinished_checkpoint(tiny_config):
    config = with_overrides(tiny_config, {"train.lr": 1e8, "probes.names": ["weights"]})
    result = train_classifier(config)
    assert result.status == "diverged"
    steps = result.tables["trajectory"]["steps"].tolist()
    assert steps[0] == 0 and steps[-1] < result.diverged_step
    assert "final" in result.tables  # the weights where the run stopped


def test_full_batch_gradient_descent_is_monotone_at_small_lr(tiny_config):
    config = with_overrides(tiny_config, {"train.batch_size": 0, "train.lr": 0.05, "train.steps": 20})
    losses = _losses(train_classifier(config).metrics).to_numpy()
    assert (losses[1:] <= losses[:-1] + 1e-7).all()


def test_warmup_reaches_the_optimiser(tiny_config):
    """The learning rate the optimiser uses at each update is the schedule's (seen in the update size)."""
    config = with_overrides(tiny_config, {"train.warmup_steps": 4, "train.lr": 0.2, "train.batch_size": 0,
                                          "probes.names": ["update_ratio"], "probes.every": 1, "train.steps": 6})
    warm = train_classifier(config).metrics
    flat = train_classifier(with_overrides(config, {"train.warmup_steps": 0})).metrics
    ratio = lambda m: m[(m["metric"] == "update_ratio") & (m["layer"] == "model")].set_index("step")["value"]  # noqa: E731
    # Full-batch SGD from the same θ(0): update 1 is lr/4 of the constant-rate update 1.
    assert ratio(warm)[1] == pytest.approx(ratio(flat)[1] / 4, rel=1e-5)


def test_perturbation_has_the_requested_relative_size_and_changes_only_the_twin(tiny_config):
    base = with_overrides(tiny_config, {"probes.names": ["weights"]})
    twin = with_overrides(base, {"train.perturb_scale": 1e-3, "train.perturb_seed": 5})
    a = train_classifier(base).tables["trajectory"]["weights"]
    b = train_classifier(twin).tables["trajectory"]["weights"]
    rel = ((a[0].double() - b[0].double()).norm() / a[0].double().norm()).item()
    assert rel == pytest.approx(1e-3, rel=1e-4)
    late = with_overrides(twin, {"train.perturb_step": 6})
    c = train_classifier(late).tables["trajectory"]["weights"]
    assert torch.equal(a[:2], c[:2])  # steps 0, 3: identical until the perturbation
    assert not torch.equal(a[2], c[2])  # step 6 is probed after the perturbation


def test_perturbation_step_beyond_training_is_rejected(tiny_config):
    with pytest.raises(ConfigError, match=r"train.perturb_step=99"):
        with_overrides(tiny_config, {"train.perturb_step": 99})


def test_phases_count_steps_on_store_checkpoints_and_use_fresh_optimisers(tiny_config):
    """Two phases through train_phases: steps continue, each phase's end is probed and checkpointed."""
    data = tiny_config.dataset()
    model = tiny_config.build_model().train()
    objective = Classification(data)

    def phase(name, steps, lr, seed):
        return Phase(name, steps, lambda m: make_optimizer(m, "sgd", lr), warmup_cosine(lr, 0, steps),
                     batches(len(data.y_train), 30, seed, torch.device("cpu")), {steps}, checkpoint=name)

    probes = build_probes(with_overrides(tiny_config, {"probes.names": ["eval", "weights"]}).probes,
                          objective.capabilities)
    result = train_phases(model, objective, [phase("first", 5, 0.1, 1), phase("second", 3, 0.01, 2)], probes)
    assert result.status == "finished"
    assert _losses(result.metrics).index.tolist() == list(range(1, 9))
    assert sorted(result.metrics.loc[result.metrics["metric"] == "test_acc", "step"]) == [0, 5, 8]
    assert result.tables["trajectory"]["steps"].tolist() == [0, 5, 8]
    final_first = torch.cat([v.reshape(-1) for k, v in result.tables["first"].items()])
    assert torch.equal(result.tables["trajectory"]["weights"][1], final_first.float())
    assert {"first_seconds", "second_seconds", "train_seconds", "probe_seconds"} <= set(result.timings)


def test_an_intervention_at_step_zero_happens_before_anything_is_observed(tiny_config):
    data = tiny_config.dataset()
    objective = Classification(data)
    probes = build_probes(with_overrides(tiny_config, {"probes.names": ["dist_init", "weight_norm"]}).probes,
                          objective.capabilities)
    phase = Phase("train", 1, lambda m: make_optimizer(m, "sgd", 0.1), warmup_cosine(0.1, 0, 1),
                  batches(len(data.y_train), 30, 1, torch.device("cpu")), {1})

    def zero(params):
        with torch.no_grad():
            for v in params.values():
                v.zero_()
    result = train_phases(tiny_config.build_model().train(), objective, [phase], probes, interventions={0: zero})
    m = result.metrics
    step0 = m[(m["step"] == 0) & (m["layer"] == "model")].set_index("metric")["value"]
    assert step0["weight_norm"] == 0.0 and step0["dist_init"] == 0.0  # θ(0) is the zeroed one
