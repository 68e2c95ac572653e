"""Loss and accuracy of a model at many parameter vectors: the evaluator of every landscape.

:func:`evaluate_params` is the batched evaluator every landscape quantity goes through: it takes
a (G, P) tensor of flattened parameter vectors (``named_parameters`` order) and returns the mean
cross-entropy and the accuracy over a dataset at each of them. It never touches the caller's
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
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

STRATEGIES = ("auto", "inplace", "loop", "vmap")
_ZERO = torch.zeros((), dtype=torch.float64)  # the correct count when accuracy is not wanted


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


def _activation_elements(model: nn.Module, params: dict, buffers: dict, x: torch.Tensor) -> int:
    """Activation elements one sample creates in one forward pass (sum over leaf modules)."""
    count = [0]

    def hook(_module, _args, out):
        if isinstance(out, torch.Tensor):
            count[0] += out[0].numel()  # one sample
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        functional_call(model, (params, buffers), (x[:1],))
    finally:
        for h in handles:
            h.remove()
    return max(count[0], 1)


def _plan(model, params, buffers, x, n_points, chunk_points, memory_mb, batch_size, itemsize):
    """(points per chunk, samples per batch) so that activations and parameters fit ``memory_mb``.

    A chunk of c points on a batch of b samples holds about c·b·A activation elements plus c·P
    parameter elements; the batch is all samples when one point at a time fits.
    """
    budget = memory_mb * 2**20 / itemsize  # elements
    per_sample = _activation_elements(model, params, buffers, x)
    n_params = sum(p.numel() for p in params.values())
    batch = batch_size or max(1, min(len(x), int(budget // per_sample)))
    fit = int(budget // (batch * per_sample + n_params))
    chunk = chunk_points or max(1, min(n_points, fit))
    return chunk, batch


def _sums(logits: torch.Tensor, y: torch.Tensor, acc: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and number correct (0 unless ``acc``) over the batch axis, in float64.

    The per-batch sums run in the model's dtype (fused cross-entropy; in float32 the relative
    round-off of a 4,000-sample sum is ~1e-7), batches are accumulated in float64. The argmax
    behind the accuracy costs 10-15% of a forward pass of a small MLP, hence ``acc``.

    Args:
        logits: (B, C), or (c, B, C) for c points at once. y: (B,).

    Returns:
        two scalars, or two (c,) tensors.
    """
    correct = (logits.argmax(-1) == y).sum(-1, dtype=torch.float64) if acc else _ZERO
    if logits.dim() == 2:
        return F.cross_entropy(logits, y, reduction="sum").double(), correct
    c, b, k = logits.shape
    nll = F.cross_entropy(logits.reshape(c * b, k), y.repeat(c), reduction="none").view(c, b)
    return nll.sum(-1, dtype=torch.float64), correct


