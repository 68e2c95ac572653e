"""Trajectory PCA in float64 against a direct eigendecomposition and simulated random walks.

The random-walk reference follows the observation times (equal and log-spaced) and tends to 6/(π²k²); the
explained-variance and projection tables have their schema.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis_lib.trajectories.pca import (
    PCA_COLUMNS,
    asymptotic_random_walk_ratios,
    explained_variance_table,
    principal_directions,
    projection_table,
    random_walk_ratios,
    trajectory_pca,
)
from tests.cases import random_walk


def test_pca_matches_the_eigendecomposition_of_the_covariance():
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(12, 40, generator=gen, dtype=torch.float64)
         @ torch.randn(40, 40, generator=gen, dtype=torch.float64))
    pca = trajectory_pca(w, 4, steps=range(0, 120, 10))
    centred = (w - w.mean(0)).numpy()
    eig, vec = np.linalg.eigh(centred.T @ centred)  # (P,), (P, P), ascending
    eig, vec = eig[::-1], vec[:, ::-1]
    np.testing.assert_allclose(pca.explained_ratio, (eig / eig.sum())[: len(pca.explained_ratio)],
                               rtol=1e-10, atol=1e-14)
    for j in range(4):  # same direction up to sign
        assert abs(float(pca.directions[j] @ torch.from_numpy(vec[:, j].copy()))) == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(pca.projections, centred @ pca.directions.numpy().T, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pca.directions @ pca.directions.T, torch.eye(4, dtype=torch.float64))
    assert ((w[-1] - w[0]) @ pca.directions.T >= 0).all()  # sign convention
    np.testing.assert_array_equal(pca.steps, np.arange(0, 120, 10))


def test_principal_directions_are_the_pca_directions():
    w = random_walk(np.arange(20), 30, seed=1).float()
    d = principal_directions(w, 3)
    assert d.shape == (3, 30) and d.dtype == torch.float64
    torch.testing.assert_close(d, trajectory_pca(w, 3).directions)
    with pytest.raises(ValueError, match="invalid argument k=20"):
        principal_directions(w, 20)  # 20 snapshots span at most 19 centred dimensions


def test_simulated_random_walks_match_the_finite_reference():
    steps = np.arange(0, 31) * 50  # 31 equally spaced snapshots, like a probe every 50 steps
    ratios = np.mean([trajectory_pca(random_walk(steps, 20_000, s), 5).explained_ratio[:5] for s in range(4)], axis=0)
    np.testing.assert_allclose(ratios, random_walk_ratios(steps, 5), atol=0.01)


def test_the_reference_follows_the_observation_times():
    # Log-spaced snapshots (the "log" probe schedule): a reference that ignored the spacing fails.
    steps = np.unique(np.round(np.geomspace(1, 2000, 25))).astype(int)
    ratios = np.mean([trajectory_pca(random_walk(steps, 20_000, s), 3).explained_ratio[:3] for s in range(4)], axis=0)
    np.testing.assert_allclose(ratios, random_walk_ratios(steps, 3), atol=0.01)
    assert np.abs(ratios - random_walk_ratios(np.arange(len(steps)), 3)).max() > 0.03


def test_ratios_approach_six_over_pi_squared_k_squared():
    expected = asymptotic_random_walk_ratios(5)
    np.testing.assert_allclose(expected, 6 / (np.pi**2 * np.arange(1, 6) ** 2))
    assert expected.sum() < 1 and asymptotic_random_walk_ratios(2000).sum() == pytest.approx(1.0, abs=1e-3)
    errors = [np.abs(random_walk_ratios(np.arange(n), 5) - expected).max() for n in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3
    # A long simulated walk (400 snapshots in 20,000 dimensions) lands near the limit too.
    ratios = trajectory_pca(random_walk(np.arange(400), 20_000, seed=7), 3).explained_ratio[:3]
    np.testing.assert_allclose(ratios, expected[:3], atol=0.03)


def test_tables_have_their_schema():
    trajectories = {f"r{s}": {"steps": torch.arange(0, 200, 10), "weights": random_walk(np.arange(20), 50, s).float()}
                    for s in range(2)}
    table = explained_variance_table(trajectories, 3)
    assert list(table.columns) == PCA_COLUMNS and len(table) == 6
    late = explained_variance_table(trajectories, 3, from_steps=[0, 100])
    assert len(late) == 12 and set(late["from_step"]) == {0, 100}
    late = late[late["from_step"] == 100].iloc[:3]
    np.testing.assert_allclose(late["ratio"], trajectory_pca(trajectories["r0"]["weights"][10:], 3).explained_ratio[:3])
    np.testing.assert_allclose(late["random_walk"], random_walk_ratios(np.arange(100, 200, 10), 3))
    np.testing.assert_allclose(table["random_walk"].iloc[:3], random_walk_ratios(np.arange(0, 200, 10), 3))
    proj = projection_table(trajectories, 2)
    assert len(proj) == 2 * 20 * 2 and set(proj["component"]) == {1, 2}
