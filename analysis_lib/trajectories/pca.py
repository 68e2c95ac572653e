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
    return pd.concat(frames, ignore_index=True)[PCA_COLUMNS] if frames else pd.DataFrame(columns=PCA_COLUMNS)


def projection_table(trajectories: Mapping[str, Mapping[str, torch.Tensor]], k: int = 2, *,
                     from_step: int = 0) -> pd.DataFrame:
    """Coordinates of every snapshot (from ``from_step`` on) on its own trajectory's top k directions.

    Tidy (:data:`PROJECTION_COLUMNS`; ``component`` counts from 1).
    """
    frames = []
    for rid, traj in trajectories.items():
        weights, steps = _window(traj, from_step)
        pca = trajectory_pca(weights, k, steps=steps)
        frame = pd.DataFrame(pca.projections, columns=np.arange(1, k + 1)).assign(step=pca.steps)
        long = frame.melt(id_vars="step", var_name="component", value_name="value")
        frames.append(long.assign(run_id=rid))
    if not frames:
        return pd.DataFrame(columns=PROJECTION_COLUMNS)
    return pd.concat(frames, ignore_index=True)[PROJECTION_COLUMNS]
