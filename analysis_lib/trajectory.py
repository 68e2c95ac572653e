"""PCA of a stored weight trajectory, and the random-walk reference it is compared with.

A trajectory is S snapshots θ(t_0), …, θ(t_{S−1}) of the P parameters (the ``trajectory``
checkpoint of the ``weights`` probe). Its PCA centres the snapshots on their mean and takes the
SVD of the (S, P) matrix in float64: X − x̄ = U Σ Vᵀ; the rows of Vᵀ are the principal directions,
σ_k² / Σ_j σ_j² the explained-variance ratios, and U Σ the coordinates of the snapshots on them.
Directions are unit vectors with a fixed sign: the trajectory's net displacement θ(t_{S−1}) − θ(t_0)
has a non-negative component along each one, so "training moves towards +PC1".

**Random-walk reference** (Antognini & Sohl-Dickstein, "PCA of high dimensional random walks with
comparison to neural network training", NeurIPS 2018). For a walk with i.i.d. Gaussian increments
in P → ∞ dimensions, the Gram matrix of the snapshots converges to σ²K with K_ij = min(t_i, t_j)
(the walk observed at the same steps as the trajectory, starting at t_0). The explained-variance
ratios of the centred snapshots then converge to the eigenvalues of C K C (C = I − 11ᵀ/S)
divided by their sum: this is the finite-trajectory reference :func:`random_walk_ratios` returns.
For many equally spaced snapshots it tends to 6/(π² k²) (:func:`asymptotic_random_walk_ratios`),
the Karhunen–Loève spectrum of a mean-centred Brownian motion (eigenvalues 1/(π² k²), sum 1/6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .models import layer_of

PCA_COLUMNS = ["run_id", "from_step", "component", "ratio", "random_walk", "asymptotic"]
PROJECTION_COLUMNS = ["run_id", "step", "component", "value"]


@dataclass
class TrajectoryPCA:
    """Principal components of one trajectory.

    Attributes:
        steps: (S,) steps of the snapshots.
        center: (P,) the mean snapshot.
        directions: (k, P) orthonormal principal directions, float64.
        explained_ratio: (min(S, P),) σ_k² / Σ σ_j², largest first.
        projections: (S, k) coordinates of the centred snapshots on the directions.
    """

    steps: np.ndarray
    center: torch.Tensor
    directions: torch.Tensor
    explained_ratio: np.ndarray
    projections: np.ndarray


def _check(weights: torch.Tensor, k: int) -> torch.Tensor:
    if weights.dim() != 2 or weights.shape[0] < 2:
        raise ValueError(f"invalid argument weights of shape {tuple(weights.shape)}: need (S, P), S >= 2")
    rank = min(weights.shape[0] - 1, weights.shape[1])  # centring removes one dimension
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= rank:
        raise ValueError(f"invalid argument k={k!r}: must be an integer in [1, {rank}] for "
                         f"{weights.shape[0]} snapshots of {weights.shape[1]} parameters")
    return weights.detach().double()


def trajectory_pca(weights: torch.Tensor, k: int, *, steps: Sequence[int] | None = None) -> TrajectoryPCA:
    """PCA of a trajectory: mean-centred snapshots, SVD in float64.

    Args:
        weights: (S, P) snapshots in time order.
        k: number of directions and projections to keep, 1 <= k <= min(S − 1, P).
        steps: (S,) their steps (default 0..S−1).

    Returns:
        TrajectoryPCA (explained ratios of every component, directions and projections of k).
    """
    w = _check(weights, k)
    center = w.mean(dim=0)  # (P,)
    u, s, vh = torch.linalg.svd(w - center, full_matrices=False)  # (S, r), (r,), (r, P)
    sign = torch.sign((w[-1] - w[0]) @ vh[:k].T)  # (k,)
    sign[sign == 0] = 1.0
    directions = vh[:k] * sign[:, None]
    ratio = (s**2 / (s**2).sum()).numpy()
    projections = (u[:, :k] * s[:k] * sign).numpy()  # (S, k)
    steps = np.arange(len(w)) if steps is None else np.asarray(steps)
    return TrajectoryPCA(steps, center, directions, ratio, projections)


def principal_directions(trajectory_weights: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k principal directions of a trajectory as a (k, P) tensor of unit rows.

    Float64, signs as in :func:`trajectory_pca`, on the trajectory's device; use them as
    landscape directions around any point of the trajectory.
    """
    return trajectory_pca(trajectory_weights, k).directions.to(trajectory_weights.device)


