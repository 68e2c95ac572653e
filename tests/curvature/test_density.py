"""Stochastic Lanczos quadrature on constructed symmetric matrices.

Its moments are exact up to degree 2m − 1, its smoothed density integrates to one, and a full Krylov basis
recovers the spectrum and its criteria.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from analysis_lib.curvature.density import density_curve, negative_mass, slq_nodes, slq_probes, spectrum_criteria
from tests.cases import outlier_matrix


def test_slq_moments_are_exact_and_density_integrates_to_one():
    A = outlier_matrix(dim=40)
    probes = slq_probes(40, 3, seed=1)
    nodes = slq_nodes(lambda v: A @ v, 40, steps=8, probes=probes)
    for probe, sub in nodes.groupby("probe"):
        v = probes[probe] / probes[probe].norm()
        assert sub["weight"].sum() == pytest.approx(1.0, abs=1e-12)
        for p in range(1, 2 * 8):  # Gauss quadrature with m nodes is exact up to degree 2m − 1
            exact = (v @ torch.linalg.matrix_power(A, p) @ v).item()
            assert (sub["weight"] * sub["node"] ** p).sum() == pytest.approx(exact, rel=1e-6), p
    grid = np.linspace(-20, 70, 4000)
    dens = density_curve(nodes, grid, sigma=0.5)
    for _, sub in dens.groupby("probe"):
        assert np.trapezoid(sub["density"], grid) == pytest.approx(1.0, abs=1e-3)


def test_slq_with_a_full_basis_recovers_the_spectrum_and_criteria():
    eig = torch.tensor([-2.0, -1.0, 0.5, 1.0, 4.0], dtype=torch.float64)
    A = torch.diag(eig)
    nodes = slq_nodes(lambda v: A @ v, 5, steps=5, n_probes=1)
    torch.testing.assert_close(torch.tensor(sorted(nodes["node"]), dtype=torch.float64), eig, rtol=0, atol=1e-10)
    crit = spectrum_criteria(nodes).iloc[0]
    w = 1 / 5  # a Rademacher probe weighs every eigenvector equally: (±1/√5)²
    assert crit["re"] == pytest.approx(0.5)
    assert crit["negative_mass"] == pytest.approx(0.4)
    kh = (math.sqrt(2 * w) + math.sqrt(1 * w)) / (math.sqrt(0.5 * w) + math.sqrt(w) + math.sqrt(4 * w))
    assert crit["Kh_0.5"] == pytest.approx(kh)


def _bulk_around_zero(n: int = 400, seed: int = 0):
    """A symmetric matrix with three outliers and a bulk straddling 0, and its eigendecomposition."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    lam = torch.cat([torch.tensor([30.0, 12.0, 6.0], dtype=torch.float64),
                     0.05 * torch.randn(n - 3, generator=gen, dtype=torch.float64) + 0.02])
    return Q @ torch.diag(lam) @ Q.T, lam, Q


@pytest.mark.parametrize("steps", [10, 30, 80])
def test_negative_mass_bounds_contain_each_probes_true_mass(steps):
    A, lam, Q = _bulk_around_zero()
    probes = slq_probes(len(lam), 3, seed=1)
    nodes = slq_nodes(lambda v: A @ v, len(lam), steps=steps, probes=probes)
    crit = spectrum_criteria(nodes)
    for i, v in enumerate(probes):
        u = Q.T @ (v / v.norm())
        true = float((u[lam < 0] ** 2).sum())  # vᵀ 1(A < 0) v for a unit probe
        row = crit.iloc[i]
        assert row["negative_mass_low"] - 1e-12 <= true <= row["negative_mass_high"] + 1e-12, (steps, row, true)


def test_negative_mass_warns_when_the_quadrature_cannot_resolve_it():
    A, lam, _ = _bulk_around_zero()
    with pytest.warns(RuntimeWarning, match="cannot resolve"):
        coarse = negative_mass(slq_nodes(lambda v: A @ v, len(lam), steps=10, n_probes=3))
    assert not coarse["resolved"] and coarse["upper"] - coarse["lower"] > 0.05 and coarse["se"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fine = negative_mass(slq_nodes(lambda v: A @ v, len(lam), steps=len(lam), n_probes=3))
    true = float((lam < 0).double().mean())
    assert fine["resolved"] and fine["lower"] <= fine["estimate"] <= fine["upper"]
    assert fine["estimate"] == pytest.approx(true, abs=4 * fine["se"] + 0.02)
