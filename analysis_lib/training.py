"""The training loop with per-layer probes and divergence detection.

Step convention: "step t" is the state after t optimiser updates. Probes at step t read θ(t);
``grad_norm``, ``grad_noise`` and ``update_ratio`` at step t refer to update t (the gradient
computed at θ(t−1) and the move θ(t−1) → θ(t)); at step 0 only weights and evaluation exist.
``batch_loss`` is the mini-batch loss of every update, recorded at the step it produced.

Probes never perturb training: they read tensors under ``no_grad``, evaluate in ``eval()`` mode
(BatchNorm running statistics untouched) and draw no random numbers, so a run with and without
probes from the same seed has identical loss curves (``tests/test_training.py`` checks it).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import probes as P
from .config import ProbeConfig, RunConfig, TrainConfig
from .data import Dataset, load_dataset
from .gradnoise import GradientNoiseProbe
from .hessian import HessianOperator
from .lanczos import top_eigenpairs
from .models import build_model
from .spectrum import spectrum_table
from .subspace import gradient_overlap, subspace_overlap
from .trace import hutchpp

TIDY_COLUMNS = ["step", "layer", "metric", "value"]


@dataclass
class TrainResult:
    """Tidy metrics (``step, layer, metric, value``) and how the run ended."""

    metrics: pd.DataFrame
    status: str  # "finished" or "diverged"
    diverged_step: int | None = None
    timings: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)  # extra tidy tables, e.g. "spectrum"


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of update ``step`` (1-based): linear warm-up, then constant."""
    if config.warmup_steps and step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    return config.lr


def batches(n: int, batch_size: int, seed: int, device: torch.device):
    """Endless index batches: a fresh seeded permutation per epoch; full batch when batch_size is 0."""
    if batch_size == 0 or batch_size >= n:
        full = torch.arange(n, device=device)
        while True:
            yield full
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n - batch_size + 1, batch_size):  # drop the ragged last batch
            yield order[start: start + batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    logits = model(x)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(dim=1) == y).double().mean().item()
    model.train(was_training)
    return loss, acc


