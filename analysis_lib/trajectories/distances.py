"""Distances between weight trajectories: how far two runs are apart, layer by layer, over training.

A trajectory is the ``trajectory`` checkpoint of the ``weights`` probe: ``{"steps": (S,),
"weights": (S, P)}`` in ``named_parameters`` order.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import torch


def trajectory_distances(traj_a: Mapping[str, torch.Tensor], traj_b: Mapping[str, torch.Tensor],
                         layers: Mapping[str, int] | None = None) -> pd.DataFrame:
    """‖θ_A(t) − θ_B(t)‖₂ and its ratio to ‖θ_A(t)‖₂ at the steps both trajectories share.

    Args:
        traj_a, traj_b: ``{"steps": (S,), "weights": (S, P)}`` of the same architecture.
        layers: from :func:`analysis_lib.layers.layer_sizes`; adds one row per layer and step.

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


def pair_distances(pairs: pd.DataFrame, trajectories: Mapping[str, Mapping[str, torch.Tensor]],
                   layers: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Distance between the two runs of every pair over training, as a tidy table.

    Args:
        pairs: one row per pair with ``run_id`` (A) and ``run_id_b`` (B); its other columns
            (e.g. a pair label) are carried over.
        trajectories: run id -> ``trajectory`` checkpoint (``steps``, ``weights``).
        layers: from :func:`analysis_lib.layers.layer_sizes`, for per-layer rows.

    Returns:
        Pair columns plus ``step, layer, metric, value`` with metrics ``distance``
        (‖θ_A(t) − θ_B(t)‖) and ``relative_distance`` (divided by ‖θ_A(t)‖).
    """
    frames = []
    for pair in pairs.itertuples(index=False):
        dist = trajectory_distances(trajectories[pair.run_id], trajectories[pair.run_id_b], layers)
        long = dist.melt(id_vars=["step", "layer"], var_name="metric", value_name="value")
        frames.append(long.assign(**pair._asdict()))
    columns = [*pairs.columns, "step", "layer", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
