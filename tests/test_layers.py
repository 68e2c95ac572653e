"""Layer naming: parameter names to layers, the model / layer / tensor groups, transformer blocks."""

from __future__ import annotations

import math

import pytest
import torch

from analysis_lib.layers import (
    layer_and_projection,
    layer_blocks,
    layer_groups,
    layer_names,
    layer_of,
    layer_sizes,
    per_layer,
)
from analysis_lib.training.config import ModelConfig
from analysis_lib.training.models import build_model


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_layer_of_and_names_in_forward_order():
    model = build_model(ModelConfig(kind="mlp", depth=2, width=3, norm="layer"), 4, 2, seed=0)
    assert layer_of("fc1.weight") == "fc1" and layer_of("blocks.0.attn.q.weight") == "blocks.0.attn.q"
    assert layer_names(model) == ["fc1", "norm1", "fc2", "norm2", "out"]
    assert layer_blocks(model)["fc1"] == ["fc1.weight", "fc1.bias"]
    sizes = layer_sizes(model)
    assert sizes["fc1"] == 4 * 3 + 3 and sum(sizes.values()) == sum(p.numel() for p in model.parameters())


def test_groups_are_model_then_each_layer_then_its_tensors():
    groups = list(layer_groups(["fc1.weight", "fc1.bias", "out.weight"]))
    assert groups == [("model", "", ["fc1.weight", "fc1.bias", "out.weight"]),
                      ("fc1", "", ["fc1.weight", "fc1.bias"]), ("fc1", ".weight", ["fc1.weight"]),
                      ("fc1", ".bias", ["fc1.bias"]), ("out", "", ["out.weight"]), ("out", ".weight", ["out.weight"])]


def test_per_layer_concatenates_a_layers_tensors():
    # fc1 = (weight [3, 0], bias [4]) -> norm 5; out = (weight [[1, 0], [0, 0]]) -> norm 1; model = sqrt(26).
    params = {"fc1.weight": _t(3.0, 0.0), "fc1.bias": _t(4.0), "out.weight": _t(1.0, 0.0, 0.0, 0.0).reshape(2, 2)}
    out = {(layer, suffix): value for layer, suffix, value in per_layer(torch.linalg.vector_norm, params)}
    assert out[("fc1", "")] == pytest.approx(5.0)
    assert out[("fc1", ".weight")] == pytest.approx(3.0)
    assert out[("fc1", ".bias")] == pytest.approx(4.0)
    assert out[("out", "")] == pytest.approx(1.0)
    assert out[("model", "")] == pytest.approx(math.sqrt(26.0))


@pytest.mark.parametrize("module, expected", [
    ("blocks.2.attn.q", ("blocks.2", "q")),
    ("blocks.10.mlp.down", ("blocks.10", "down")),
    ("fc1", ("fc1", "weight")),
    ("unembed", ("unembed", "weight")),
])
def test_layer_and_projection(module, expected):
    assert layer_and_projection(module) == expected
