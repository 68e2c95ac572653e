"""Per-example correctness of several runs' states against direct eval-mode predictions.

BatchNorm running statistics differ between the runs, so eval mode must use each state's own; the caller's model
keeps its mode.
"""

from __future__ import annotations

import numpy as np
import torch

from analysis_lib.training.config import ModelConfig
from analysis_lib.training.evaluation import per_example_correctness
from analysis_lib.training.models import build_model


def test_per_example_correctness_matches_direct_predictions():
    config = ModelConfig(kind="mlp", depth=2, width=5, norm="batch")
    model = build_model(config, 4, 3, 0).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=gen)
    states = {}
    for seed in range(3):
        m = build_model(config, 4, 3, seed).double()
        with torch.no_grad():
            m.train()(x + seed)  # distinct running statistics: eval mode must use them
        states[f"r{seed}"] = m.state_dict()
    table = per_example_correctness(model, states, x, y)
    assert list(table.index) == ["r0", "r1", "r2"] and table.shape == (3, 50)
    for rid, state in states.items():
        m = build_model(config, 4, 3, 0).double()
        m.load_state_dict(state)
        with torch.no_grad():
            expected = (m.eval()(x).argmax(1) == y).numpy()
        np.testing.assert_array_equal(table.loc[rid].to_numpy(), expected)
    assert model.training  # the caller's model keeps its mode
