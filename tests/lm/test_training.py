"""Language-model runs: configs, the masked loss, the two phases, probes and the run grid.

Configs refuse bad values by name, the loss is a mean of per-sequence token means, both phases take their
learning rate from warmup_cosine, the weight perturbation applies, every probe (curvature and weights included)
records at every probe step of both phases without perturbing training, and grids cache LM runs.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import analysis_lib.lm.training as lm_training
from analysis_lib.gradients.noise import GradientNoiseProbe
from analysis_lib.lm.config import LMRunConfig
from analysis_lib.lm.tasks import Batch, encode, task_splits
from analysis_lib.lm.training import batch_loss, build_lm, train_lm
from analysis_lib.runs.execute import run_grid, torch_threads
from analysis_lib.runs.grid import expand_grid
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.training.config import RunConfig, TrainConfig, config_from_dict, with_overrides
from analysis_lib.training.schedules import warmup_cosine
from analysis_lib.validation import ConfigError
from tests.cases import tiny_lm_config

TINY = {"task": {"n_digits": 1, "n_train": 60, "n_test": 20},
        "model": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32},
        "train": {"steps": 12, "batch_size": 16, "warmup_steps": 3, "lr": 0.01},
        "finetune": {"steps": 6},
        "probes": {"every": 5, "eval_problems": 8}}


@pytest.fixture
def tiny_lm():
    return config_from_dict(TINY, LMRunConfig)


def _losses(metrics: pd.DataFrame) -> pd.Series:
    return metrics[metrics["metric"] == "batch_loss"].set_index("step")["value"]


@pytest.mark.parametrize("key,value,text", [
    ("task.n_digits", 7, "<= 6"), ("task.n_train", 9990, "distinct 2-digit problems"),
    ("task.slow_fraction", 1.5, "[0.0, 1.0]"), ("task.corrupt_fraction", 0.0, "at least one wrong step"),
    ("model.norm", "sandwich", "'pre', 'post', 'peri'"), ("train.decay", "step", "'cosine'"),
    ("train.optimizer", "lion", "'adam'"), ("train.perturb_scale", -0.1, "[0.0, inf]"),
    ("train.perturb_step", 900, "must be <= train.steps"),
    ("train.final_lr_fraction", 2.0, "[0.0, 1.0]"),
    ("finetune.steps", -1, ">= 0"), ("finetune.lr", 0.0, "> 0"),
    ("probes.names", ["nonsense"], "must be one of .*'sharpness'"),
    ("probes.every", 0, ">= 1"), ("seed", -1, ">= 0")])
def test_bad_parameters_are_refused_by_name(key, value, text):
    with pytest.raises(ConfigError, match=rf"invalid parameter {key}=.*{text}".replace("[", r"\[").replace("(", r"\(")):
        with_overrides(LMRunConfig(), {key: value})


def test_sections_left_out_keep_the_lm_defaults(tiny_lm):
    assert tiny_lm.train.optimizer == "adam" and tiny_lm.train.decay == "cosine"
    assert config_from_dict({"train": {"steps": 5}}, LMRunConfig).train.optimizer == "adam"
    with pytest.raises(ConfigError, match="task.digits"):
        config_from_dict({"task": {"digits": 2}}, LMRunConfig)
    with pytest.raises(ConfigError, match="unknown section; allowed: task, model, train, finetune, probes"):
        config_from_dict({"data": {}}, LMRunConfig)
    with pytest.raises(ConfigError, match="invalid parameter train=.*LMTrainConfig"):
        LMRunConfig(train=TrainConfig())


def test_run_ids_differ_between_kinds_and_grids_expand(tiny_lm):
    assert tiny_lm.identity()["kind"] == "lm" and "kind" not in RunConfig().identity()
    assert run_id(tiny_lm) != run_id(with_overrides(tiny_lm, {"seed": 1}))
    configs = expand_grid(tiny_lm, {"train.lr": [0.01, 0.02], "model.norm": ["pre", "peri"]}, [0, 1])
    assert len(configs) == 8 and all(isinstance(c, LMRunConfig) for c in configs)
    assert dict(configs[-1].conditions) == {"lr": 0.02, "norm": "peri"}
    assert (configs[-1].train.lr, configs[-1].model.norm, configs[-1].seed) == (0.02, "peri", 1)


def test_loss_is_the_mean_of_per_sequence_token_means():
    config = config_from_dict(TINY, LMRunConfig)
    model = build_lm(config).double()
    train, _ = task_splits(config.task)
    fast, slow = encode(train.subset(slice(0, 3)), "fast"), encode(train.subset(slice(3, 5)), "slow")
    length = slow.tokens.shape[1]
    padded = encode(train.subset(slice(0, 3)), "fast", length)
    tokens = torch.cat([padded.tokens, slow.tokens])
    batch = type(slow)(tokens, torch.cat([padded.targets, slow.targets]), torch.cat([padded.mask, slow.mask]),
                       torch.cat([padded.answer_mask, slow.answer_mask]))
    per_sequence = []
    for part in (fast, slow):  # brute force: one sequence and one token at a time
        logits = model(part.tokens)
        for i in range(len(part.tokens)):
            terms = [-torch.log_softmax(logits[i, t], dim=-1)[part.targets[i, t]]
                     for t in range(part.tokens.shape[1]) if part.mask[i, t]]
            per_sequence.append(sum(terms) / len(terms))
    torch.testing.assert_close(batch_loss(model, batch), sum(per_sequence) / 5, rtol=1e-12, atol=0)


def test_the_gradient_noise_probe_sees_per_sequence_gradients(tiny_lm):
    """The training loss is a mean of per-sequence losses, which the probe's estimator assumes."""
    model = build_lm(tiny_lm).double()
    problems = task_splits(tiny_lm.task)[0].subset(slice(0, 6))
    length = encode(problems, "slow").tokens.shape[1]
    fast, slow = encode(problems.subset(slice(0, 3)), "fast", length), encode(problems.subset(slice(3, 6)), "slow")
    fields = ("tokens", "targets", "mask", "answer_mask")
    batch = Batch(*(torch.cat([getattr(fast, f), getattr(slow, f)]) for f in fields))
    with GradientNoiseProbe(model) as probe:
        batch_loss(model, batch).backward()
    stats = {(layer, metric): value for layer, metric, value in probe.statistics()}
    per_sequence = []
    for i in range(6):  # brute force: each sequence's own loss, its own backward pass
        model.zero_grad()
        batch_loss(model, Batch(*(getattr(batch, f)[i: i + 1] for f in fields))).backward()
        per_sequence.append(model.blocks[1].mlp.up.weight.grad.clone())
    g = torch.stack(per_sequence)  # (6, d_mlp, d_model)
    expected = (g - g.mean(dim=0)).square().sum().item() / 5
    assert stats["blocks.1.mlp.up", "grad_var_trace"] == pytest.approx(expected, rel=1e-9)


