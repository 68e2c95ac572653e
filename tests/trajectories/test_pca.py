"""Trajectory PCA in float64 against a direct eigendecomposition, the random-walk reference against
simulated random walks, and distances between trajectories against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis_lib.config import ModelConfig
from analysis_lib.models import build_model
from analysis_lib.trajectory import (PCA_COLUMNS, asymptotic_random_walk_ratios,
                                     explained_variance_table, layer_sizes, principal_directions,
                                     projection_table, random_walk_ratios, trajectory_distances,
                                     trajectory_pca)


def _walk(steps, dim: int, seed: int) -> torch.Tensor:
    """A Gaussian random walk observed at ``steps`` (increment variance ∝ elapsed steps), (S, dim)."""
    gen = torch.Generator().manual_seed(seed)
    gaps = torch.as_tensor(np.diff(steps), dtype=torch.float64)
    increments = torch.randn(len(gaps), dim, generator=gen, dtype=torch.float64) * gaps.sqrt()[:, None]
    start = torch.randn(1, dim, generator=gen, dtype=torch.float64)
    return torch.cat([start, start + increments.cumsum(0)])


def test_pca_matches_the_eigendecomposition_of_the_covariance():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(12, 40, generator=gen, dtype=torch.float64) @ torch.randn(40, 40, generator=gen, dtype=torch.float64)
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
    w = _walk(np.arange(20), 30, seed=1).float()
    d = principal_directions(w, 3)
    assert d.shape == (3, 30) and d.dtype == torch.float64
    torch.testing.assert_close(d, trajectory_pca(w, 3).directions)
    with pytest.raises(ValueError, match="invalid argument k=20"):
        principal_directions(w, 20)  # 20 snapshots span at most 19 centred dimensions


def test_simulated_random_walks_match_the_finite_reference():
    steps = np.arange(0, 31) * 50  # 31 equally spaced snapshots, like a probe every 50 steps
    ratios = np.mean([trajectory_pca(_walk(steps, 20_000, s), 5).explained_ratio[:5] for s in range(4)], axis=0)
    np.testing.assert_allclose(ratios, random_walk_ratios(steps, 5), atol=0.01)


def test_the_reference_follows_the_observation_times():
    # Log-spaced snapshots (the "log" probe schedule): a reference that ignored the spacing fails.
    steps = np.unique(np.round(np.geomspace(1, 2000, 25))).astype(int)
    ratios = np.mean([trajectory_pca(_walk(steps, 20_000, s), 3).explained_ratio[:3] for s in range(4)], axis=0)
    np.testing.assert_allclose(ratios, random_walk_ratios(steps, 3), atol=0.01)
    assert np.abs(ratios - random_walk_ratios(np.arange(len(steps)), 3)).max() > 0.03


def test_ratios_approach_six_over_pi_squared_k_squared():
    expected = asymptotic_random_walk_ratios(5)
    np.testing.assert_allclose(expected, 6 / (np.pi**2 * np.arange(1, 6) ** 2))
    assert expected.sum() < 1 and asymptotic_random_walk_ratios(2000).sum() == pytest.approx(1.0, abs=1e-3)
    errors = [np.abs(random_walk_ratios(np.arange(n), 5) - expected).max() for n in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3
    # A long simulated walk (400 snapshots in 20,000 dimensions) lands near the limit too.
    ratios = trajectory_pca(_walk(np.arange(400), 20_000, seed=7), 3).explained_ratio[:3]
    np.testing.assert_allclose(ratios, expected[:3], atol=0.03)


def test_tables_have_their_schema():
    trajectories = {f"r{s}": {"steps": torch.arange(0, 200, 10), "weights": _walk(np.arange(20), 50, s).float()}
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


def test_distances_match_a_direct_computation():
    model = build_model(ModelConfig(kind="mlp", depth=2, width=4), 3, 2, 0)
    sizes = layer_sizes(model)
    assert sizes == {"fc1": 16, "fc2": 20, "out": 10}
    gen = torch.Generator().manual_seed(0)
    a = {"steps": torch.tensor([0, 10, 20, 30]), "weights": torch.randn(4, 46, generator=gen)}
    b = {"steps": torch.tensor([0, 20, 30]), "weights": torch.randn(3, 46, generator=gen)}
    table = trajectory_distances(a, b, sizes)
    assert sorted(table["step"].unique()) == [0, 20, 30]
    for step, ia, ib in ((0, 0, 0), (20, 2, 1), (30, 3, 2)):
        diff = a["weights"][ia].double() - b["weights"][ib].double()
        row = table[(table["step"] == step) & (table["layer"] == "model")].iloc[0]
        assert row["distance"] == pytest.approx(diff.norm().item(), rel=1e-12)
        assert row["relative_distance"] == pytest.approx((diff.norm() / a["weights"][ia].double().norm()).item(), rel=1e-12)
        fc2 = table[(table["step"] == step) & (table["layer"] == "fc2")]["distance"].item()
        assert fc2 == pytest.approx(diff[16:36].norm().item(), rel=1e-12)
    with pytest.raises(ValueError, match="add up to"):
        trajectory_distances(a, b, {"fc1": 3})


def test_pca_verdicts_follow_the_rules():
    from analysis_lib.trajectory import pca_verdicts

    steps = np.arange(0, 31) * 50
    walks = {f"w{s}": {"steps": torch.as_tensor(steps), "weights": _walk(steps, 20_000, s)} for s in range(3)}
    rows = pca_verdicts(explained_variance_table(walks, 4), top=3, margin=0.05, n_boot=200)
    assert [r["reproduced"] for r in rows] == ["yes", "yes"] and rows[0]["n"] == 3
    # A straight drift plus a little noise puts nearly everything in PC1: not a random walk.
    gen = torch.Generator().manual_seed(0)
    drift = {f"d{s}": {"steps": torch.as_tensor(steps),
                       "weights": torch.as_tensor(steps, dtype=torch.float64)[:, None] * torch.ones(1, 500, dtype=torch.float64)
                       + torch.randn(31, 500, generator=gen, dtype=torch.float64)} for s in range(3)}
    rows = pca_verdicts(explained_variance_table(drift, 4, from_steps=[0, 500]), top=3, margin=0.05, n_boot=200)
    assert [r["reproduced"] for r in rows] == ["yes", "no", "yes", "no"]
    assert "from step 500" in rows[2]["claim"]


def test_pca_parameters_are_checked():
    from analysis_lib.config import ConfigError
    from analysis_lib.trajectory import check_pca_parameters

    check_pca_parameters([0, 50], list(range(0, 101, 10)), 4, 3, 0.05)
    for args, name in [(([0, 70], 4, 3, 0.05), "pca_from"), (([0], 4, 5, 0.05), "pca_top"),
                       (([0], 11, 3, 0.05), "pca_components"), (([0], 4, 3, 0.0), "pca_margin")]:
        with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
            check_pca_parameters(args[0], list(range(0, 101, 10)), *args[1:])