class _Recorder:
    """Collects tidy rows; cheaper than growing a DataFrame."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str, float]] = []

    def add(self, step: int, layer: str, metric: str, value: float) -> None:
        self.rows.append((step, layer, metric, value))

    def add_layers(self, step: int, metric: str, triples) -> None:
        self.rows.extend((step, layer, metric + suffix, value) for layer, suffix, value in triples)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=TIDY_COLUMNS)


def train(config: RunConfig, dataset: Dataset | None = None) -> TrainResult:
    """Train one model as ``config`` says and return its tidy metrics.

    A non-finite mini-batch loss stops the run with ``status="diverged"`` and the step at which it
    happened; the metrics recorded until then are kept.
    """
    tc = config.train
    device, dtype = torch.device(tc.device), getattr(torch, tc.dtype)
    data = (dataset or load_dataset(config.data)).to(device, dtype)
    model = build_model(config.model, data.n_features, data.n_classes, config.seed).to(device, dtype)
    model.train()
    opt = make_optimizer(model, tc)
    names = set(config.probes.names)
    schedule = set(P.probe_steps(config.probes, tc.steps))
    params = dict(model.named_parameters())
    if tc.perturb_scale and tc.perturb_step == 0:
        perturb_weights(params, tc.perturb_scale, tc.perturb_seed)
    initial = {k: v.detach().clone() for k, v in params.items()}
    rec = _Recorder()
    trajectory: list[tuple[int, torch.Tensor]] = []  # the "weights" probe
    # Data order has its own stream, derived from the seed but distinct from the init stream.
    order = batches(len(data.y_train), tc.batch_size, 1_000_003 * config.seed + 17, device)
    t0, probe_seconds = time.perf_counter(), 0.0

    curvature: dict = {}  # warm start of λ_max: the previous probe's top eigenvector

    def snapshot(step: int) -> float:
        start = time.perf_counter()
        _probe_state(step, model, params, initial, data, names, rec)
        if "weights" in names:
            trajectory.append((step, torch.cat([v.detach().reshape(-1) for v in params.values()]).float().cpu()))
        if names & {"sharpness", "hessian_trace", "grad_overlap", "spectrum"}:
            _probe_curvature(step, model, data, config.probes, curvature, rec, final=step == tc.steps)
        return time.perf_counter() - start

    probe_seconds += snapshot(0)
    status, diverged_step = "finished", None
    for step in range(1, tc.steps + 1):
        idx = next(order)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        opt.zero_grad(set_to_none=True)
        probing = step in schedule
        # The grad_noise hooks are attached only for a probe step's forward/backward pass.
        noise = GradientNoiseProbe(model) if probing and "grad_noise" in names else None
        with noise if noise is not None else contextlib.nullcontext():
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss_value = loss.item()
            rec.add(step, "model", "batch_loss", loss_value)
            if not math.isfinite(loss_value):
                status, diverged_step = "diverged", step
                break
            loss.backward()
        if probing:
            start = time.perf_counter()
            before = _probe_gradients(step, params, names, rec)
            if noise is not None:
                for layer, metric, value in noise.statistics():
                    rec.add(step, layer, metric, value)
            probe_seconds += time.perf_counter() - start
        opt.step()
        if tc.perturb_scale and step == tc.perturb_step:
            perturb_weights(params, tc.perturb_scale, tc.perturb_seed)
        if probing:
            start = time.perf_counter()
            if "update_ratio" in names:
                rec.add_layers(step, "update_ratio", P.layer_update_ratios(params, before))
            probe_seconds += time.perf_counter() - start + snapshot(step)
    total = time.perf_counter() - t0
    timings = {"train_seconds": total - probe_seconds, "probe_seconds": probe_seconds}
    tables = {"spectrum": pd.concat(curvature["spectrum"], ignore_index=True)} if curvature.get("spectrum") else {}
    if "weights" in names:
        tables["trajectory"] = {"steps": torch.tensor([t for t, _ in trajectory]),
                                "weights": torch.stack([w for _, w in trajectory])}
        tables["final"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(rec.frame(), status, diverged_step, timings, tables)


@torch.no_grad()
def perturb_weights(params: dict[str, torch.Tensor], scale: float, seed: int) -> None:
    """Add Gaussian noise from ``seed`` to every parameter in place, rescaled so that the whole
    perturbation has L2 norm ``scale`` × ‖θ‖ (the butterfly-effect twins of claim 10)."""
    gen = torch.Generator().manual_seed(seed)
    noise = [torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in params.values()]
    theta_norm = torch.sqrt(sum(v.double().pow(2).sum().cpu() for v in params.values()))
    factor = scale * theta_norm / torch.sqrt(sum(n.pow(2).sum() for n in noise))
    for v, n in zip(params.values(), noise):
        v.add_((n * factor).to(v.device, v.dtype))


def _probe_gradients(step, params, names, rec) -> dict | None:
    """Record gradient norms; return a copy of θ(t−1) when the update ratio is wanted."""
    if "grad_norm" in names:
        grads = {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in params.items()}
        rec.add_layers(step, "grad_norm", P.layer_gradient_norms(grads))
    if "update_ratio" in names:
        return {k: v.detach().clone() for k, v in params.items()}
    return None


def _probe_curvature(step, model, data, config: ProbeConfig, state: dict, rec, final: bool) -> None:
    """Curvature probes of the training loss at θ(step); see ProbeConfig for what each records.

    Uses the first ``curvature_samples`` training samples (all when 0), BatchNorm in eval mode,
    and its own seeded generators; the model and the training RNG are left untouched.
    """
    n = config.curvature_samples or len(data.y_train)
    op = HessianOperator(model, data.x_train[:n], data.y_train[:n])
    if "grad_overlap" in config.names:
        _probe_overlap(step, op, config.overlap_k or data.n_classes, state, rec)
    if "spectrum" in config.names and (step == 0 or final):
        state.setdefault("spectrum", []).append(
            spectrum_table(op, step, exact_max_dim=config.exact_max_dim, seed=step))
    if "sharpness" in config.names:
        with warnings.catch_warnings():  # not converging is recorded below, not printed
            warnings.simplefilter("ignore", RuntimeWarning)
            top = top_eigenpairs(op.matvec, op.dim, k=1, tol=config.sharpness_tol,
                                 max_steps=config.sharpness_max_steps, seed=step,
                                 v0=state.get("top_vector"), device=data.x_train.device)
        state["top_vector"] = top.eigenvectors[:, 0]
        rec.add(step, "model", "lambda_max", top.eigenvalues[0].item())
        rec.add(step, "model", "lambda_max_residual", top.residuals[0].item())
        rec.add(step, "model", "lambda_max_converged", float(top.all_converged))
        rec.add(step, "model", "lambda_max_hvps", float(top.n_matvecs))
    if "hessian_trace" in config.names:
        tr = hutchpp(op.matvec, op.dim, config.trace_matvecs, seed=step, device=data.x_train.device)
        rec.add(step, "model", "hessian_trace", tr.estimate)
        rec.add(step, "model", "hessian_trace_se", tr.se)


def _probe_overlap(step, op: HessianOperator, k: int, state: dict, rec) -> None:
    """‖V_kᵀg‖²/‖g‖² for the full-batch gradient, its random-subspace baseline k/dim, and the
    overlap of this top-k subspace with the previous probe's (Gur-Ari et al. 2018)."""
    k = min(k, op.dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # Warm start from the previous top-k subspace: its sum has weight on every old eigenvector.
        v0 = state["top_subspace"].sum(dim=1) if "top_subspace" in state else None
        top = top_eigenpairs(op.matvec, op.dim, k=k, tol=1e-3, max_steps=max(20 * k, 100), seed=step, v0=v0)
    V = top.eigenvectors
    rec.add(step, "model", "grad_overlap", gradient_overlap(op.gradient(), V))
    rec.add(step, "model", "grad_overlap_random", k / op.dim)
    rec.add(step, "model", "grad_overlap_converged", float(top.all_converged))
    if "top_subspace" in state:
        rec.add(step, "model", "subspace_overlap_prev", subspace_overlap(state["top_subspace"], V))
    state["top_subspace"] = V


def _probe_state(step, model, params, initial, data, names, rec) -> None:
    """Record evaluation and weight-based probes of θ(step)."""
    if "eval" in names:
        for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
            loss, acc = evaluate(model, x, y)
            rec.add(step, "model", f"{split}_loss", loss)
            rec.add(step, "model", f"{split}_acc", acc)
    if "weight_norm" in names:
        rec.add_layers(step, "weight_norm", P.layer_weight_norms(params))
    if "rotation" in names:
        rec.add_layers(step, "rotation", P.layer_rotations(params, initial))
    if "dist_init" in names:
        rec.add_layers(step, "dist_init", P.layer_distances(params, initial))