def test_learning_rate_warms_up_then_decays_to_the_final_fraction():
    lr_at = warmup_cosine(1.0, 10, 110, 0.1)
    assert lr_at(5) == pytest.approx(0.5) and lr_at(10) == pytest.approx(1.0)
    assert lr_at(60) == pytest.approx(0.55) and lr_at(110) == pytest.approx(0.1)
    constant = warmup_cosine(0.3, 0, 20)
    assert constant(1) == constant(20) == 0.3  # exactly lr: the fine-tuning phase's constant rate


@pytest.mark.parametrize("decay, final", [("cosine", 0.1), ("constant", 1.0)])
def test_both_phases_take_their_schedule_from_warmup_cosine(tiny_lm, monkeypatch, decay, final):
    calls, real = [], warmup_cosine

    def recording(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(lm_training, "warmup_cosine", recording)
    config = with_overrides(tiny_lm, {"train.decay": decay, "finetune.warmup_steps": 2, "probes.names": []})
    train_lm(config)
    assert calls == [(0.01, 3, 12, final), (config.finetune.lr, 2, 6)]


def test_weights_can_be_perturbed_in_pretraining(tiny_lm):
    plain = train_lm(with_overrides(tiny_lm, {"probes.names": []}))
    kicked = train_lm(with_overrides(tiny_lm, {"probes.names": [], "train.perturb_scale": 0.1,
                                               "train.perturb_step": 4}))
    before, after = _losses(plain.metrics), _losses(kicked.metrics)
    pd.testing.assert_series_equal(before.loc[:4], after.loc[:4], check_exact=True)  # same until the kick
    assert (before.loc[5:] != after.loc[5:]).all()


def test_two_phases_record_metrics_and_checkpoints(tiny_lm):
    result = train_lm(with_overrides(tiny_lm, {"probes.names": ["eval", "grad_norm", "grad_noise"]}))
    m = result.metrics
    assert result.status == "finished"
    assert _losses(m).index.tolist() == list(range(1, 19))  # 12 pre-training + 6 fine-tuning updates
    assert sorted(m.loc[m["metric"] == "test_seq_acc_fast", "step"]) == [0, 5, 10, 12, 17, 18]
    assert sorted(m.loc[m["metric"] == "test_acc_slow", "step"]) == [12, 18]  # greedy: at each phase's end
    for metric in ("train_loss_slow", "test_loss_fast"):
        assert m.loc[m["metric"] == metric, "value"].between(0, math.inf).all()
    for metric in ("test_acc_fast", "test_acc_slow", "test_seq_acc_fast", "train_seq_acc_slow"):
        assert m.loc[m["metric"] == metric, "value"].between(0, 1).all()
    layers = set(m.loc[m["metric"] == "grad_norm", "layer"])
    assert {"blocks.0.attn.q", "blocks.1.mlp.down", "unembed", "model"} <= layers
    noise = m[m["metric"] == "grad_snr"]
    assert {"blocks.1.attn.v", "model"} <= set(noise["layer"]) and set(noise["step"]) == {5, 10, 12, 17, 18}
    base, tuned = result.tables["base"], result.tables["tuned"]
    assert set(base) == set(build_lm(tiny_lm).state_dict())
    assert not torch.equal(base["blocks.0.attn.q.weight"], tuned["blocks.0.attn.q.weight"])
    assert set(result.timings) >= {"pretrain_seconds", "finetune_seconds", "probe_seconds", "train_seconds"}


def test_probes_do_not_change_training_and_the_global_rng_is_untouched(tiny_lm):
    state = torch.random.get_rng_state()
    probed = train_lm(with_overrides(tiny_lm, {"probes.names": ["eval", "grad_norm", "grad_noise"],
                                               "probes.every": 1}))
    plain = train_lm(with_overrides(tiny_lm, {"probes.names": []}))
    assert torch.equal(state, torch.random.get_rng_state())
    pd.testing.assert_series_equal(_losses(probed.metrics), _losses(plain.metrics), check_exact=True)
    assert torch.equal(probed.tables["tuned"]["unembed.weight"], plain.tables["tuned"]["unembed.weight"])
    other = train_lm(with_overrides(tiny_lm, {"probes.names": [], "seed": 1}))
    assert not _losses(other.metrics).equals(_losses(plain.metrics))


def test_no_finetuning_keeps_the_base_weights(tiny_lm):
    result = train_lm(with_overrides(tiny_lm, {"finetune.steps": 0, "probes.names": []}))
    assert all(torch.equal(result.tables["base"][k], result.tables["tuned"][k]) for k in result.tables["base"])


def test_divergence_is_recorded_with_its_step(tiny_lm):
    result = train_lm(with_overrides(tiny_lm, {"train.optimizer": "sgd", "train.lr": 1e10,
                                               "train.warmup_steps": 0, "probes.names": []}))
    assert result.status == "diverged" and 1 <= result.diverged_step <= 12
    assert _losses(result.metrics).index.max() == result.diverged_step
    assert "tuned" not in result.tables


def test_run_grid_caches_lm_runs_and_their_checkpoints_reload(tiny_lm, store_root):
    configs = expand_grid(tiny_lm, {"model.norm": ["pre", "peri"]}, [0])
    first = run_grid(configs, store_root=store_root, progress=False)
    second = run_grid(configs, store_root=store_root, progress=False)
    assert (first.runs["status"] == "finished").all() and not first.runs["cached"].any()
    assert second.runs["cached"].all()
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    assert set(first.metrics.columns[:3]) == {"run_id", "norm", "seed"}
    tuned = second.checkpoints("tuned")
    with torch_threads(1):  # grid runs train with one thread; the reduction order must match
        fresh = train_lm(configs[1])
    model, reference = build_lm(configs[1], tuned[run_id(configs[1])]), build_lm(configs[1], fresh.tables["tuned"])
    tokens = encode(task_splits(configs[1].task)[1], "slow").tokens
    assert torch.equal(model(tokens), reference(tokens))
    assert RunStore(store_root).load_checkpoint(run_id(configs[0]), "base") is not None


CURVATURE_PROBES = ["eval", "grad_norm", "grad_noise", "sharpness", "hessian_trace", "weights"]


def test_curvature_and_weight_probes_run_in_both_phases_without_perturbing_training():
    config = tiny_lm_config(probes={"names": CURVATURE_PROBES, "curvature_samples": 3})
    probed = train_lm(config)
    plain = train_lm(tiny_lm_config(probes={"names": ["eval"]}))
    m = probed.metrics
    assert probed.status == "finished"
    probe_steps = [0, 4, 8, 12]  # every 4 of 8 pre-training and 4 fine-tuning updates
    assert sorted(m.loc[m["metric"] == "test_seq_acc_fast", "step"]) == probe_steps
    for metric in ("lambda_max", "hessian_trace"):
        rows = m[m["metric"] == metric]
        assert sorted(rows["step"]) == probe_steps and set(rows["layer"]) == {"model"}, metric
        assert rows["value"].map(math.isfinite).all(), metric
    assert sorted(m.loc[m["metric"] == "grad_snr", "step"].unique()) == probe_steps[1:]  # gradients of updates
    assert set(probed.tables) == {"base", "tuned", "trajectory", "final"}
    trajectory, tuned = probed.tables["trajectory"], probed.tables["tuned"]
    assert trajectory["steps"].tolist() == probe_steps
    n_params = sum(p.numel() for p in build_lm(config).parameters())
    assert trajectory["weights"].shape == (4, n_params)
    assert all(torch.equal(probed.tables["final"][k], tuned[k]) for k in tuned)
    pd.testing.assert_series_equal(_losses(probed.metrics), _losses(plain.metrics), check_exact=True)
    assert all(torch.equal(tuned[k], plain.tables["tuned"][k]) for k in tuned)
