"""Bad parameters fail on construction with one message naming parameter, value and what is allowed."""

from __future__ import annotations

import pytest

from analysis_lib.runs.grid import expand_grid
from analysis_lib.training.config import RunConfig, config_from_dict, lookup, run_identity, with_overrides
from analysis_lib.validation import ConfigError

# (override key, bad value, text the message must contain besides the key)
BAD_VALUES = [
    ("data.name", "cifar10", "'mnist1d'"),
    ("data.n_train", 0, ">= 1"),
    ("data.n_classes", 1, ">= 2"),
    ("data.noise", -1.0, "> 0"),
    ("model.kind", "resnet", "'mlp', 'cnn'"),
    ("model.width", 0, ">= 1"),
    ("model.depth", 1.5, "integer"),
    ("model.activation", "swish", "'relu'"),
    ("model.norm", "group", "'batch'"),
    ("model.residual", "yes", "true or false"),
    ("train.optimizer", "lion", "'sgd', 'adam', 'adamw'"),
    ("train.lr", -0.1, "> 0"),
    ("train.lr", 0.0, "> 0"),
    ("train.lr", float("nan"), "finite"),
    ("train.momentum", 1.5, "[0.0"),
    ("train.weight_decay", -1e-4, "[0.0"),
    ("train.batch_size", -1, ">= 0"),
    ("train.steps", 0, ">= 1"),
    ("train.dtype", "float16", "'float32'"),
    ("probes.names", ["grad_norm", "hessian"], "'eval'"),
    ("probes.names", "grad_norm", "list"),
    ("probes.schedule", "cosine", "'every', 'log'"),
    ("probes.every", 0, ">= 1"),
    ("seed", -1, ">= 0"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_bad_value_names_parameter_value_and_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        with_overrides(RunConfig(), {key: value})
    message = str(info.value)
    shown = [repr(value)] + ([repr(v) for v in value] if isinstance(value, list) else [])
    assert key in message and allowed in message
    assert any(text in message for text in shown), "the message must show the bad value"


def test_digits_size_limit():
    with pytest.raises(ConfigError, match="1797"):
        config_from_dict({"data": {"name": "digits", "n_train": 1500, "n_test": 500}})


def test_cuda_requested_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    with pytest.raises(ConfigError, match="train.device"):
        with_overrides(RunConfig(), {"train.device": "cuda"})


@pytest.mark.parametrize("spec, fragment", [
    ({"trian": {}}, "unknown section"),
    ({"train": {"learning_rate": 0.1}}, "train.learning_rate"),
    ({"train": 0.1}, "must be a mapping"),
])
def test_unknown_sections_and_keys(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_from_dict(spec)


@pytest.mark.parametrize("seeds", [[], "0", None, [0, 0]])
def test_seeds_must_be_a_nonempty_distinct_list(seeds):
    with pytest.raises(ConfigError, match="seeds"):
        expand_grid(RunConfig(), {"train.lr": [0.1]}, seeds)


@pytest.mark.parametrize("conditions, fragment", [
    ({"train.lr": []}, "non-empty list"),
    ({"train.lr": 0.1}, "non-empty list"),
    ({"lr": [0.1]}, "section.parameter"),
    ({"train.lr": [0.1, -1.0]}, "train.lr"),
    ({"train.lr": [0.1], "data.lr": [0.1]}, "clashing"),
])
def test_bad_grids_fail_before_training(conditions, fragment):
    with pytest.raises(ConfigError, match=fragment):
        expand_grid(RunConfig(), conditions, [0])


def test_overrides_keep_other_values_and_configs_are_frozen():
    base = config_from_dict({"train": {"lr": 0.3, "steps": 7}})
    new = with_overrides(base, {"train.optimizer": "adam", "seed": 4})
    assert (new.train.lr, new.train.steps, new.train.optimizer, new.seed) == (0.3, 7, "adam", 4)
    with pytest.raises(Exception):
        new.train.lr = 1.0  # frozen


def test_lookup_reads_dotted_keys_and_refuses_unknown_ones():
    config = with_overrides(RunConfig(), {"train.lr": 0.3})
    assert lookup(config, "train.lr") == 0.3 and lookup(config, "seed") == 0
    with pytest.raises(ConfigError, match="train.learning_rate"):
        lookup(config, "train.learning_rate")


def test_identity_leaves_out_conditions_and_late_fields_at_their_default():
    from analysis_lib.lm.config import LMRunConfig

    labelled = with_overrides(RunConfig(conditions={"arm": "a"}), {})
    assert run_identity(labelled) == run_identity(RunConfig())
    assert "conditions" not in run_identity(labelled)
    lm = run_identity(LMRunConfig())
    assert lm["kind"] == "lm" and set(lm["probes"]) == {"names", "every", "eval_problems"}
    tuned = run_identity(with_overrides(LMRunConfig(), {"probes.sharpness_tol": 1e-4}))
    assert tuned["probes"]["sharpness_tol"] == 1e-4  # a late field away from its default is part of the id


def test_label_reads_a_condition():
    config = RunConfig(conditions={"arm": "gd", "lr": 0.1})
    assert config.label("arm") == "gd" and config.label("missing", "x") == "x"