def _accumulate(forward, y: torch.Tensor, batch: int, acc: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of cross-entropy and correct predictions of ``forward(start, stop)`` over all batches."""
    if batch >= len(y):  # one pass: no accumulation ops (they cost ~5% on small models)
        return _sums(forward(0, len(y)), y, acc)
    loss = correct = 0.0
    for start in range(0, len(y), batch):
        s, c = _sums(forward(start, start + batch), y[start:start + batch], acc)
        loss, correct = loss + s, correct + c
    return loss, correct


def _loop(model, points, buffers, x, y, batch, acc):
    """(G,) summed losses and correct counts, one functional_call per point and batch."""
    sums = []
    for g in range(len(points)):
        params = unflatten(model, points[g])
        sums.append(_accumulate(lambda a, b: functional_call(model, (params, buffers), (x[a:b],)), y, batch, acc))
    return torch.stack([s for s, _ in sums]), torch.stack([c for _, c in sums])


def _vmap(model, points, buffers, x, y, batch, chunk, acc):
    """(G,) sums, ``torch.vmap`` of functional_call over chunks of ``chunk`` points."""
    batched = torch.vmap(lambda params, xb: functional_call(model, (params, buffers), (xb,)),
                         in_dims=(0, None))
    sums = []
    for lo in range(0, len(points), chunk):
        params = unflatten(model, points[lo:lo + chunk])  # {name: (c, *shape)}
        sums.append(_accumulate(lambda a, b: batched(params, x[a:b]), y, batch, acc))  # (c,) each
    return torch.cat([s for s, _ in sums]), torch.cat([c.expand(len(s)) for s, c in sums])


def _inplace(model, points, x, y, batch, acc):
    """(G,) sums, copying each point into the weights of a private copy of the model in turn."""
    clone = copy.deepcopy(model).eval()
    flat = torch.empty_like(points[0])  # (P,): the clone's parameters are views into it
    torch.nn.utils.vector_to_parameters(flat, clone.parameters())
    sums = []
    for g in range(len(points)):
        flat.copy_(points[g])  # one memcpy per point
        sums.append(_accumulate(lambda a, b: clone(x[a:b]), y, batch, acc))
    return torch.stack([s for s, _ in sums]), torch.stack([c for _, c in sums])


def evaluate_params(model: nn.Module, points: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
                    chunk_points: int | None = None, memory_mb: float = 256,
                    batch_size: int | None = None, strategy: str = "auto",
                    metrics: tuple[str, ...] = ("loss", "acc")) -> dict[str, torch.Tensor]:
    """Mean cross-entropy and accuracy over ``(x, y)`` at each of G parameter vectors.

    Args:
        model: defines the function; its parameters are replaced by each point, its buffers
            (BatchNorm running statistics) are used as they are, in eval mode. Not modified.
        points: (G, P) or (P,) flattened parameters in ``named_parameters`` order; cast to the
            model's dtype and device.
        x: inputs (N, ...). y: integer targets (N,).
        chunk_points: points evaluated together by ``"vmap"`` (default: from ``memory_mb``).
        memory_mb: budget for activations and batched parameters of one chunk.
        batch_size: samples per forward pass (default: all that fit in ``memory_mb``).
        strategy: ``"auto"`` (``"vmap"`` on CUDA, ``"inplace"`` otherwise), ``"inplace"``,
            ``"loop"`` or ``"vmap"``; all give the same numbers up to float round-off.
        metrics: which of ``"loss"`` and ``"acc"`` to return (``("loss",)`` skips the argmax).

    Returns:
        ``{"loss": (G,), "acc": (G,)}`` float64 on the points' device ((1,) for a single point),
        restricted to ``metrics``.

    Raises:
        ValueError: a point's length is not the model's parameter count, shapes of x and y
            disagree, or an argument is out of range.
    """
    ref = next(model.parameters())
    points = points.detach().to(ref.device, ref.dtype)
    points = points.unsqueeze(0) if points.dim() == 1 else points
    n_params = sum(p.numel() for p in model.parameters())
    if points.dim() != 2 or points.shape[1] != n_params:
        raise ValueError(f"invalid argument points of shape {tuple(points.shape)}: must be (G, {n_params})")
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"invalid arguments x, y with {len(x)} and {len(y)} samples: need equal, > 0")
    if not metrics or not set(metrics) <= {"loss", "acc"}:
        raise ValueError(f"invalid argument metrics={metrics!r}: a non-empty subset of ('loss', 'acc')")
    if strategy not in STRATEGIES:
        raise ValueError(f"invalid argument strategy={strategy!r}: must be one of {STRATEGIES}")
    if memory_mb <= 0 or (chunk_points is not None and chunk_points < 1) or (batch_size is not None and batch_size < 1):
        raise ValueError(f"invalid arguments chunk_points={chunk_points}, memory_mb={memory_mb}, "
                         f"batch_size={batch_size}: must be positive")
    if strategy == "auto":
        strategy = "vmap" if points.is_cuda else "inplace"
    x, y = x.to(ref.device, ref.dtype if x.is_floating_point() else x.dtype), y.to(ref.device)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    with torch.no_grad(), _eval_mode(model):
        chunk, batch = _plan(model, unflatten(model, points[0]), buffers, x, len(points),
                             chunk_points, memory_mb, batch_size, ref.element_size())
        acc = "acc" in metrics
        if strategy == "loop":
            loss, correct = _loop(model, points, buffers, x, y, batch, acc)
        elif strategy == "vmap":
            loss, correct = _vmap(model, points, buffers, x, y, batch, chunk, acc)
        else:
            loss, correct = _inplace(model, points, x, y, batch, acc)
    values = {"loss": loss / len(y), "acc": correct / len(y)}
    return {m: values[m] for m in metrics}

