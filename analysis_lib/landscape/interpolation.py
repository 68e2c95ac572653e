"""Loss and accuracy on the straight line between two solutions, and the barrier on it.

θ_α = (1−α) θ_A + α θ_B. The *loss barrier* is

    B = max_{α ∈ [0, 1]} [ L(θ_α) − ((1−α) L(θ_A) + α L(θ_B)) ],

the largest rise of the loss above the straight line joining its end values (Frankle, Dziugaite,
Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020; Altıntaş et
al., "The Butterfly Effect: Neural Network Training Trajectories Are Highly Sensitive to Initial
Conditions", ICML 2025). For accuracy the barrier is the largest *drop* below the line, so a positive
barrier always means "worse in between". The maximum is taken over the α grid given (it must hold
0 and 1); B ≥ 0 because the end points are on the grid.

Every loss goes through :func:`analysis_lib.landscape.evaluate.evaluate_params` (eval mode; the
mean of any ``loss_fn`` over any data of :mod:`analysis_lib.training.problem`, cross-entropy and
its accuracy by default). With ``match=True``, B is first permuted into A's basis by
:func:`analysis_lib.weights.matching.weight_matching` (the function B computes is unchanged).

**BatchNorm rule.** Running statistics are buffers, not parameters, and there is no single
right value for them at θ_α. ``batchnorm="interpolate"`` (default) interpolates them like the
parameters, (1−α) μ_A + α μ_B; ``"recompute"`` re-estimates them for every θ_α by one pass over
``stats_x`` (by default the inputs of the ``"train"`` split, batch by batch) in train mode with
a cumulative average, as Jordan et al. ("REPAIR", ICLR 2023) and Ainsworth et al. (2023) do, because interpolated
statistics misdescribe the interpolated network's activations and inflate the barrier. Integer
buffers (``num_batches_tracked``) are taken from A. Models without buffers are unaffected.

Output: the tidy landscape schema (:data:`analysis_lib.landscape.surfaces.SURFACE_COLUMNS`) extended to
:data:`INTERPOLATION_COLUMNS`. ``run_id`` and ``run_id_b`` name
A and B; ``alpha`` is the coefficient of θ_B; ``beta`` is 0 and ``direction_seed`` is −1 (a line
between two solutions has no random direction); ``matched`` says whether B was permuted first;
``metric`` is ``"loss"``, ``"acc"`` (for a cross-entropy) or any other metric asked for.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..training.problem import as_batches, call_model, loss_spec
from ..weights.matching import weight_matching
from .evaluate import evaluate_params, metric_functions
from .surfaces import SURFACE_COLUMNS

# The landscape schema with B's run id and the matching flag after A's run id.
INTERPOLATION_COLUMNS = [SURFACE_COLUMNS[0], "run_id_b", "matched", *SURFACE_COLUMNS[1:]]
BARRIER_COLUMNS = ["run_id", "run_id_b", "matched", "split", "metric", "barrier", "alpha_max",
                   "value_a", "value_b"]
BATCHNORM_RULES = ("interpolate", "recompute")
State = Mapping[str, torch.Tensor]
Splits = Mapping[str, Any]


def default_alphas(points: int = 21) -> np.ndarray:
    """``points`` (>= 2) equally spaced values from 0 to 1, both included."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"invalid argument points={points!r}: must be an integer >= 2 (both ends included)")
    return np.linspace(0.0, 1.0, points)


def flat_from_state(model: nn.Module, state: State) -> torch.Tensor:
    """The parameters of ``state`` flattened in ``model.named_parameters`` order, (P,) float64."""
    return torch.cat([state[name].detach().double().reshape(-1) for name, _ in model.named_parameters()])


