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

from ..stats.models import spearman_ci
from ..stats.reductions import run_table
from ..stats.verdicts import verdict_row
from ..validation import check_fraction, check_int, check_subset
from .sensitivity import decide

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


# The free choices of the rotation claim a fair reader could make differently: which layers' final
# rotation summarises a run (the protocol averages over layers), and how generalisation is read.
ROTATION_SUMMARIES = ("mean over layers", "first layer", "last layer")
GENERALISATION = ("test accuracy", "minus test loss")


def rotation_table(final: pd.DataFrame, sweep_arms: Sequence[str], *, rotation: str = ROTATION_SUMMARIES[0],
                   generalisation: str = GENERALISATION[0]) -> pd.DataFrame:
    """One row per sweep run: its final ``rotation`` summary and its generalisation (column ``test_acc``)."""
    sub = final[final["arm"].isin(sweep_arms)]
    layers = [layer for layer in dict.fromkeys(sub.loc[sub["metric"] == "rotation", "layer"]) if layer != "model"]
    layer = {"mean over layers": "mean", "first layer": layers[0] if layers else "mean",
             "last layer": layers[-1] if layers else "mean"}[rotation]
    score = ("test_acc", "model") if generalisation == GENERALISATION[0] else ("test_loss", "model")
    table = run_table(sub, {"rotation": ("rotation", layer), "test_acc": score})
    return table if generalisation == GENERALISATION[0] else table.assign(test_acc=-table["test_acc"])


def rotation_correlations(sweep: pd.DataFrame, *, n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman rotation vs generalisation over the sweep, pooled and within each optimiser."""
    rho = spearman_ci(sweep, "rotation", "test_acc", n_boot=n_boot, metric="final rotation vs test accuracy")
    within = [spearman_ci(runs, "rotation", "test_acc", n_boot=n_boot, metric=f"within {opt}")
              for opt, runs in sweep.groupby("optimizer")]
    return rho, pd.concat(within, ignore_index=True) if within else rho.iloc[0:0]


def robust_verdict_rows(final: pd.DataFrame, sweep_arms: Sequence[str], spread_tests: pd.DataFrame, *,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` with each no / partly's robustness under the rotation choices, and the table."""
    def evaluate(setting: dict) -> list[dict]:
        sweep = rotation_table(final, sweep_arms, rotation=setting["rotation"],
                               generalisation=setting["generalisation"])
        return verdict_rows(*rotation_correlations(sweep, n_boot=n_boot), spread_tests)

    protocol = {"rotation": ROTATION_SUMMARIES[0], "generalisation": GENERALISATION[0]}
    return decide(evaluate, {"rotation": ROTATION_SUMMARIES, "generalisation": GENERALISATION}, protocol)
