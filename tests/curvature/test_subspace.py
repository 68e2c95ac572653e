"""Gradient and subspace overlaps on constructed cases whose answers are known in closed form."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.curvature.subspace import gradient_overlap, subspace_overlap


def test_overlaps_on_constructed_cases():
    e = torch.eye(4, dtype=torch.float64)
    assert gradient_overlap(e[0] + e[1], e[:, :1]) == pytest.approx(0.5)
    assert gradient_overlap(3 * e[2], e[:, 2:4]) == pytest.approx(1.0)
    assert subspace_overlap(e[:, :2], e[:, [1, 0]]) == pytest.approx(1.0)
    assert subspace_overlap(e[:, :2], e[:, 1:3]) == pytest.approx(0.5)