def barrier(alphas: Sequence[float], values: Sequence[float], *, worse: str = "higher") -> tuple[float, float]:
    """The barrier of one curve and the α where it is largest.

    Args:
        alphas: (G,) grid, must contain 0 and 1; points outside [0, 1] are ignored.
        values: (G,) the curve at ``alphas``.
        worse: ``"higher"`` (a loss: rise above the line) or ``"lower"`` (an accuracy: drop below).

    Returns:
        (barrier ≥ 0, α of the maximum; the first such α on ties).
    """
    a, v = np.asarray(alphas, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if a.shape != v.shape or a.ndim != 1:
        raise ValueError(f"invalid arguments alphas, values of shapes {a.shape}, {v.shape}: need equal 1-D")
    if worse not in ("higher", "lower"):
        raise ValueError(f"invalid argument worse={worse!r}: must be 'higher' or 'lower'")
    _check_end_points(a)
    v0, v1 = v[np.flatnonzero(a == 0.0)[0]], v[np.flatnonzero(a == 1.0)[0]]
    inside = (a >= 0.0) & (a <= 1.0)
    gap = v[inside] - ((1.0 - a[inside]) * v0 + a[inside] * v1)  # (G_inside,)
    gap = gap if worse == "higher" else -gap
    i = int(np.argmax(gap))
    return float(gap[i]), float(a[inside][i])


def _check_end_points(alphas: np.ndarray) -> None:
    if not (np.isfinite(alphas).all() and (alphas == 0.0).any() and (alphas == 1.0).any()):
        raise ValueError(f"invalid argument alphas={alphas.tolist()}: must be finite and contain "
                         "0 and 1 (the two solutions)")


def _interpolated_state(state_a: State, state_b: State, alpha: float) -> dict[str, torch.Tensor]:
    """Every floating tensor (1−α)·A + α·B, integer buffers from A."""
    return {k: (1.0 - alpha) * v + alpha * state_b[k] if v.is_floating_point() else v.clone()
            for k, v in state_a.items()}


@torch.no_grad()
def _recompute_statistics(model: nn.Module, stats_inputs: list, batch_size: int | None) -> None:
    """Replace every BatchNorm's running statistics by their cumulative average over the inputs."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight to every batch
    model.train()
    ref = next(model.parameters())
    for inputs in stats_inputs:
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.to(ref.device, ref.dtype)
            step = batch_size or len(inputs)
            for start in range(0, len(inputs), step):
                model(inputs[start:start + step])
        else:
            call_model(model, inputs)
    model.eval()


def _curve(model, state_a, state_b, alphas, data, batchnorm, stats_inputs, kwargs):
    """{metric: (G,)} along the line, applying the BatchNorm rule."""
    fa, fb = flat_from_state(model, state_a), flat_from_state(model, state_b)
    al = torch.as_tensor(alphas, dtype=torch.float64)[:, None]  # (G, 1)
    points = (1.0 - al) * fa + al * fb  # (G, P)
    if not list(model.buffers()):  # nothing but parameters: one batched call for the whole line
        return evaluate_params(model, points, data, **kwargs)
    clone, out = copy.deepcopy(model), {}
    ref = next(model.parameters())
    for g, alpha in enumerate(alphas):
        state = {k: v.to(ref.device, ref.dtype if v.is_floating_point() else v.dtype)
                 for k, v in _interpolated_state(state_a, state_b, float(alpha)).items()}
        clone.load_state_dict(state)
        if batchnorm == "recompute":
            _recompute_statistics(clone, stats_inputs, kwargs.get("batch_size"))
        for metric, value in evaluate_params(clone, points[g], data, **kwargs).items():
            out.setdefault(metric, []).append(value)
    return {k: torch.cat(v) for k, v in out.items()}


def interpolation_curve(model: nn.Module, state_a: State, state_b: State, splits: Splits, *,
                        loss_fn=F.cross_entropy, metrics: Sequence[str] | None = None,
                        metric_fns: Mapping | None = None,
                        alphas: Sequence[float] | None = None, match: bool = False, match_seed: int = 0,
                        batchnorm: str = "interpolate", stats_x: torch.Tensor | None = None,
                        run_ids: tuple[str, str] = ("A", "B"), memory_mb: float = 256,
                        batch_size: int | None = None) -> pd.DataFrame:
    """Loss and accuracy at θ_α = (1−α)θ_A + αθ_B on each split, as a tidy table.

    Args:
        model: the architecture; its own weights and buffers are not used or changed.
        state_a, state_b: state dicts (parameters and buffers) of the two solutions.
        splits: ``{"train": data, "test": data}``: named data, each an ``(inputs, targets)`` pair
            or an iterable of them.
        loss_fn, metrics, metric_fns: the loss (default cross-entropy) and the metrics of the
            curve (see :func:`analysis_lib.landscape.evaluate.metric_functions`).
        alphas: (G,) grid containing 0 and 1 (default: 21 points from 0 to 1).
        match: permute B into A's basis by weight matching first (MLPs only).
        match_seed: seed of the weight-matching layer order.
        batchnorm: ``"interpolate"`` or ``"recompute"`` (see the module docstring).
        stats_x: inputs (a tensor) for ``"recompute"`` (default: the inputs of every batch of
            ``splits["train"]``).
        run_ids: labels of A and B for the ``run_id`` and ``run_id_b`` columns.
        memory_mb, batch_size: passed to :func:`analysis_lib.landscape.evaluate.evaluate_params`.

    Returns:
        DataFrame with :data:`INTERPOLATION_COLUMNS`, one row per split × metric × α.

    Raises:
        ValueError: a bad ``alphas`` grid or ``batchnorm`` rule, no ``stats_x`` for
            ``"recompute"``, or (with ``match``) a model weight matching does not support.
    """
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1:
        raise ValueError(f"invalid argument alphas of shape {alphas.shape}: must be 1-D")
    _check_end_points(alphas)
    if batchnorm not in BATCHNORM_RULES:
        raise ValueError(f"invalid argument batchnorm={batchnorm!r}: must be one of {BATCHNORM_RULES}")
    metric_functions(loss_fn, metrics, metric_fns)  # refuse a bad loss or metric before any work
    stats_inputs = None if stats_x is None else [stats_x]
    if batchnorm == "recompute" and stats_x is None:
        if "train" not in splits:
            raise ValueError("batchnorm='recompute' needs stats_x or a 'train' split")
        stats_inputs = [b.inputs for b in as_batches(splits["train"], loss_spec(loss_fn))]
    if match:
        state_b = weight_matching(model, state_a, state_b, seed=match_seed).state
    kwargs = {"loss_fn": loss_fn, "metrics": metrics, "metric_fns": metric_fns, "memory_mb": memory_mb,
              "batch_size": batch_size}
    frames = []
    for split, data in splits.items():
        res = _curve(model, state_a, state_b, alphas, data, batchnorm, stats_inputs, kwargs)
        for metric in res:
            frames.append(pd.DataFrame({"run_id": run_ids[0], "run_id_b": run_ids[1], "matched": match,
                                        "direction_seed": -1, "alpha": alphas, "beta": 0.0, "split": split,
                                        "metric": metric, "value": res[metric].cpu().numpy()}))
    return pd.concat(frames, ignore_index=True)[INTERPOLATION_COLUMNS]


def interpolation_barriers(curves: pd.DataFrame) -> pd.DataFrame:
    """The barrier of every curve in a table from :func:`interpolation_curve` (or several concatenated).

    Returns:
        One row per (run_id, run_id_b, matched, split, metric) with :data:`BARRIER_COLUMNS`:
        ``barrier`` (the rise above the line of a loss or any other metric, the drop below it of
        an accuracy ``acc``), ``alpha_max``
        where it is largest, and the end values ``value_a`` (α = 0), ``value_b`` (α = 1).
    """
    rows = []
    keys = ["run_id", "run_id_b", "matched", "split", "metric"]
    for key, sub in curves.groupby(keys, sort=False):
        sub = sub.sort_values("alpha")
        a, v = sub["alpha"].to_numpy(), sub["value"].to_numpy()
        height, at = barrier(a, v, worse="lower" if key[-1] == "acc" else "higher")
        rows.append({**dict(zip(keys, key)), "barrier": height, "alpha_max": at,
                     "value_a": float(v[a == 0.0][0]), "value_b": float(v[a == 1.0][0])})
    return pd.DataFrame(rows, columns=BARRIER_COLUMNS)


def pair_interpolations(pairs: pd.DataFrame, states: Mapping[str, Mapping[str, torch.Tensor]],
                        model: nn.Module, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *,
                        alphas: Sequence[float] | None = None, matching: Sequence[bool] = (False, True),
                        **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interpolation curves and barriers between the final weights of every pair.

    Args:
        pairs: one row per pair, with at least ``run_id`` (A) and ``run_id_b`` (B); its other
            columns (e.g. a pair label) are carried over to both outputs.
        states: run id -> final state dict.
        model: the architecture; splits, alphas: as in :func:`interpolation_curve`.
        matching: which of without (False) / with (True) weight matching to compute.
        kwargs: passed on to ``interpolation_curve`` (``batchnorm``, ``match_seed``, ...).

    Returns:
        (curves, barriers): the interpolation schema and the barrier table, each with the
        other columns of ``pairs`` added; both empty when ``pairs`` is.
    """
    curves = []
    for pair in pairs.itertuples(index=False):
        for match in matching:
            curve = interpolation_curve(model, states[pair.run_id], states[pair.run_id_b], splits,
                                        alphas=alphas, match=match, run_ids=(pair.run_id, pair.run_id_b), **kwargs)
            curves.append(curve)
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=INTERPOLATION_COLUMNS)
    labels = pairs.drop_duplicates(["run_id", "run_id_b"])
    barriers = interpolation_barriers(curves).merge(labels, on=["run_id", "run_id_b"])
    curves = curves.merge(labels, on=["run_id", "run_id_b"])
    return curves, barriers
