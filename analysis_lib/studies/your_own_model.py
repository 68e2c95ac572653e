"""Study 00, your own model: a regression network and a token-level language model through the whole kit.

The worked example of bringing your own model, data and loss (``notebooks/your_model.py``,
registered by the notebook), and one question answered across learning rates and seeds: does
progressive sharpening to the edge of stability, known from classifiers under cross-entropy, also
happen for a regression network under the squared error (claim 7 of ``docs/claims.md``: Agarwala,
Pedregosa & Pennington 2023 show it for second-order regression models; Cohen et al. 2021 saw it
for MSE-trained networks too)?

Protocol, fixed before looking at results and shared with study 04
(:mod:`analysis_lib.studies.edge_of_stability`): full-batch gradient descent at each learning
rate η; a run *reaches* the edge at the first probe with λ_max ≥ ``threshold``·2/η; the *hover
ratio* η·λ_max/2 is averaged over the probes in the ``window`` steps from there on. Sharpening is
read per learning rate as the CI over seeds of log₂(max λ_max / λ_max at step 0): above 0 means
λ_max grew.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..stats.effects import mean_ci
from ..stats.verdicts import NOT_TESTED, share_verdict, verdict_from_interval
from ..validation import check_fraction, check_int, check_seeds, fail
from .edge_of_stability import ALTERNATIVES, hover_verdict, stability_table
from .sensitivity import decide, with_alternatives

TITLE = "Your own model: progressive sharpening under the squared error"
QUESTION = ("Does a regression network trained by full-batch gradient descent on the squared error sharpen "
            "until λ_max reaches 2/η and then hover there, as classifiers do?")
SOURCE = "Agarwala et al. 2023; Cohen et al. 2021 (claim 7)"


def check_parameters(*, seeds: Sequence[int], learning_rates: Sequence[float], threshold: float, margin: float,
                     window: int, top_k: int, n_boot: int) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training."""
    check_seeds("seeds", seeds)
    if (isinstance(learning_rates, (str, bytes)) or not isinstance(learning_rates, Sequence) or not learning_rates
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in learning_rates)):
        fail("learning_rates", learning_rates, "must be a non-empty list of positive numbers")
    check_fraction("threshold", threshold)
    check_fraction("margin", margin)
    check_int("window", window, 1)
    check_int("top_k", top_k, 1)
    check_int("n_boot", n_boot, 1)


def regression_conditions(learning_rates: Sequence[float]) -> dict:
    """The grid's condition: full-batch GD at each learning rate."""
    return {"train.lr": [float(v) for v in learning_rates]}


def sharpening_table(metrics: pd.DataFrame, learning_rates: Mapping[str, float] | pd.Series, *,
                     threshold: float, window: int) -> pd.DataFrame:
    """Per-run summaries of study 04 plus ``log2_rise`` = log₂(max λ_max / λ_max at step 0)."""
    summary = stability_table(metrics, learning_rates, threshold=threshold, window=window, early=window)
    wide = summary.pivot_table(index="run_id", columns="metric", values="value")
    lr = pd.Series({rid: float(learning_rates[rid]) for rid in wide.index})
    rise = np.log2(wide["lambda_max_peak"] * 2 / lr / wide["lambda_max_0"])
    labels = summary.drop(columns=["metric", "value"]).drop_duplicates("run_id").set_index("run_id")
    rows = labels.loc[rise.index].assign(metric="log2_rise", value=rise.to_numpy()).reset_index()
    return pd.concat([summary, rows[summary.columns]], ignore_index=True)


def edge_summary(summary: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """Mean and bootstrap CI over seeds per learning rate of the summaries the verdict reads."""
    keep = ["log2_rise", "reached", "first_step", "hover_ratio", "loss_falls"]
    return mean_ci(summary[summary["metric"].isin(keep)], ["lr", "metric"], n_boot=n_boot)


def verdict_rows(summary: pd.DataFrame, edge: pd.DataFrame, *, threshold: float, margin: float) -> list[dict]:
    """The verdict rows, by the rules of the module docstring.

    Sharpening per learning rate from the sign of the CI of ``log2_rise``; reaching the edge
    when every run reaches ``threshold``·2/η (some: partly); hovering per learning rate when
    the CI of the hover ratio lies inside [1 − margin, 1 + margin] (outside: no).
    """
    rise = edge[edge["metric"] == "log2_rise"].set_index("lr")
    reached = summary[summary["metric"] == "reached"]["value"]
    rows = []
    for lr in sorted(summary["lr"].unique()):
        if lr not in rise.index:
            rows.append({"claim": f"λ_max grows during training (η = {lr:g})", "source": SOURCE,
                         "measured": "no run recorded λ_max", "n": 0, "reproduced": NOT_TESTED})
            continue
        r = rise.loc[lr]
        ci = f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
        rows.append({"claim": f"λ_max grows during training (η = {lr:g})", "source": SOURCE,
                     "measured": f"log₂(max λ_max / λ_max(0)) = {r['mean']:.3g} {ci}",
                     "n": int(r["n"]), "reproduced": verdict_from_interval(r["ci_low"], r["ci_high"], "positive")})
    rows.append({"claim": "Under full-batch GD on the squared error, λ_max rises until it reaches 2/η",
                 "source": SOURCE, "measured": f"{int(reached.sum())} of {len(reached)} runs reached {threshold}·2/η",
                 "n": len(reached), "reproduced": share_verdict(reached)})
    hover = edge[edge["metric"] == "hover_ratio"].set_index("lr")
    for lr in sorted(summary["lr"].unique()):
        rows.append({**hover_verdict(hover, lr, margin), "source": SOURCE})
    return rows


def robust_verdict_rows(metrics: pd.DataFrame, learning_rates, *, threshold: float, margin: float, window: int,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` with each no / partly's robustness under study 04's alternative bars, and the table.

    The edge threshold, the hover window and the margin (:data:`.edge_of_stability.ALTERNATIVES`)
    are re-decided one at a time from the same metrics.
    """
    def evaluate(setting: dict) -> list[dict]:
        summary = sharpening_table(metrics, learning_rates, threshold=setting["threshold"], window=setting["window"])
        return verdict_rows(summary, edge_summary(summary, n_boot=n_boot), threshold=setting["threshold"],
                            margin=setting["margin"])

    protocol = {"threshold": threshold, "window": window, "margin": margin}
    return decide(evaluate, with_alternatives(protocol, ALTERNATIVES), protocol)
