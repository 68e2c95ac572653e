"""Training a :class:`~analysis_lib.custom.config.CustomRunConfig`: your model, data and loss as one phase.

The model is built by its factory under the run's seed (the global RNG restored afterwards), the
data by its factory (kept per process: many runs of a grid share one dataset), and the run trains
through the loop every family uses (:func:`analysis_lib.training.classifier.train_one_phase`),
with every probe whose needs the objective meets:

- ``eval`` records ``<split>_loss`` and ``<split>_<metric>`` on every split of the dataset
  (``train``, ``test``, ...) in eval mode; the metrics are the loss's (accuracy for the
  cross-entropies, and those given to ``register_loss``);
- the curvature probes use the first ``probes.curvature_samples`` training samples (all when 0);
- ``grad_noise`` needs a loss that is a mean over samples (not over tokens of uneven count).
"""

from __future__ import annotations

import functools
import json
from typing import Callable, Mapping

import torch
from torch import nn

from ..training.classifier import train_one_phase
from ..training.loop import TrainResult
from ..training.objective import Objective
from ..training.problem import as_batches, call_model, index_samples, loss_spec, n_samples, slice_samples, to_device
from ..training.rng import GLOBAL_RNG_LOCK
from ..validation import fail

_EVAL_CHUNK = 4096  # samples per forward pass of the evaluation


@functools.lru_cache(maxsize=4)
def _generated(component, params_json: str) -> dict:
    return component.fn(**json.loads(params_json))


def custom_splits(config, device="cpu") -> dict:
    """The dataset of ``config.data``, checked, on ``device`` with floating tensors in the run's dtype."""
    comp = config.data.component
    splits = _generated(comp, json.dumps(config.data.kwargs(), sort_keys=True))
    if not isinstance(splits, Mapping) or "train" not in splits:
        fail("data.name", config.data.name, "its factory must return a dict of splits with at least 'train', "
                                            "each an (inputs, targets) pair")
    for split, pair in splits.items():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            fail("data.name", config.data.name, f"split {split!r} must be an (inputs, targets) tuple")
        lengths = {n_samples(pair[0]), n_samples(pair[1])}
        if len(lengths) != 1:
            fail("data.name", config.data.name, f"split {split!r} has inputs and targets of different "
                                                f"lengths {sorted(lengths)}")
    dtype = getattr(torch, config.train.dtype)
    return {split: to_device(pair, device, dtype) for split, pair in splits.items()}


def custom_model(config, state_dict: Mapping | None = None) -> nn.Module:
    """The model of ``config``: the factory called under the run's seed, or holding ``state_dict``."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = config.model.component.fn(**config.model.kwargs())
    if not isinstance(model, nn.Module):
        fail("model.name", config.model.name, f"its factory returned a {type(model).__name__}, not an nn.Module")
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.to(getattr(torch, config.train.dtype))


class CustomObjective(Objective):
    """The registered loss on the registered dataset; a batch is a tensor of training-sample indices."""

    def __init__(self, splits: dict, loss_fn: Callable, metrics: Mapping[str, Callable], output_dim: int):
        self.splits, self.spec = splits, loss_spec(loss_fn)
        self.metrics = {**({"acc": self.spec.accuracy} if self.spec.accuracy else {}), **metrics}
        self.output_dim = output_dim
        self.inputs, self.targets = splits["train"]
        self.capabilities = frozenset({"evaluate", "curvature", *(["sample_mean"] if self._sample_mean() else [])})

    def _sample_mean(self) -> bool:
        """Whether the loss of a batch is the mean of its samples' own losses (``grad_noise`` needs it).

        True for squared errors, and for cross-entropies when every training sample counts the same
        number of targets (no sample has more ignored targets than another); unknown losses: False.
        """
        if self.spec.family == "mse":
            return True
        if self.spec.family != "cross_entropy" or not isinstance(self.targets, torch.Tensor):
            return False
        t = self.targets
        if t.is_floating_point():  # class probabilities: one target per position, none ignored
            return True
        counts = (t != self.spec.ignore_index).reshape(len(t), -1).sum(dim=1)
        return bool((counts == counts[0]).all())

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Mean loss of the training samples ``batch`` (indices)."""
        return self.spec(call_model(model, index_samples(self.inputs, batch)), index_samples(self.targets, batch))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, record: Callable, step: int, phase_end: bool) -> None:
        """The loss and metrics of every split, in eval mode (the mode is restored)."""
        was_training = model.training
        model.eval()
        try:
            fns = {"loss": self.spec, **self.metrics}
            for split, data in self.splits.items():
                totals = dict.fromkeys(fns, 0.0)
                for b in as_batches(data, self.spec, chunk_size=_EVAL_CHUNK):
                    out = call_model(model, b.inputs)
                    for name, fn in fns.items():
                        totals[name] += float(fn(out, b.targets)) * b.weight
                for name, value in totals.items():
                    record(step, "model", f"{split}_{name}", value)
        finally:
            model.train(was_training)

    def curvature_problem(self, n: int):
        """``(loss_fn, inputs, targets)`` of the first ``n`` training samples (all when 0)."""
        n = n or n_samples(self.targets)
        return self.spec, slice_samples(self.inputs, 0, n), slice_samples(self.targets, 0, n)


def train_custom(config) -> TrainResult:
    """Train one run of your own model (see the module docstring)."""
    tc = config.train
    device = torch.device(tc.device)
    splits = custom_splits(config, device)
    model = custom_model(config).to(device)
    inputs, _ = splits["train"]
    with torch.no_grad():
        out = call_model(model.eval(), slice_samples(inputs, 0, 1))
    objective = CustomObjective(splits, config.loss.component.fn, config.loss.component.metrics,
                                int(out.shape[-1]) if out.dim() > 0 else 1)
    return train_one_phase(config, model, objective, n_samples(splits["train"][1]))
