"""Loss and accuracy of a model at many parameter vectors: the evaluator of every landscape.

:func:`evaluate_params` is the batched evaluator every landscape quantity goes through: it takes
a (G, P) tensor of flattened parameter vectors (``named_parameters`` order) and returns the mean
loss (any ``loss_fn`` and data of :mod:`analysis_lib.training.problem`; cross-entropy by default)
and other metrics (the accuracy, for a cross-entropy) over a dataset at each of them. It never touches the caller's
model: parameters go in through :func:`torch.func.functional_call` or into a private copy of
the model, buffers are detached copies of the model's, and every module's train/eval mode is
restored.

**BatchNorm rule.** Every point is evaluated in eval mode with the running statistics of the
model passed in (the centre of the surface), the same for every point: a grid point is a model
you could deploy, and its loss does not depend on which other samples share its batch. (Li et
al. 2018 do the same; recomputing statistics per point would make the surface a function of the
batch composition.)

**Strategies** (measured in ``benchmarks/landscape.py``; ``strategy="auto"`` picks by device):

- ``"inplace"``: a private copy of the model whose parameters are pointed at each point in
  turn (what loss-landscapes does, without moving the caller's model). Fastest on CPU: about
  the cost of one plain evaluation pass per point; ``auto`` uses it there.
- ``"loop"``: one ``functional_call`` per point and data batch; on CPU it pays a fixed cost per
  call for swapping the parameters in, noticeable on small models.
- ``"vmap"``: ``torch.vmap`` of ``functional_call`` over a chunk of points: one batched matmul
  per layer for the whole chunk. It wins where there is parallel hardware to fill (CUDA); on a
  2-core CPU the batched matmuls are slower than a loop of plain ones.

The measured costs are in ``benchmarks/README.md``. Surfaces built on it are in
:mod:`analysis_lib.landscape.surfaces`, directions in :mod:`analysis_lib.landscape.directions`.

Reference: Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..training.problem import Batch, as_batches, call_model, loss_spec, n_samples, slice_samples, to_device

STRATEGIES = ("auto", "inplace", "loop", "vmap")


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """The model's parameters flattened in ``named_parameters`` order, detached, shape (P,)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split (..., P) vectors into ``{name: (..., *shape)}`` views in ``named_parameters`` order."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]
    parts = torch.split(flat, sizes, dim=-1)
    return {n: part.reshape(*flat.shape[:-1], *p.shape) for (n, p), part in zip(named, parts)}


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm on running statistics) for the block; every submodule's mode restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _activation_elements(model: nn.Module, params: dict, buffers: dict, inputs) -> int:
    """Activation elements one sample creates in one forward pass (sum over leaf modules)."""
    count = [0]

    def hook(_module, _args, out):
        if isinstance(out, torch.Tensor) and out.dim() > 0:
            count[0] += out[0].numel()  # one sample
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        call_model(model, slice_samples(inputs, 0, 1), {**params, **buffers})
    finally:
        for h in handles:
            h.remove()
    return max(count[0], 1)


