"""Tests of analysis_lib.stats.hierarchical: AUROC, paired Cohen's d_z and the two-level bootstrap.

AUROC against scikit-learn's ``roc_auc_score`` (with ties, vectorised over leading axes), d_z against
:func:`analysis_lib.stats.effects.cohens_dz`, and the hierarchical bootstrap against the ordinary bootstrap for a
single seed and against the spread between disagreeing seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis_lib.stats.effects import bootstrap_ci, cohens_dz
from analysis_lib.stats.hierarchical import auroc, hierarchical_bootstrap, paired_dz


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for n0, n1 in ((5, 7), (30, 30)):
        neg, pos = rng.integers(0, 6, n0).astype(float), rng.integers(2, 8, n1).astype(float)  # many ties
        labels, scores = np.r_[np.zeros(n0), np.ones(n1)], np.r_[neg, pos]
        assert auroc(neg, pos) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    batch = rng.normal(size=(4, 2, 9))  # vectorised over leading axes
    np.testing.assert_allclose(auroc(batch[:, 0], batch[:, 1]),
                               [roc_auc_score(np.r_[np.zeros(9), np.ones(9)], np.r_[b[0], b[1]]) for b in batch])
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0 and auroc([2.0, 3.0], [0.0, 1.0]) == 0.0


def test_two_level_bootstrap_reduces_to_the_ordinary_bootstrap_for_one_seed():
    x = np.random.default_rng(1).normal(size=(25, 1))
    est, low, high, per_group = hierarchical_bootstrap([x], lambda a: a.mean(axis=-2), n_boot=500, seed=3)
    assert (low[0], high[0]) == pytest.approx(bootstrap_ci(x[:, 0], np.mean, n_boot=500, seed=3), abs=1e-12)
    assert est[0] == pytest.approx(x.mean())
    groups = [x + 5.0, x - 5.0]  # seeds disagree: the interval must cover the spread between them
    est, low, high, per_group = hierarchical_bootstrap(groups, lambda a: a.mean(axis=-2), n_boot=500, seed=3)
    assert est[0] == pytest.approx(x.mean()) and per_group[:, 0] == pytest.approx([x.mean() + 5, x.mean() - 5])
    assert low[0] < x.mean() - 4 and high[0] > x.mean() + 4


def test_paired_dz_matches_cohens_dz():
    d = np.random.default_rng(2).normal(0.3, 1.0, size=(40, 2))
    np.testing.assert_allclose(paired_dz(d), [cohens_dz(d[:, 0]), cohens_dz(d[:, 1])])
