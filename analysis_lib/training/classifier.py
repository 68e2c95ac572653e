"""Training runs of the MLP / CNN family: a :class:`~analysis_lib.training.config.RunConfig` as one phase.

:func:`train_classifier` builds the dataset, the model (initialised from the seed), the
classification objective and one phase of ``train.steps`` updates of ``train.optimizer``
(linear warm-up over ``train.warmup_steps``, then constant), with the data order drawn from
its own stream derived from the seed, and trains it through the one loop
(:func:`analysis_lib.training.loop.train_phases`). A ``train.perturb_scale`` > 0 adds the
seeded weight perturbation of butterfly twins after ``train.perturb_step`` updates.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..weights.perturbation import perturbation
from .config import RunConfig
from .data import Dataset, class_count, load_dataset
from .loop import Phase, TrainResult, make_optimizer, train_phases
from .models import build_model
from .objective import Classification
from .probe import build_probes
from .schedules import batches, order_seed, probe_steps, warmup_cosine


def run_model(config: RunConfig, state_dict: Mapping | None = None, n_features: int | None = None) -> nn.Module:
    """The model of run ``config`` in its dtype: initialised from the seed, or holding ``state_dict``.

    Args:
        config: the run. state_dict: stored weights (e.g. the ``final`` checkpoint).
        n_features: input size; default that of the run's dataset (generated or read from the cache).
    """
    if n_features is None:
        n_features = load_dataset(config.data).n_features
    model = build_model(config.model, n_features, class_count(config.data), config.seed)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.to(getattr(torch, config.train.dtype))


def train_classifier(config: RunConfig, dataset: Dataset | None = None) -> TrainResult:
    """Train one model as ``config`` says and return its tidy metrics (see the module docstring).

    Args:
        config: the run. dataset: the run's data, when the caller already has it.
    """
    tc = config.train
    device, dtype = torch.device(tc.device), getattr(torch, tc.dtype)
    data = (dataset or load_dataset(config.data)).to(device, dtype)
    model = build_model(config.model, data.n_features, data.n_classes, config.seed).to(device, dtype)
    return train_one_phase(config, model, Classification(data), len(data.y_train))


def train_one_phase(config, model: nn.Module, objective, n_train: int) -> TrainResult:
    """Train ``model`` on ``objective`` for ``config.train.steps`` updates: the one phase of a single-stage run.

    Shared by every family trained in one stage (MLP / CNN, your own model): ``train.optimizer``
    with linear warm-up over ``train.warmup_steps``, mini-batches of ``train.batch_size`` of the
    ``n_train`` training samples (0: full batch) in an order drawn from the seed's own stream,
    the probes of ``config.probes``, the butterfly perturbation of ``train.perturb_*``, and SAM
    around the optimiser where ``train.sam_rho > 0``.
    """
    tc = config.train
    model.train()
    phase = Phase(
        "train", tc.steps,
        optimizer=lambda m: make_optimizer(m, tc.optimizer, tc.lr, momentum=tc.momentum,
                                           weight_decay=tc.weight_decay, sam_rho=tc.sam_rho,
                                           sam_adaptive=tc.sam_adaptive),
        lr_at=warmup_cosine(tc.lr, tc.warmup_steps, tc.steps),
        batches=batches(n_train, tc.batch_size, order_seed(config.seed), torch.device(tc.device)),
        probe_steps=set(probe_steps(config.probes, tc.steps)) - {0})
    probes = build_probes(config.probes, objective.capabilities)
    return train_phases(model, objective, [phase], probes, interventions=perturbation(tc))
