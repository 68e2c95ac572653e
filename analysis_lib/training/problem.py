"""A loss over data, as every curvature and landscape quantity takes it: ``loss_fn`` and ``data``.

**The loss.** ``loss_fn(outputs, targets)`` returns the *mean* loss of one batch: ``F.mse_loss``,
``F.cross_entropy``, :class:`~analysis_lib.training.losses.CrossEntropy` (class axis last, with
``ignore_index``: token-level language-model losses), or the user's own. :func:`loss_spec`
reads what can be known about it:

- *how much a batch weighs*: over several batches the loss is the mean weighted by each batch's
  number of targets, so that it equals the loss of the concatenated data. The count is the
  loss's own ``count(targets)`` where it has one (targets that are not ``ignore_index`` for
  cross-entropy), else the number of elements of the targets (the first tensor of a tuple or
  dict); a ``batch_size_fn(targets)`` overrides it.
- *its Hessian in output space*, needed by the Gauss–Newton matrix: known for cross-entropy
  (``F.cross_entropy``, ``nn.CrossEntropyLoss``, ``CrossEntropy``, or a ``functools.partial`` of
  ``F.cross_entropy`` with ``ignore_index`` / ``label_smoothing``) and squared error
  (``F.mse_loss``, ``nn.MSELoss``, ``MSE``), each convex in the outputs; or supplied by the loss
  as a method ``output_hessian_vector(outputs, targets, v)``. Any other loss has none, and
  asking for its Gauss–Newton matrix is refused.
- *its accuracy*, for the cross-entropies only.

Squared errors whose outputs and targets differ in shape (which torch broadcasts, warning only)
and ``F.cross_entropy`` over (B, T, V) outputs with T = V (class axis 1 is then time, silently)
are refused with a ``ValueError``.

**The data.** ``data`` is one ``(inputs, targets)`` tuple, or any other iterable of such pairs (a
list, a ``DataLoader``), read once and kept. ``inputs`` is a tensor, a tuple (passed as
``model(*inputs)``) or a dict (``model(**inputs)``); ``targets`` whatever the loss takes (a
tensor, or a tuple such as tokens and their mask). Every tensor's first axis is the sample axis.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .losses import MSE, CrossEntropy, check_same_shape

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]
_CE_KEYWORDS = {"ignore_index", "label_smoothing", "reduction"}


def loss_name(loss_fn: Any) -> str:
    """A readable name of a loss callable, for messages and tables."""
    if isinstance(loss_fn, functools.partial):
        kwargs = ", ".join(f"{k}={v!r}" for k, v in loss_fn.keywords.items())
        return f"partial({loss_name(loss_fn.func)}, {kwargs})"
    return getattr(loss_fn, "__name__", None) or type(loss_fn).__name__


def _autograd_output_hvp(fn: LossFn):
    """(outputs, targets, v) -> ∇²_z L(z) v by double backward in output space."""
    def hvp(outputs: torch.Tensor, targets: Any, v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = outputs.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(z, targets), z, create_graph=True)
            (hv,) = torch.autograd.grad(g, z, grad_outputs=v)
        return hv
    return hvp


@dataclass(frozen=True)
class LossSpec:
    """What is known about a loss callable (see the module docstring).

    Attributes:
        fn: the callable as given. name: its readable name. family: ``"cross_entropy"``,
        ``"mse"``, ``"supplied"`` (it brings its output Hessian) or None (unknown).
        ignore_index, class_axis: of a cross-entropy.
    """

    fn: LossFn
    name: str
    family: str | None
    ignore_index: int | None = None
    class_axis: int | None = None

    @property
    def unit(self) -> str | None:
        """The loss's unit for axis labels: ``"nats"`` (cross-entropy), ``"squared error"`` (MSE), else None."""
        return {"cross_entropy": "nats", "mse": "squared error"}.get(self.family)

    def __call__(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        """The mean loss of one batch, refusing the silent shape mistakes."""
        if self.family == "mse" and isinstance(targets, torch.Tensor):
            check_same_shape(outputs, targets)
        if (self.family == "cross_entropy" and self.class_axis == 1 and outputs.dim() > 2
                and outputs.shape[1] == outputs.shape[-1]):
            raise ValueError(f"ambiguous outputs of shape {tuple(outputs.shape)} for loss_fn={self.name}: "
                             "F.cross_entropy reads classes from axis 1, which here has the size of the last "
                             "axis; for (B, T, V) logits pass loss_fn=CrossEntropy() (class axis last)")
        return self.fn(outputs, targets)

    def count(self, targets: Any) -> int:
        """The weight of a batch with these targets among others (see the module docstring)."""
        if hasattr(self.fn, "count"):
            return int(self.fn.count(targets))
        first = _first_tensor(targets)
        if self.family == "cross_entropy":
            if first.is_floating_point():
                return first.numel() // first.shape[self.class_axis]
            return int((first != self.ignore_index).sum())
        return first.numel()

    @property
    def has_output_hessian(self) -> bool:
        """Whether the Gauss–Newton matrix of this loss is defined here."""
        return self.family is not None

    def output_hessian_vector(self, outputs: torch.Tensor, targets: Any, v: torch.Tensor) -> torch.Tensor:
        """∇²_z L v at outputs z (same shape as z); only for losses with a known output Hessian."""
        if self.family == "supplied":
            return self.fn.output_hessian_vector(outputs, targets, v)
        if self.family is None:
            raise ValueError(f"invalid argument loss_fn={self.name}: its Hessian in output space is not known")
        return _autograd_output_hvp(self)(outputs, targets, v)

    @property
    def accuracy(self) -> Callable | None:
        """``accuracy(outputs, targets)`` for a cross-entropy, else None."""
        if self.family != "cross_entropy":
            return None
        if isinstance(self.fn, CrossEntropy):
            return self.fn.accuracy
        return CrossEntropy(self.ignore_index if self.ignore_index is not None else -100, self.class_axis).accuracy


def loss_spec(loss_fn: Any) -> LossSpec:
    """Recognise a loss callable (see the module docstring); a non-callable is refused."""
    if isinstance(loss_fn, LossSpec):
        return loss_fn
    if not callable(loss_fn):
        if isinstance(loss_fn, torch.Tensor):  # f(model, x, y) written for the old (x, y) arguments
            raise ValueError(f"invalid argument loss_fn: got a tensor of shape {tuple(loss_fn.shape)}; the data is "
                             "one argument, an (inputs, targets) pair, followed by loss_fn(outputs, targets)")
        raise ValueError(f"invalid argument loss_fn={loss_fn!r}: must be callable(outputs, targets) -> mean loss")
    name = loss_name(loss_fn)
    if isinstance(loss_fn, CrossEntropy):
        return LossSpec(loss_fn, name, "cross_entropy", loss_fn.ignore_index, loss_fn.class_axis)
    if isinstance(loss_fn, MSE):
        return LossSpec(loss_fn, name, "mse")
    if hasattr(loss_fn, "output_hessian_vector"):
        return LossSpec(loss_fn, name, "supplied")
    if loss_fn is F.cross_entropy:
        return LossSpec(loss_fn, name, "cross_entropy", -100, 1)
    if loss_fn is F.mse_loss:
        return LossSpec(loss_fn, name, "mse")
    if isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.reduction == "mean" and loss_fn.weight is None:
        return LossSpec(loss_fn, name, "cross_entropy", loss_fn.ignore_index, 1)
    if isinstance(loss_fn, nn.MSELoss) and loss_fn.reduction == "mean":
        return LossSpec(loss_fn, name, "mse")
    mean = isinstance(loss_fn, functools.partial) and loss_fn.keywords.get("reduction", "mean") == "mean"
    if mean and not loss_fn.args:
        if loss_fn.func is F.cross_entropy and set(loss_fn.keywords) <= _CE_KEYWORDS:
            return LossSpec(loss_fn, name, "cross_entropy", loss_fn.keywords.get("ignore_index", -100), 1)
        if loss_fn.func is F.mse_loss and set(loss_fn.keywords) <= {"reduction"}:
            return LossSpec(loss_fn, name, "mse")
    return LossSpec(loss_fn, name, None)


def _first_tensor(data: Any) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data
    values = list(data.values()) if isinstance(data, dict) else list(data) if isinstance(data, (tuple, list)) else []
    for v in values:
        try:
            return _first_tensor(v)
        except ValueError:
            continue
    raise ValueError(f"no tensor in {type(data).__name__} data")


def n_samples(data: Any) -> int:
    """Length of the sample axis of a tensor, or of the first tensor in a tuple / dict."""
    return len(_first_tensor(data))


def slice_samples(data: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a tensor, or of every tensor in a tuple / list / dict."""
    return index_samples(data, slice(start, stop))


def index_samples(data: Any, index: Any) -> Any:
    """``data[index]`` along the sample axis, for a tensor or every tensor of a tuple / list / dict."""
    if isinstance(data, torch.Tensor):
        return data[index]
    if isinstance(data, dict):
        return {k: index_samples(v, index) for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        return type(data)(index_samples(v, index) for v in data)
    raise TypeError(f"data must be tensors, or tuples / dicts of tensors, not {type(data).__name__}")


def call_model(model: nn.Module, inputs: Any, state: dict | None = None) -> torch.Tensor:
    """``model(inputs)`` (tuple: ``*inputs``, dict: ``**inputs``), with ``state`` swapped in if given."""
    if isinstance(inputs, dict):
        args, kwargs = (), inputs
    else:
        args, kwargs = (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), {}
    if state is None:
        return model(*args, **kwargs)
    return torch.func.functional_call(model, state, args, kwargs)


@dataclass(frozen=True)
class Batch:
    """One batch of a loss over data: its inputs, targets and weight (weights sum to 1)."""

    inputs: Any
    targets: Any
    weight: float


def _is_inputs(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, dict)) or (isinstance(x, (tuple, list)) and len(x) > 0
                                                   and all(isinstance(v, torch.Tensor) for v in x))


def as_batches(data: Any, loss: LossSpec, *, chunk_size: int | None = None,
               batch_size_fn: Callable[[Any], int] | None = None) -> list[Batch]:
    """The batches of ``data`` with their weights (see the module docstring), split into chunks.

    Args:
        data: one ``(inputs, targets)`` tuple, or an iterable of them.
        loss: its :class:`LossSpec` (how to count a batch's targets).
        chunk_size: split every batch into chunks of at most this many samples (None: as given).
        batch_size_fn: ``targets -> weight`` overriding the loss's count.

    Raises:
        ValueError: ``data`` is not one of the forms above, is empty, or counts no target.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"invalid argument chunk_size={chunk_size!r}: must be a positive integer or None")
    if isinstance(data, tuple) and len(data) == 2 and _is_inputs(data[0]):
        pairs = [data]
    elif isinstance(data, (torch.Tensor, dict, str)) or not hasattr(data, "__iter__"):
        raise ValueError(f"invalid argument data of type {type(data).__name__}: must be an (inputs, targets) "
                         "tuple or an iterable of them (a list of pairs, a DataLoader)")
    else:
        pairs = list(data)
    if not pairs:
        raise ValueError("invalid argument data: it holds no batch")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and _is_inputs(pair[0])):
            raise ValueError(f"invalid argument data: batch {i} is a {type(pair).__name__}, not an (inputs, "
                             "targets) pair with inputs a tensor, a tuple of tensors or a dict")
    count = batch_size_fn or loss.count
    parts = []
    for inputs, targets in pairs:
        n = n_samples(targets)
        step = chunk_size or max(n, 1)
        for start in range(0, n, step):
            chunk = (slice_samples(inputs, start, start + step), slice_samples(targets, start, start + step))
            parts.append((*chunk, float(count(chunk[1]))))
    total = sum(c for *_, c in parts)
    if not total > 0:
        raise ValueError(f"invalid argument data: no target counts towards the loss {loss.name} "
                         "(all ignored, or empty)")
    return [Batch(i, t, c / total) for i, t, c in parts if c > 0]


def to_device(data: Any, device, dtype: torch.dtype) -> Any:
    """Tensors (in tuples / lists / dicts) moved to ``device``; floating ones cast to ``dtype``."""
    if isinstance(data, torch.Tensor):
        return data.to(device, dtype if data.is_floating_point() else data.dtype)
    if isinstance(data, dict):
        return {k: to_device(v, device, dtype) for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        return type(data)(to_device(v, device, dtype) for v in data)
    return data


def final_models(result, run_ids=None):
    """``(run_id, config, model, problem)`` at the final weights of each stored run that has them.

    ``result`` is what :func:`analysis_lib.runs.execute.run_grid` returned; runs that diverged
    (their final weights are not finite) or failed, or kept no ``final`` checkpoint (no
    ``weights`` probe), are skipped. The model is in eval mode.
    """
    finished = set(result.runs.loc[result.runs["status"] == "finished", "run_id"])
    for rid in dict.fromkeys(result.runs["run_id"] if run_ids is None else run_ids):
        state = result.store.load_checkpoint(rid, "final") if rid in finished else None
        if state is not None:
            config = result.configs[rid]
            yield rid, config, config.build_model(state).eval(), config_problem(config)


def no_final_models(result, what: str) -> list[str]:
    """Why no run gave final weights: a warning when none finished, else a ValueError.

    Returns:
        The label columns (``run_id``, the conditions, ``seed``) of the empty table to return.
    """
    import warnings

    if (result.runs["status"] == "finished").any():
        raise ValueError(f"{what}: no finished run has a 'final' checkpoint: add 'weights' to probes.names")
    warnings.warn(f"{what}: no run finished (all diverged or failed); nothing to compute", RuntimeWarning,
                  stacklevel=3)
    conditions = list(dict(next(iter(result.configs.values())).conditions)) if result.configs else []
    return ["run_id", *conditions, "seed"]


def config_problem(config) -> "Problem":
    """``config.problem()``, or a ValueError naming a run-config class that has none."""
    if not hasattr(config, "problem"):
        raise ValueError(f"{type(config).__name__} runs do not say their loss and data (no problem() method); "
                         "landscape and curvature functions of stored runs need one")
    return config.problem()


@dataclass(frozen=True)
class Problem:
    """A run's loss and data as the landscape functions take them (``config.problem()``).

    Attributes:
        loss_fn: the training loss, ``loss_fn(outputs, targets)`` -> mean of a batch.
        splits: ``{"train": data, "test": data}``, each ``(inputs, targets)`` or a list of them.
        metrics: further ``{name: fn(outputs, targets) -> batch mean}`` beyond the loss (and the
            accuracy a cross-entropy brings).
    """

    loss_fn: LossFn
    splits: dict
    metrics: dict | None = None
