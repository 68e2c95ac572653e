"""Tests of study 00's protocol (analysis_lib.studies.your_own_model) on hand-made λ_max series.

The growth log₂(max λ_max / λ_max(0)) is computed here by hand; a learning rate whose runs never reach the edge
gives "partly" for reaching and "not tested" for hovering; check_parameters names the bad parameter.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies import your_own_model as study
from analysis_lib.validation import ConfigError

PROBES = list(range(0, 101, 10))
SERIES = {  # lr -> λ_max at the probes; 2/η = 20 and 10
    0.1: [4.0, 8.0, 12.0, 16.0, 19.0, 20.0, 20.5, 19.5, 20.0, 20.0, 20.0],
    0.2: [4.0, 5.0, 5.5, 6.0, 6.2, 6.4, 6.5, 6.6, 6.7, 6.8, 6.9],  # never reaches 0.9·10
}


def _metrics(seeds=(0, 1, 2)) -> tuple[pd.DataFrame, dict]:
    frames, lrs = [], {}
    for lr, lam in SERIES.items():
        for seed in seeds:
            rid = f"{lr}-{seed}"
            lrs[rid] = lr
            scale = 1 + 0.01 * seed
            rows = [(s, "lambda_max", v * scale) for s, v in zip(PROBES, lam)]
            rows += [(s, "train_loss", 1.0 - 0.005 * s) for s in PROBES]
            rows += [(s, "batch_loss", 1.0 - 0.005 * s) for s in range(1, 101)]
            df = pd.DataFrame(rows, columns=["step", "metric", "value"])
            frames.append(df.assign(run_id=rid, lr=lr, seed=seed, layer="model"))
    cols = ["run_id", "lr", "seed", "step", "layer", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[cols], lrs


def test_growth_is_log2_of_the_peak_over_the_start():
    metrics, lrs = _metrics()
    summary = study.sharpening_table(metrics, lrs, threshold=0.9, window=30)
    rise = summary[summary["metric"] == "log2_rise"].set_index("run_id")["value"]
    assert rise["0.1-0"] == pytest.approx(math.log2(20.5 / 4.0))
    assert rise["0.2-2"] == pytest.approx(math.log2(6.9 / 4.0))  # the seed's scale cancels
    assert set(summary.columns) == {"run_id", "lr", "seed", "layer", "metric", "value"}


def test_verdict_rows_follow_the_rules_fixed_in_advance():
    metrics, lrs = _metrics()
    summary = study.sharpening_table(metrics, lrs, threshold=0.9, window=30)
    edge = study.edge_summary(summary, n_boot=200)
    verdict = verdict_table(study.verdict_rows(summary, edge, threshold=0.9, margin=0.2)).set_index("claim")
    assert verdict.loc["λ_max grows during training (η = 0.1)", "reproduced"] == "yes"
    assert verdict.loc["λ_max grows during training (η = 0.2)", "reproduced"] == "yes"
    reach = verdict.loc["Under full-batch GD on the squared error, λ_max rises until it reaches 2/η"]
    assert reach["reproduced"] == "partly" and reach["measured"].startswith("3 of 6")
    assert verdict.loc["... then hovers at 2/η (η = 0.1)", "reproduced"] == "yes"
    assert verdict.loc["... then hovers at 2/η (η = 0.2)", "reproduced"] == "not tested"


@pytest.mark.parametrize("kwargs, name", [
    ({"learning_rates": []}, "learning_rates"),
    ({"learning_rates": [0.1, -1]}, "learning_rates"),
    ({"threshold": 1.5}, "threshold"),
    ({"top_k": 0}, "top_k"),
    ({"seeds": []}, "seeds"),
    ({"n_boot": 0}, "n_boot"),
])
def test_check_parameters_names_the_bad_one(kwargs, name):
    good = dict(seeds=[0], learning_rates=[0.1], threshold=0.9, margin=0.2, window=10, top_k=3, n_boot=10)
    with pytest.raises(ConfigError, match=name):
        study.check_parameters(**{**good, **kwargs})
