"""Evaluating classifiers: mean cross-entropy and accuracy, and which examples each run gets right."""

from __future__ import annotations

import copy
from typing import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``(x, y)`` in eval mode; the mode is restored."""
    was_training = model.training
    model.eval()
    logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(dim=1) == y).double().mean().item()
    model.train(was_training)
    return loss, acc


@torch.no_grad()
def per_example_correctness(model: nn.Module, states: Mapping[str, Mapping[str, torch.Tensor]],
                            x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Whether each run classifies each example correctly (eval mode).

    Args:
        model: the architecture (a private copy is loaded with each state; ``model`` is unchanged).
        states: run id -> state dict (e.g. the ``final`` checkpoints).
        x: (n, ...) inputs; y: (n,) integer targets.

    Returns:
        (k, n) boolean DataFrame, index = run ids, columns = example positions 0..n−1.
    """
    clone = copy.deepcopy(model).eval()
    ref = next(clone.parameters())
    x, y = x.to(ref.device, ref.dtype), y.to(ref.device)
    rows = {}
    for rid, state in states.items():
        clone.load_state_dict(state)
        rows[rid] = (clone(x).argmax(dim=1) == y).cpu().numpy()
    return pd.DataFrame.from_dict(rows, orient="index")
