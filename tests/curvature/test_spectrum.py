"""Spectrum readings: outlier counts on known spectra, spectrum_table against the dense reference.

The outlier count follows the largest log gap; spectrum_table's exact spectrum matches eigvalsh of the independent
dense reference, and its SLQ moments agree with the exact ones within a few standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis_lib.curvature.hessian import HessianOperator
from analysis_lib.curvature.spectrum import count_outliers, spectrum_table
from tests.cases import MODEL_CASES, classification_problem, cross_entropy
from tests.reference import dense_hessian

# (spectrum, max_outliers, expected count): gaps in log scale decide.
OUTLIER_CASES = [
    ([100.0, 50.0, 20.0, 0.5, 0.4, 0.3, -0.2], 6, 3),
    ([9.0, 8.0, 0.1, 0.09, 0.08], 4, 2),
    ([5.0, 0.01, 0.009], 2, 1),
    ([1.0, 0.9, 0.8, 0.7], 3, 3),  # no clear gap: the rule still returns its argmax; report the spectrum
]


@pytest.fixture(params=MODEL_CASES, ids=[m[0] for m in MODEL_CASES])
def problem(request):
    _, config, n_features = request.param
    return classification_problem(config, n_features)


@pytest.mark.parametrize("eigs, max_outliers, expected", OUTLIER_CASES)
def test_count_outliers_by_the_largest_log_gap(eigs, max_outliers, expected):
    assert count_outliers(np.array(eigs), max_outliers) == expected


def test_spectrum_table_exact_and_slq_agree_on_moments(problem):
    model, x, y = problem
    op = HessianOperator(model, F.cross_entropy, (x, y))
    exact = spectrum_table(op, step=3)
    assert set(exact["method"]) == {"exact"} and len(exact) == op.dim
    torch.testing.assert_close(torch.tensor(np.sort(exact["eigenvalue"].to_numpy())),
                               torch.linalg.eigvalsh(dense_hessian(model, cross_entropy, x, y)), rtol=1e-8, atol=1e-10)
    slq = spectrum_table(op, step=3, exact_max_dim=1, slq_probes=30, slq_steps=20)
    assert set(slq["method"]) == {"slq"}
    # Σ w λ² per probe estimates tr(H²)/dim; averaged over 30 probes it is within a few SE.
    m2 = slq.assign(m=slq["weight"] * slq["eigenvalue"] ** 2).groupby("probe")["m"].sum()
    exact_m2 = (exact["eigenvalue"] ** 2).mean()
    assert abs(m2.mean() - exact_m2) < 4 * m2.std() / np.sqrt(len(m2))
