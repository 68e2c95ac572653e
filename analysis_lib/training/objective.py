"""What a model family trains on: the loss of a batch, its evaluation, the data of curvature probes.

The training loop is the same for every model family; what differs is an :class:`Objective`:

- :meth:`Objective.loss`: the mean loss of one batch (a mean over samples of per-sample losses,
  which the per-sample gradient-noise probe requires);
- :meth:`Objective.evaluate`: the rows the ``eval`` probe records;
- :meth:`Objective.curvature_problem`: ``(loss_fn, inputs, targets)`` of the loss whose Hessian
  the curvature probes measure (a fixed set of training samples);
- :attr:`Objective.output_dim`: classes or vocabulary size, the default subspace size of
  ``grad_overlap`` (Gur-Ari et al.: k ≈ number of classes).

``capabilities`` lists which of ``"evaluate"``, ``"curvature"`` and ``"sample_mean"`` (the loss of a
batch is the mean over its samples of each sample's own loss, as per-sample gradient statistics
assume) an objective provides; probes
declare what they need (:attr:`analysis_lib.training.probe.Probe.needs`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .evaluation import evaluate


class Objective:
    """Interface of a model family's objective (see the module docstring)."""

    capabilities: frozenset[str] = frozenset()
    output_dim: int = 0

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        """Mean loss of ``batch`` (differentiable)."""
        raise NotImplementedError

    def batch_metrics(self, loss: torch.Tensor) -> dict[str, float]:
        """What the loop records of an update's ``loss`` (from :meth:`loss`): by default its value as ``batch_loss``.

        An objective with added regularisation terms records the data loss as ``batch_loss`` and
        the terms under names of their own.
        """
        return {"batch_loss": loss.item()}

    def evaluate(self, model: nn.Module, record: Callable, step: int, phase_end: bool) -> None:
        """Record evaluation rows at ``step`` with ``record(step, layer, metric, value)``."""
        raise NotImplementedError

    def curvature_problem(self, n_samples: int) -> tuple[Callable, object, object]:
        """``(loss_fn, inputs, targets)``: the first ``n_samples`` training samples (0 = all)."""
        raise NotImplementedError


class Classification(Objective):
    """Mean cross-entropy of a classifier on a :class:`~analysis_lib.training.data.Dataset`.

    A batch is a tensor of training-sample indices. ``eval`` records ``{train,test}_{loss,acc}``
    of the whole splits; the curvature probes use the first ``n`` training samples.
    """

    capabilities = frozenset({"evaluate", "curvature", "sample_mean"})

    def __init__(self, data: Dataset):
        self.data = data
        self.output_dim = data.n_classes

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the training samples ``batch`` (indices)."""
        return F.cross_entropy(model(self.data.x_train[batch]), self.data.y_train[batch])

    def evaluate(self, model: nn.Module, record: Callable, step: int, phase_end: bool) -> None:
        """Loss and accuracy on the whole training and test splits (eval mode)."""
        d = self.data
        for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
            loss, acc = evaluate(model, x, y)
            record(step, "model", f"{split}_loss", loss)
            record(step, "model", f"{split}_acc", acc)

    def curvature_problem(self, n_samples: int) -> tuple[Callable, torch.Tensor, torch.Tensor]:
        """Cross-entropy over the first ``n_samples`` training samples (all when 0)."""
        n = n_samples or len(self.data.y_train)
        return F.cross_entropy, self.data.x_train[:n], self.data.y_train[:n]
