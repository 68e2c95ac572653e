"""Sharpness of a loss over data: worst-case (ρ), adaptive (ASAM-style) and average-direction sharpness.

Every measure takes the (model, loss_fn, data) triple of :mod:`analysis_lib.training.problem`
(any loss returning the mean of a batch; one ``(inputs, targets)`` pair or an iterable of them,
tensor, tuple or dict inputs; over several batches the loss is the mean weighted by each batch's
count of targets, i.e. the loss of the concatenated data). With θ all the model's parameters
flattened in ``named_parameters`` order and L the mean loss over ``data``:

- **ρ-sharpness** (:func:`rho_sharpness`): S_ρ = max_{‖ε‖₂ ≤ ρ} L(θ + ε) − L(θ), estimated from
  below by one normalised ascent step ε = ρ g/‖g‖, g = ∇L(θ) (the SAM perturbation; Foret,
  Kleinberg, Mobahi & Neyshabur, "Sharpness-Aware Minimization", ICLR 2021; the worst-case
  sharpness of Keskar et al., ICLR 2017) or by several projected normalised gradient-ascent
  steps on the ρ-ball. *Not invariant* under the node-wise rescaling of
  :func:`analysis_lib.landscape.directions.equivalent_rescaling` (Dinh et al., ICML 2017).
- **adaptive sharpness** (:func:`adaptive_sharpness`): the same maximum over ‖ε / T_θ‖₂ ≤ ρ,
  T_θ = |θ| + η element-wise (Kwon, Kim, Park & Choi, "ASAM", ICML 2021; with η = 0 the adaptive
  worst-case sharpness of Andriushchenko, Croce, Müller, Hein & Flammarion, "A Modern Look at the
  Relationship between Sharpness and Generalization", ICML 2023). Written ε = T ⊙ δ it is the
  ρ-sharpness in δ of δ ↦ L(θ + T ⊙ δ). With η = 0 it is *invariant* under the rescaling: θ' = Dθ
  (D diagonal, positive) has T' = D T and L'(θ' + T'δ) = L(θ + Tδ), so every iterate in δ is the
  same. With η > 0 it is not (exactly). Unlike the ASAM code (T = 1 for biases) every parameter,
  biases included, is scaled by its own |θ| + η, which is what the invariance needs.
- **average-direction sharpness** (:func:`average_sharpness`): E_v[L(θ + ρv)] − L(θ) over v
  uniform on the unit sphere of all parameters (a Gaussian normalised to length 1), the
  Monte-Carlo mean of ``n_directions`` seeded directions with the 95% Student-t interval
  mean ± t_{0.975, n−1} s/√n (Jiang et al., "Fantastic Generalization Measures and Where to
  Find Them", ICLR 2020, use Gaussian perturbations; the sphere makes ρ the exact length).
  For L = ½θᵀAθ at θ = 0 it equals ½ρ² tr(A)/d. *Not invariant* under the rescaling.

**Ascent.** One step (``steps=1``) is δ = ρ u/‖u‖ with u the gradient in δ at δ = 0; at a
stationary point (u = 0) it does not move, the value is 0 and ``eps_norm`` 0, and a warning says
so (use ``steps > 1``). Several steps (``steps=K``) start at δ₀ of length ρ/100 in a seeded random
direction (so that the ascent can leave a stationary point; at a non-stationary point it changes
the first step by about 1%), then K times δ ← Π_ρ(δ + α u/‖u‖), Π_ρ the projection onto the
ρ-ball and α = ``step_size`` (default ρ: each step may cross the whole ball); the value reported
is the largest L(θ + ε) − L(θ) over the iterates (each one is a feasible point, so the estimate
is a lower bound on the maximum that only improves). For L = ½θᵀAθ at θ = 0 this is power
iteration and reaches ½ρ²λ_max(A).

**Model and weights.** The model is never modified: every loss and gradient is computed with
detached copies of its parameters through ``torch.func.functional_call``, in eval mode (BatchNorm
on its running statistics, the rule of :mod:`analysis_lib.landscape.evaluate`), every module's
mode restored; weights, buffers and ``.grad`` stay bit-for-bit as they were. Gradients are taken
in the model's dtype; losses are accumulated in float64.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..landscape.evaluate import evaluate_params, flat_parameters
from ..training.problem import LossFn, as_batches, call_model, loss_spec, to_device
from ..validation import check_int, check_number, fail

START_FRACTION = 0.01  # length of the random start of a multi-step ascent, as a fraction of ρ


@dataclass(frozen=True)
class SharpnessEstimate:
    """One sharpness value.

    Attributes:
        value: L(θ + ε) − L(θ) at the best point found (a lower bound on the maximum).
        eps_norm: the constraint's norm of that ε: ‖ε‖₂ (ρ-sharpness) or ‖ε / T_θ‖₂ (adaptive).
        base_loss: L(θ).
        rho, steps: the radius and the number of ascent steps.
        n_gradients: gradient evaluations (each a forward and backward pass over ``data``).
    """

    value: float
    eps_norm: float
    base_loss: float
    rho: float
    steps: int
    n_gradients: int


class FlatLoss:
    """L(θ) and ∇L(θ) of a flat parameter vector, the model left untouched (module docstring).

    Args:
        model: any module with parameters. loss_fn, data: as the module docstring says.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any):
        named = list(model.named_parameters())
        if not named:
            fail("model", type(model).__name__, "must have parameters (it has none)")
        self.model = model
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.dtype, self.device = named[0][1].dtype, named[0][1].device
        self.spec = loss_spec(loss_fn)
        self.batches = [(to_device(b.inputs, self.device, self.dtype), to_device(b.targets, self.device, self.dtype),
                         b.weight) for b in as_batches(data, self.spec)]
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.theta = flat_parameters(model).clone()
        self.n_gradients = 0

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return sum(self.sizes)

    def _state(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(flat.to(self.dtype), self.sizes)
        return {n: p.reshape(s) for n, p, s in zip(self.names, parts, self.shapes)}

    def _mean(self, state: dict) -> torch.Tensor:
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            total = 0.0
            for inputs, targets, weight in self.batches:
                buffers = {n: b.clone() for n, b in self.buffers.items()}
                out = call_model(self.model, inputs, {**state, **buffers})
                total = total + self.spec(out, targets).to(torch.float64) * weight
            return total
        finally:
            for m, mode in modes:
                m.training = mode

    def loss(self, flat: torch.Tensor) -> float:
        """Mean loss over the data at parameters ``flat`` (P,)."""
        with torch.no_grad():
            return float(self._mean(self._state(flat)))

    def loss_and_gradient(self, flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(L, ∇L as a flat float64 vector (P,)) at parameters ``flat``."""
        leaf = flat.detach().to(self.dtype).clone().requires_grad_(True)
        with torch.enable_grad():
            value = self._mean(self._state(leaf))
            (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
        self.n_gradients += 1
        grad = torch.zeros_like(leaf) if grad is None else grad
        return float(value.detach()), grad.detach().to(torch.float64)


def _check(rho: float, steps: int, step_size: float | None) -> None:
    check_number("rho", rho, positive=True)
    check_int("steps", steps, 1)
    if step_size is not None:
        check_number("step_size", step_size, positive=True)


def _ascent(loss: FlatLoss, scale: torch.Tensor | None, rho: float, steps: int, step_size: float | None,
            seed: int, what: str) -> SharpnessEstimate:
    """The maximum over ‖δ‖ ≤ ρ of L(θ + T ⊙ δ) − L(θ) by normalised projected ascent (module docstring)."""
    theta = loss.theta.to(torch.float64)
    T = torch.ones_like(theta) if scale is None else scale
    base, g = loss.loss_and_gradient(loss.theta)
    alpha = rho if step_size is None else step_size
    if steps == 1:
        u = T * g
        norm = torch.linalg.vector_norm(u).item()
        if norm == 0.0:
            warnings.warn(f"{what}: the gradient at θ is 0, so one ascent step does not move (value 0); "
                          "use steps > 1", stacklevel=3)
            return SharpnessEstimate(0.0, 0.0, base, rho, steps, loss.n_gradients)
        delta = rho * u / norm
        value = loss.loss(theta + T * delta) - base
        return SharpnessEstimate(value, torch.linalg.vector_norm(delta).item(), base, rho, steps, loss.n_gradients)
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(loss.dim, generator=gen, dtype=torch.float64).to(theta.device)
    delta *= START_FRACTION * rho / torch.linalg.vector_norm(delta)
    best_value, best_norm = -math.inf, 0.0
    for k in range(steps + 1):
        value, g = loss.loss_and_gradient(theta + T * delta)
        if value - base > best_value:
            best_value, best_norm = value - base, torch.linalg.vector_norm(delta).item()
        u = T * g
        norm = torch.linalg.vector_norm(u).item()
        if k == steps or norm == 0.0:
            break
        delta = delta + alpha * u / norm
        length = torch.linalg.vector_norm(delta).item()
        if length > rho:
            delta = delta * (rho / length)
    return SharpnessEstimate(best_value, best_norm, base, rho, steps, loss.n_gradients)


def rho_sharpness(model: nn.Module, loss_fn: LossFn, data: Any, rho: float, *, steps: int = 1,
                  step_size: float | None = None, seed: int = 0) -> SharpnessEstimate:
    """Worst-case sharpness max_{‖ε‖₂ ≤ ρ} L(θ + ε) − L(θ) (Foret et al. 2021; Keskar et al. 2017).

    ``steps=1`` is SAM's perturbation ε = ρ g/‖g‖; ``steps > 1`` projected normalised gradient
    ascent from a seeded random start (module docstring). Not invariant under the node-wise
    rescaling of :func:`~analysis_lib.landscape.directions.equivalent_rescaling`. The model is
    not modified.

    Args:
        model: any module. loss_fn, data: as :mod:`analysis_lib.training.problem` describes them.
        rho: radius ρ > 0 of the ball, in the Euclidean norm over all parameters.
        steps: ascent steps (≥ 1). step_size: length α of each normalised step (default ρ).
        seed: of the random start of a multi-step ascent (unused for ``steps=1``).

    Returns:
        SharpnessEstimate: the value, ‖ε‖ reached, L(θ) and the cost.

    Raises:
        ConfigError: ρ ≤ 0, steps < 1, step_size ≤ 0, or a model without parameters, before any work.
    """
    _check(rho, steps, step_size)
    loss = FlatLoss(model, loss_fn, data)
    return _ascent(loss, None, rho, steps, step_size, seed, "rho_sharpness")


def adaptive_scale(model: nn.Module, eta: float = 0.0) -> torch.Tensor:
    """T_θ = |θ| + η over all parameters, flat float64 (P,) (Kwon et al. 2021)."""
    return flat_parameters(model).to(torch.float64).abs() + eta


def adaptive_sharpness(model: nn.Module, loss_fn: LossFn, data: Any, rho: float, *, steps: int = 1,
                       step_size: float | None = None, eta: float = 0.0, seed: int = 0) -> SharpnessEstimate:
    """Adaptive sharpness max_{‖ε / T_θ‖₂ ≤ ρ} L(θ + ε) − L(θ), T_θ = |θ| + η (Kwon et al. 2021, ASAM).

    Computed as the ρ-sharpness in δ of L(θ + T_θ ⊙ δ) (one normalised step, or projected
    ascent as :func:`rho_sharpness`). With ``eta=0`` (Andriushchenko et al. 2023) it is invariant
    under the node-wise rescaling of
    :func:`~analysis_lib.landscape.directions.equivalent_rescaling`; with η > 0 (ASAM uses 0.01)
    only approximately. A parameter that is exactly 0 is not perturbed when η = 0.

    Args:
        model: any module. loss_fn, data: as :mod:`analysis_lib.training.problem` describes them.
        rho: radius ρ > 0 in the scaled norm ‖ε / T_θ‖₂.
        steps, step_size, seed: of the ascent, as for :func:`rho_sharpness`.
        eta: η ≥ 0 added to |θ|.

    Returns:
        SharpnessEstimate: ``eps_norm`` is ‖ε / T_θ‖₂ = ‖δ‖₂.

    Raises:
        ConfigError: ρ ≤ 0, steps < 1, step_size ≤ 0, η < 0, or a model without parameters.
    """
    _check(rho, steps, step_size)
    check_number("eta", eta, lo=0.0)
    loss = FlatLoss(model, loss_fn, data)
    scale = adaptive_scale(model, eta).to(loss.theta.device)
    return _ascent(loss, scale, rho, steps, step_size, seed, "adaptive_sharpness")


@dataclass(frozen=True)
class AverageSharpness:
    """E_v[L(θ + ρv)] − L(θ) with its Monte-Carlo standard error and 95% Student-t interval."""

    value: float
    se: float
    ci_low: float
    ci_high: float
    base_loss: float
    rho: float
    n_directions: int


def average_sharpness(model: nn.Module, loss_fn: LossFn, data: Any, rho: float, *, n_directions: int = 100,
                      seed: int = 0, chunk: int = 64) -> AverageSharpness:
    """Average-direction sharpness E_v[L(θ + ρv)] − L(θ), v uniform on the unit sphere of all parameters.

    The mean over ``n_directions`` directions drawn from ``seed`` (each a float64 Gaussian over
    all parameters divided by its norm), with the interval mean ± t_{0.975, n−1} · s/√n, s the
    sample standard deviation of the n differences (Student t; Jiang et al. 2020 use Gaussian
    perturbations of this kind). Not invariant under the node-wise rescaling. Losses go through
    :func:`~analysis_lib.landscape.evaluate.evaluate_params` (eval mode; the model not modified).

    Args:
        model: any module. loss_fn, data: as :mod:`analysis_lib.training.problem` describes them.
        rho: the length ρ > 0 of every perturbation.
        n_directions: directions (≥ 2, for an interval). seed: of the directions.
        chunk: directions evaluated together (memory: chunk × parameters).

    Returns:
        AverageSharpness.

    Raises:
        ConfigError: ρ ≤ 0, n_directions < 2, chunk < 1, or a model without parameters.
    """
    from scipy import stats

    check_number("rho", rho, positive=True)
    check_int("n_directions", n_directions, 2)
    check_int("chunk", chunk, 1)
    if not list(model.parameters()):
        fail("model", type(model).__name__, "must have parameters (it has none)")
    theta = flat_parameters(model).to(torch.float64)
    kwargs = {"loss_fn": loss_fn, "metrics": ("loss",)}
    base = evaluate_params(model, theta, data, **kwargs)["loss"].item()
    gen = torch.Generator().manual_seed(seed)
    diffs = []
    for lo in range(0, n_directions, chunk):
        v = torch.randn(min(chunk, n_directions - lo), theta.numel(), generator=gen, dtype=torch.float64)
        v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
        points = theta.cpu() + rho * v
        diffs.append(evaluate_params(model, points, data, **kwargs)["loss"].cpu() - base)
    d = torch.cat(diffs)
    mean, se = d.mean().item(), d.std().item() / math.sqrt(n_directions)
    half = float(stats.t.ppf(0.975, n_directions - 1)) * se
    return AverageSharpness(mean, se, mean - half, mean + half, base, rho, n_directions)


BATTERY_COLUMNS = ["measure", "value", "ci_low", "ci_high", "rho", "steps", "invariant", "eps_norm", "base_loss"]


def _trace(model: nn.Module, loss_fn: LossFn, data: Any, trace_matvecs: int, exact_max_dim: int, seed: int):
    """The trace of H of the whole model as :func:`~analysis_lib.curvature.trace.layer_traces` takes it."""
    from .diagonal import hessian_diagonal
    from .hessian import HessianOperator
    from .trace import TraceEstimate, exact_trace, hutchpp

    diag = hessian_diagonal(model, loss_fn, data)
    if diag is not None:
        return TraceEstimate(sum(d.sum().item() for d in diag.values()), 0.0, 0, "exact diagonal")
    op = HessianOperator(model, loss_fn, data)
    if op.dim <= exact_max_dim:
        return exact_trace(op.matvec, op.dim, device=op.device)
    return hutchpp(op.matvec, op.dim, trace_matvecs, seed=seed, device=op.device)


def sharpness_battery(model: nn.Module, loss_fn: LossFn, data: Any, *, rho: float | list[float],
                      steps: tuple[int, ...] = (1, 20), n_directions: int = 100, eta: float = 0.0, seed: int = 0,
                      lanczos_tol: float = 1e-6, trace_matvecs: int = 60, exact_max_dim: int = 500):
    """Every sharpness measure at the model's weights, one tidy row per measure (and ρ, steps).

    Rows: ``lambda_max`` (the top Hessian eigenvalue by Lanczos,
    :func:`~analysis_lib.curvature.lanczos.top_eigenpairs`; ``ci_low, ci_high`` = value ∓ the
    Ritz residual, a guaranteed interval for the nearest eigenvalue), ``trace`` (tr H: the exact
    diagonal, exact products, or Hutch++ as in :func:`~analysis_lib.curvature.trace.layer_traces`;
    interval ± 1.96 standard errors, a point for the exact methods), then per ρ:
    ``rho_sharpness`` and ``adaptive_sharpness`` for every entry of ``steps`` (no interval: each
    is a deterministic lower bound on its maximum), and ``average_sharpness`` (Student-t 95%
    interval). ``invariant`` says whether the measure is invariant under the node-wise rescaling
    of :func:`~analysis_lib.landscape.directions.equivalent_rescaling`: only the adaptive
    sharpness with η = 0.

    Args:
        model: any module (not modified). loss_fn, data: as :mod:`analysis_lib.training.problem`.
        rho: one radius ρ > 0 or a list of them.
        steps: ascent steps of the worst-case measures (each ≥ 1).
        n_directions: of the average sharpness (≥ 2). eta: η ≥ 0 of the adaptive sharpness.
        seed: of random starts, directions and Hutch++.
        lanczos_tol: relative tolerance of λ_max. trace_matvecs, exact_max_dim: of the trace.

    Returns:
        DataFrame with columns ``measure, value, ci_low, ci_high, rho, steps, invariant, eps_norm,
        base_loss`` (``rho``, ``steps``, ``eps_norm`` NaN / missing where they do not apply).

    Raises:
        ConfigError: a ρ ≤ 0, a step count < 1, n_directions < 2, η < 0, or a model without
            parameters, before any work.
    """
    import pandas as pd

    from .hessian import HessianOperator
    from .lanczos import top_eigenpairs

    rhos = [rho] if isinstance(rho, (int, float)) else list(rho)
    if not rhos:
        fail("rho", rho, "must be a number > 0 or a non-empty list of them")
    for r in rhos:
        check_number("rho", r, positive=True)
    if isinstance(steps, int) or not steps:
        fail("steps", steps, "must be a non-empty list of integers >= 1")
    for s in steps:
        check_int("steps", s, 1)
    check_int("n_directions", n_directions, 2)
    check_number("eta", eta, lo=0.0)
    if not list(model.parameters()):
        fail("model", type(model).__name__, "must have parameters (it has none)")
    nan = math.nan
    op = HessianOperator(model, loss_fn, data)
    top = top_eigenpairs(op.matvec, op.dim, k=1, tol=lanczos_tol, seed=seed, device=op.device)
    lam, res = float(top.eigenvalues[0]), float(top.residuals[0])
    tr = _trace(model, loss_fn, data, trace_matvecs, exact_max_dim, seed)
    base = FlatLoss(model, loss_fn, data).loss(flat_parameters(model))
    rows = [("lambda_max", lam, lam - res, lam + res, nan, pd.NA, False, nan, base),
            ("trace", tr.estimate, tr.estimate - 1.96 * tr.se, tr.estimate + 1.96 * tr.se, nan, pd.NA, False, nan,
             base)]
    for r in rhos:
        for s in steps:
            e = rho_sharpness(model, loss_fn, data, r, steps=s, seed=seed)
            rows.append(("rho_sharpness", e.value, nan, nan, r, s, False, e.eps_norm, e.base_loss))
            e = adaptive_sharpness(model, loss_fn, data, r, steps=s, eta=eta, seed=seed)
            rows.append(("adaptive_sharpness", e.value, nan, nan, r, s, eta == 0, e.eps_norm, e.base_loss))
        a = average_sharpness(model, loss_fn, data, r, n_directions=n_directions, seed=seed)
        rows.append(("average_sharpness", a.value, a.ci_low, a.ci_high, r, pd.NA, False, r, a.base_loss))
    table = pd.DataFrame(rows, columns=BATTERY_COLUMNS)
    table["steps"] = table["steps"].astype("Int64")
    table["invariant"] = table["invariant"].astype(bool)
    return table