def random_walk_ratios(steps: Sequence[float], k: int | None = None) -> np.ndarray:
    """Explained-variance ratios of a P → ∞ random walk observed at ``steps`` (see module docstring).

    Args:
        steps: (S,) increasing observation times, e.g. the trajectory's probe steps.
        k: how many to return (default all S − 1 non-zero ones).

    Returns:
        (k,) eigenvalues of C K C over their sum, K_ij = min(t_i, t_j) − t_0, largest first.
    """
    t = np.asarray(steps, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2 or np.any(np.diff(t) <= 0):
        raise ValueError(f"invalid argument steps={t.tolist()}: need at least 2 increasing values")
    t = t - t[0]
    kernel = np.minimum.outer(t, t)  # (S, S)
    centring = np.eye(len(t)) - 1.0 / len(t)
    eig = np.linalg.eigvalsh(centring @ kernel @ centring)[::-1][: len(t) - 1]
    return (eig / eig.sum())[: k or len(eig)]


def asymptotic_random_walk_ratios(k: int) -> np.ndarray:
    """(k,) values 6 / (π² j²), j = 1..k: the limit of :func:`random_walk_ratios`."""
    j = np.arange(1, k + 1, dtype=np.float64)
    return 6.0 / (np.pi**2 * j**2)


def _window(traj: Mapping[str, torch.Tensor], from_step: int) -> tuple[torch.Tensor, np.ndarray]:
    """The snapshots at steps >= ``from_step``: ((S', P) weights, (S',) steps)."""
    steps = np.asarray(traj["steps"])
    keep = steps >= from_step
    return traj["weights"][torch.from_numpy(keep)], steps[keep]


def explained_variance_table(trajectories: Mapping[str, Mapping[str, torch.Tensor]], k: int, *,
                             from_steps: Sequence[int] = (0,)) -> pd.DataFrame:
    """Explained-variance ratios of the top k components of every trajectory, with references.

    Args:
        trajectories: run id -> ``{"steps": (S,), "weights": (S, P)}`` (the ``trajectory`` checkpoint).
        k: components per run.
        from_steps: analyse the snapshots from each of these steps on (0: the whole trajectory).

    Returns:
        Tidy table :data:`PCA_COLUMNS`: ``ratio`` measured, ``random_walk`` the finite reference
        at the snapshots' steps, ``asymptotic`` 6/(π² k²); ``component`` counts from 1.
    """
    frames = []
    for rid, traj in trajectories.items():
        for start in from_steps:
            weights, steps = _window(traj, start)
            pca = trajectory_pca(weights, k, steps=steps)
            frames.append(pd.DataFrame({"run_id": rid, "from_step": start, "component": np.arange(1, k + 1),
                                        "ratio": pca.explained_ratio[:k],
                                        "random_walk": random_walk_ratios(steps, k),
                                        "asymptotic": asymptotic_random_walk_ratios(k)}))
    return pd.concat(frames, ignore_index=True)[PCA_COLUMNS]


def projection_table(trajectories: Mapping[str, Mapping[str, torch.Tensor]], k: int = 2, *,
                     from_step: int = 0) -> pd.DataFrame:
    """Coordinates of every snapshot (from ``from_step`` on) on its own trajectory's top k
    directions, tidy (:data:`PROJECTION_COLUMNS`; ``component`` counts from 1)."""
    frames = []
    for rid, traj in trajectories.items():
        weights, steps = _window(traj, from_step)
        pca = trajectory_pca(weights, k, steps=steps)
        frame = pd.DataFrame(pca.projections, columns=np.arange(1, k + 1)).assign(step=pca.steps)
        long = frame.melt(id_vars="step", var_name="component", value_name="value")
        frames.append(long.assign(run_id=rid))
    return pd.concat(frames, ignore_index=True)[PROJECTION_COLUMNS]


def layer_sizes(model: torch.nn.Module) -> dict[str, int]:
    """Layer name -> its number of parameters, in ``named_parameters`` order (fc1's weight and bias
    together), for slicing flat trajectories layer by layer."""
    sizes: dict[str, int] = {}
    for name, p in model.named_parameters():
        sizes[layer_of(name)] = sizes.get(layer_of(name), 0) + p.numel()
    return sizes


def trajectory_distances(traj_a: Mapping[str, torch.Tensor], traj_b: Mapping[str, torch.Tensor],
                         layers: Mapping[str, int] | None = None) -> pd.DataFrame:
    """‖θ_A(t) − θ_B(t)‖₂ and its ratio to ‖θ_A(t)‖₂ at the steps both trajectories share.

    Args:
        traj_a, traj_b: ``{"steps": (S,), "weights": (S, P)}`` of the same architecture.
        layers: from :func:`layer_sizes`; adds one row per layer and step.

    Returns:
        DataFrame ``step, layer, distance, relative_distance`` (float64); ``layer = "model"``
        for the whole parameter vector.
    """
    steps_a, steps_b = traj_a["steps"].tolist(), traj_b["steps"].tolist()
    common = sorted(set(steps_a) & set(steps_b))
    ia = torch.as_tensor([steps_a.index(s) for s in common], dtype=torch.long)
    ib = torch.as_tensor([steps_b.index(s) for s in common], dtype=torch.long)
    wa, wb = traj_a["weights"][ia].double(), traj_b["weights"][ib].double()  # (S', P)
    n_params = wa.shape[1]
    if layers is not None and sum(layers.values()) != n_params:
        raise ValueError(f"invalid argument layers: sizes add up to {sum(layers.values())}, "
                         f"the trajectory has {n_params} parameters")
    groups = {"model": n_params, **(layers or {})}
    frames, start = [], 0
    for layer, size in groups.items():
        lo, hi = (0, n_params) if layer == "model" else (start, start + size)
        start = hi if layer != "model" else start
        dist = torch.linalg.vector_norm(wa[:, lo:hi] - wb[:, lo:hi], dim=1)
        norm = torch.linalg.vector_norm(wa[:, lo:hi], dim=1)
        frames.append(pd.DataFrame({"step": common, "layer": layer, "distance": dist.numpy(),
                                    "relative_distance": (dist / norm).numpy()}))
    return pd.concat(frames, ignore_index=True)


def pca_verdicts(table: pd.DataFrame, *, top: int, margin: float, n_boot: int = 2000,
                 source: str = "Antognini & Sohl-Dickstein 2018 (claim 12)") -> list[dict]:
    """Verdict rows for claim 12, two per window (``from_step``) of an explained-variance table.

    Rules fixed in advance: *most variance in the first few* holds when the 95% CI (bootstrap over
    runs) of the summed ratios of components 1..``top`` lies above 0.5, fails when below;
    *the ratios follow the random walk* holds when, for every component 1..``top``, the CI of
    ratio − reference (the finite-trajectory reference) lies within ±``margin``, and fails when
    one lies outside.
    """
    from .effects import mean_ci
    from .verdicts import verdict_from_interval, verdict_within

    sub = table[table["component"] <= top]
    cumulative = sub.groupby(["from_step", "run_id"], as_index=False)["ratio"].sum().rename(columns={"ratio": "value"})
    most = mean_ci(cumulative, ["from_step"], n_boot=n_boot).set_index("from_step")
    gap = mean_ci(sub.assign(value=sub["ratio"] - sub["random_walk"]), ["from_step", "component"], n_boot=n_boot)
    reference = sub.groupby(["from_step", "component"])["random_walk"].mean()
    rows = []
    for start, m in most.iterrows():
        window = "whole trajectory" if start == 0 else f"from step {start}"
        rows.append({"claim": f"Most variance lies in the first {top} principal components ({window})",
                     "source": source, "measured": f"sum of top-{top} ratios = {m['mean']:.3g} "
                     f"[{m['ci_low']:.3g}, {m['ci_high']:.3g}]", "n": int(m["n"]),
                     "reproduced": verdict_from_interval(m["ci_low"] - 0.5, m["ci_high"] - 0.5)})
        g = gap[gap["from_step"] == start]
        outcomes = [verdict_within(r.ci_low, r.ci_high, -margin, margin) for r in g.itertuples()]
        text = "; ".join(f"PC{r.component}: {r.mean + reference[(start, r.component)]:.3g} vs "
                         f"{reference[(start, r.component)]:.3g} (Δ [{r.ci_low:.2g}, {r.ci_high:.2g}])"
                         for r in g.itertuples())
        outcome = "no" if "no" in outcomes else "yes" if set(outcomes) == {"yes"} else "inconclusive"
        rows.append({"claim": f"Explained-variance ratios follow the random walk, 6/(π²k²) in the limit "
                              f"(±{margin:g}, {window})", "source": source, "measured": text,
                     "n": int(m["n"]), "reproduced": outcome})
    return rows


def check_pca_parameters(from_steps: Sequence[int], snapshot_steps: Sequence[int], k: int, top: int,
                         margin: float) -> None:
    """Raise ConfigError unless every window (snapshots from a step on) has more than ``k``
    snapshots, 1 <= ``top`` <= ``k`` and 0 < ``margin`` < 1."""
    from .config import ConfigError, check_fraction

    for name, value, high in (("pca_components", k, len(snapshot_steps) - 1), ("pca_top", top, k)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ConfigError(f"invalid parameter {name}={value!r}: must be an integer in [1, {high}]")
    check_fraction("pca_margin", margin)
    if isinstance(from_steps, (str, bytes)) or not isinstance(from_steps, Sequence) or not from_steps:
        raise ConfigError(f"invalid parameter pca_from={from_steps!r}: must be a non-empty list of steps")
    for start in from_steps:
        left = sum(1 for s in snapshot_steps if s >= start) if isinstance(start, int) else 0
        if left <= k:
            raise ConfigError(f"invalid parameter pca_from={list(from_steps)!r}: the window from step "
                              f"{start!r} holds {left} snapshots; {k} components need at least {k + 1}")