def _plan(model, params, buffers, inputs, n_samples, n_points, chunk_points, memory_mb, batch_size, itemsize):
    """(points per chunk, samples per batch) so that activations and parameters fit ``memory_mb``.

    A chunk of c points on a batch of b samples holds about c·b·A activation elements plus c·P
    parameter elements; the batch is all samples when one point at a time fits.
    """
    budget = memory_mb * 2**20 / itemsize  # elements
    per_sample = _activation_elements(model, params, buffers, inputs)
    n_params = sum(p.numel() for p in params.values())
    batch = batch_size or max(1, min(n_samples, int(budget // per_sample)))
    fit = int(budget // (batch * per_sample + n_params))
    chunk = chunk_points or max(1, min(n_points, fit))
    return chunk, batch


def _values(outputs, batch: Batch, fns: dict) -> torch.Tensor:
    """(M,) weighted metric values of one batch: each metric's mean × the batch's weight, float64."""
    values = [fn(outputs, batch.targets).to(torch.float64) for fn in fns.values()]
    out = values[0].reshape(1) if len(values) == 1 else torch.stack(values)
    return out if batch.weight == 1.0 else out * batch.weight


def _accumulate(forward, batches: list[Batch], fns: dict) -> torch.Tensor:
    """(M,) metrics of ``forward(inputs)`` over all batches, each the weighted mean over batches."""
    total = _values(forward(batches[0].inputs), batches[0], fns)
    for b in batches[1:]:
        total = total + _values(forward(b.inputs), b, fns)
    return total


def _loop(model, points, buffers, batches, fns):
    """(G, M) metrics, one functional_call per point and batch."""
    rows = []
    for g in range(len(points)):
        params = {**unflatten(model, points[g]), **buffers}
        rows.append(_accumulate(lambda inputs: call_model(model, inputs, params), batches, fns))
    return torch.stack(rows)


def _vmap(model, points, buffers, batches, chunk, fns):
    """(G, M) metrics, ``torch.vmap`` of functional_call over chunks of ``chunk`` points."""
    batched = torch.vmap(lambda params, inputs: call_model(model, inputs, {**params, **buffers}),
                         in_dims=(0, None))
    rows = []
    for lo in range(0, len(points), chunk):
        params = unflatten(model, points[lo:lo + chunk])  # {name: (c, *shape)}
        total = 0.0
        for b in batches:
            out = batched(params, b.inputs)  # (c, B, ...)
            total = total + torch.stack([_values(o, b, fns) for o in out])  # (c, M)
        rows.append(total)
    return torch.cat(rows)


def _inplace(model, points, batches, fns):
    """(G, M) metrics, copying each point into the weights of a private copy of the model in turn."""
    clone = copy.deepcopy(model).eval()
    flat = torch.empty_like(points[0])  # (P,): the clone's parameters are views into it
    torch.nn.utils.vector_to_parameters(flat, clone.parameters())
    rows = []
    for g in range(len(points)):
        flat.copy_(points[g])  # one memcpy per point
        rows.append(_accumulate(lambda inputs: call_model(clone, inputs), batches, fns))
    return torch.stack(rows)


def metric_functions(loss_fn, metrics: Sequence[str] | None = None,
                     metric_fns: Mapping[str, Callable] | None = None) -> dict[str, Callable]:
    """``{name: fn(outputs, targets) -> batch mean}`` for the metrics asked for, ``"loss"`` first.

    ``"loss"`` is ``loss_fn``; ``"acc"`` is the accuracy of a cross-entropy (refused for any other
    loss unless ``metric_fns`` defines it); any other name must be in ``metric_fns``. Default:
    ``("loss", "acc")`` for a cross-entropy, ``("loss",)`` otherwise, plus every ``metric_fns``.
    """
    spec = loss_spec(loss_fn)
    extra = dict(metric_fns or {})
    known = {"loss": spec, **({"acc": spec.accuracy} if spec.accuracy else {}), **extra}
    if metrics is None:
        metrics = [m for m in ("loss", "acc") if m in known] + [m for m in extra if m not in ("loss", "acc")]
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"invalid argument metrics={metrics!r}: a non-empty list of names")
    for m in metrics:
        if m not in known:
            why = (f"'acc' is defined for cross-entropy losses only, not {spec.name}; pass metric_fns={{'acc': fn}}"
                   if m == "acc" else f"allowed: {sorted(known)} (add others through metric_fns)")
            raise ValueError(f"invalid argument metrics: unknown metric {m!r}; {why}")
    return {m: known[m] for m in metrics}


def evaluate_params(model: nn.Module, points: torch.Tensor, data, loss_fn=F.cross_entropy, *,
                    metrics: Sequence[str] | None = None, metric_fns: Mapping[str, Callable] | None = None,
                    chunk_points: int | None = None, memory_mb: float = 256,
                    batch_size: int | None = None, strategy: str = "auto") -> dict[str, torch.Tensor]:
    """The mean loss (and other metrics) over ``data`` at each of G parameter vectors.

    Args:
        model: defines the function; its parameters are replaced by each point, its buffers
            (BatchNorm running statistics) are used as they are, in eval mode. Not modified.
        points: (G, P) or (P,) flattened parameters in ``named_parameters`` order; cast to the
            model's dtype and device.
        data: ``(inputs, targets)`` or an iterable of them (:mod:`analysis_lib.training.problem`);
            over several batches every metric is the mean weighted by the batch's number of targets.
        loss_fn: ``loss_fn(outputs, targets)`` -> mean loss of a batch (default cross-entropy).
        metrics, metric_fns: which metrics, see :func:`metric_functions` (``("loss",)`` skips the
            argmax of the accuracy, 10-15% of a forward pass of a small MLP).
        chunk_points: points evaluated together by ``"vmap"`` (default: from ``memory_mb``).
        memory_mb: budget for activations and batched parameters of one chunk.
        batch_size: samples per forward pass (default: all that fit in ``memory_mb``).
        strategy: ``"auto"`` (``"vmap"`` on CUDA, ``"inplace"`` otherwise), ``"inplace"``,
            ``"loop"`` or ``"vmap"``; all give the same numbers up to float round-off.

    Returns:
        ``{metric: (G,)}`` float64 on the points' device ((1,) for a single point).

    Raises:
        ValueError: a point's length is not the model's parameter count, the data or loss is not
            one of the forms allowed, or an argument is out of range.
    """
    ref = next(model.parameters())
    points = points.detach().to(ref.device, ref.dtype)
    points = points.unsqueeze(0) if points.dim() == 1 else points
    n_params = sum(p.numel() for p in model.parameters())
    if points.dim() != 2 or points.shape[1] != n_params:
        raise ValueError(f"invalid argument points of shape {tuple(points.shape)}: must be (G, {n_params})")
    fns = metric_functions(loss_fn, metrics, metric_fns)
    if strategy not in STRATEGIES:
        raise ValueError(f"invalid argument strategy={strategy!r}: must be one of {STRATEGIES}")
    if memory_mb <= 0 or (chunk_points is not None and chunk_points < 1) or (batch_size is not None and batch_size < 1):
        raise ValueError(f"invalid arguments chunk_points={chunk_points}, memory_mb={memory_mb}, "
                         f"batch_size={batch_size}: must be positive")
    if strategy == "auto":
        strategy = "vmap" if points.is_cuda else "inplace"
    spec = fns.get("loss") or loss_spec(loss_fn)
    given = as_batches(data, spec)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    with torch.no_grad(), _eval_mode(model):
        first = to_device(given[0].inputs, ref.device, ref.dtype)
        largest = max(n_samples(b.targets) for b in given)
        chunk, batch = _plan(model, unflatten(model, points[0]), buffers, first, largest, len(points),
                             chunk_points, memory_mb, batch_size, ref.element_size())
        batches = [Batch(to_device(b.inputs, ref.device, ref.dtype), to_device(b.targets, ref.device, ref.dtype),
                         b.weight)
                   for b in (given if batch >= largest else as_batches(data, spec, chunk_size=batch))]
        if strategy == "loop":
            values = _loop(model, points, buffers, batches, fns)
        elif strategy == "vmap":
            values = _vmap(model, points, buffers, batches, chunk, fns)
        else:
            values = _inplace(model, points, batches, fns)
    return {m: values[:, i] for i, m in enumerate(fns)}
