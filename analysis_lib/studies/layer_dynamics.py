"""Study 01, per-layer training dynamics: SGD vs Adam layer by layer, and layer rotation vs accuracy.

Claim 3 of ``docs/claims.md`` (Carbonnelle & De Vleeschouwer 2019), and the premise of LARS (You
et al. 2017) that SGD's update-to-weight ratios differ across layers more than Adam's.

Protocol fixed in advance: optimisers are compared per layer paired by seed (same initial
weights and data order), paired t-tests Holm-adjusted over every layer × metric × architecture;
the rotation claim reads the Spearman correlation (bootstrap CI) between final mean layer
rotation and test accuracy across the sweep, pooled and within each optimiser; LARS's premise
reads the paired difference of the spread of log10 update ratios across layers. A claim
reproduces when the whole 95% CI lies on the predicted side of zero and p < 0.05, is
contradicted when the CI lies on the other side, and is inconclusive otherwise.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from ..stats.verdicts import verdict_row
from ..validation import check_fraction, check_int, check_subset

TITLE = "Per-layer training dynamics: SGD vs Adam, and layer rotation vs generalisation"
QUESTION = ("Where, layer by layer, do SGD and Adam differ, and does larger layer rotation go with better test "
            "accuracy?")
ROTATION = "Carbonnelle & De Vleeschouwer 2019 (claim 3)"
LARS = "You et al. 2017 (LARS), premise"
LAYER_METRICS = ("log10 grad_norm", "log10 update_ratio", "rotation")


def check_parameters(arms: Mapping, *, main_arms: Sequence[str], sweep_arms: Sequence[str], alpha: float,
                     n_boot: int) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training."""
    check_subset("main_arms", main_arms, arms)
    check_subset("sweep_arms", sweep_arms, arms)
    check_fraction("alpha", alpha)
    check_int("n_boot", n_boot, 1)


def verdict_rows(rho: pd.DataFrame, rho_within: pd.DataFrame, spread_tests: pd.DataFrame) -> list[dict]:
    """Every verdict row: the pooled and within-optimiser rotation correlations, then LARS's premise.

    Args:
        rho: Spearman rotation vs test accuracy over the sweep (one row).
        rho_within: the same within each optimiser.
        spread_tests: Adam − SGD spread of log10 update ratios across layers, per architecture.
    """
    return ([verdict_row("Larger final layer rotation goes with higher test accuracy across training settings",
                         ROTATION, rho.iloc[0], "Spearman rho", "positive")]
            + [verdict_row(f"... and {row.metric} (learning rate and weight decay varied)", ROTATION, row,
                           "Spearman rho", "positive") for _, row in rho_within.iterrows()]
            + [verdict_row(f"Adam's update ratios are more even across layers than SGD's ({row.contrast})",
                           LARS, row, "Δ spread", "negative") for _, row in spread_tests.iterrows()])
