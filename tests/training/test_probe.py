"""Probes are objects on a schedule: a registry, an order that fixes the metrics' rows, declared needs.

And a new probe is one class.
"""

from __future__ import annotations

import pytest

from analysis_lib.training import probe as registry
from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import DEFAULT_PROBES, ProbeConfig, with_overrides
from analysis_lib.training.probe import Probe, build_probes, probe_names, register
from analysis_lib.validation import ConfigError

BUILT_IN = {"eval", "grad_norm", "grad_noise", "weight_norm", "update_ratio", "rotation", "dist_init",
            "sharpness", "hessian_trace", "grad_overlap", "spectrum", "weights", "weight_spectra",
            "neuron_alignment", "gradient_snr", "block_sharpness", "activation_stats", "attention_stats",
            "logit_stats"}


def test_every_built_in_probe_is_registered_documented_and_ordered():
    names = probe_names()
    assert set(names) == BUILT_IN and set(DEFAULT_PROBES) <= set(names)
    orders = [registry._REGISTRY[n].order for n in names]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    for name in names:
        assert registry._REGISTRY[name].__doc__, f"probe {name!r} has no docstring"


def test_probes_run_in_order_whatever_order_they_are_named_in():
    config = ProbeConfig(names=("dist_init", "eval", "grad_norm"))
    assert [p.name for p in build_probes(config, {"evaluate", "curvature"})] == ["grad_norm", "eval", "dist_init"]


def test_a_probe_whose_needs_the_objective_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"probe 'sharpness' needs curvature data"):
        build_probes(ProbeConfig(names=("sharpness",)), {"evaluate"})


class _CountProbe(Probe):
    """A test probe: records how many parameters have a gradient after each probed backward pass."""

    name = "test_count"
    order = 99

    def after_backward(self, ctx):
        ctx.record(ctx.step, "model", "params_with_grad", float(sum(p.grad is not None for p in ctx.params.values())))


@pytest.fixture
def count_probe():
    register(_CountProbe)
    yield _CountProbe
    registry._REGISTRY.pop(_CountProbe.name)


def test_a_new_probe_is_one_class(count_probe, tiny_config):
    config = with_overrides(tiny_config, {"probes.names": ["test_count"], "probes.every": 6})
    m = train_classifier(config).metrics
    rows = m[m["metric"] == "params_with_grad"]
    assert rows["step"].tolist() == [6, 12] and (rows["value"] == 6.0).all()  # 3 layers x (weight, bias)


def test_two_probes_cannot_share_a_name(count_probe):
    class Other(_CountProbe):
        """Another probe under the same name."""

    with pytest.raises(ValueError, match="test_count"):
        register(Other)


def test_unknown_probe_names_are_refused():
    with pytest.raises(ConfigError, match=r"probes.names.*'grad_norm'"):
        ProbeConfig(names=("hessian",))
