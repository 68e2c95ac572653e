"""Study 08, claim 15's second stage: LoRA at the inflection layer vs at a control block.

The protocol and the verdict rule are in :mod:`analysis_lib.studies.inflection_layers` (module
docstring, "Adapter comparison"). Here: the check of the ``adapter`` parameter, the stage-2 configs
built from stage 1's effects table, the outcome per adapter run, the paired tests and the row.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..lm.config import ADAPTER_PROJECTIONS
from ..plots.style import or_note
from ..stats.compare import compare_conditions
from ..stats.results import RESULT_COLUMNS
from ..stats.verdicts import NOT_TESTED, verdict_row
from ..training.config import with_overrides
from ..validation import check_int, check_subset, fail

SOURCE = "Wang 2025, inflection layers (claim 15)"
CLAIM = "A low-rank adapter at the inflection layers helps the over-trained source more"
OUTCOME = "test_loss_slow"  # held-out slow-format (target) loss, teacher-forced, at the last fine-tuning step
PLACEMENTS = ("inflection", "control")
STAGE2_PROBES = ("eval",)
ADAPTER_KEYS = ("rank", "projections")
OUTCOME_COLUMNS = ["run_id", "source_run", "source_steps", "seed", "placement", "block", "status", "metric", "value"]


def check_adapter(adapter, d_model: int, d_mlp: int) -> None:
    """Raise ConfigError naming ``adapter.<key>`` unless ``adapter`` is ``{rank: int, projections: [...]}``.

    ``rank`` >= 1 and at most the smallest dimension of the adapted matrices (``d_model``, and
    ``d_mlp`` when ``up`` or ``down`` is adapted); ``projections`` distinct names from
    :data:`~analysis_lib.lm.config.ADAPTER_PROJECTIONS`.
    """
    if not isinstance(adapter, Mapping) or sorted(adapter) != sorted(ADAPTER_KEYS):
        fail("adapter", adapter, f"must be a mapping with exactly the keys {list(ADAPTER_KEYS)}, "
                                 "e.g. {rank: 2, projections: [q, k, v, o, up, down]}")
    projections = adapter["projections"]
    check_subset("adapter.projections", projections, ADAPTER_PROJECTIONS)
    if len(set(projections)) != len(projections):
        fail("adapter.projections", list(projections), "names must be distinct")
    check_int("adapter.rank", adapter["rank"], 1)
    bound = min(d_model, d_mlp) if {"up", "down"} & set(projections) else d_model
    if adapter["rank"] > bound:
        fail("adapter.rank", adapter["rank"], f"must be <= {bound}, the smallest dimension of the adapted matrices")


def adapter_configs(result, effects: pd.DataFrame, *, rank: int, projections) -> list:
    """Stage 2: per source run with an inflection layer, its config adapted at that layer and at the control.

    ``result``: stage 1's grid (its ``configs`` by run id); ``effects``: :func:`inflection_layers.run_effects`
    of its source runs. Each config is the source run's with ``finetune.adapter_layers`` = [block],
    ``adapter_rank`` = ``rank``, ``adapter_projections`` = ``projections``, the ``eval`` probe only and
    ``finetune.from_run`` = the source run (it starts from the source's stored ``base`` weights),
    labelled ``arm=adapter, source_steps, placement, block`` (+ the source run id as ``source_run``).
    Runs without an inflection or control layer (NaN) give none.
    """
    layers = effects[effects["metric"].isin(["inflection_layer", "control_layer"])]
    wide = layers.pivot_table(index="run_id", columns="metric", values="value", sort=False)
    out = []
    for rid, row in wide.iterrows():
        if not {"inflection_layer", "control_layer"} <= set(row.dropna().index):
            continue
        source = result.configs[rid]
        for placement in PLACEMENTS:
            block = int(row[f"{placement}_layer"])
            cfg = with_overrides(source, {"finetune.adapter_layers": [block], "finetune.adapter_rank": rank,
                                          "finetune.adapter_projections": list(projections),
                                          "finetune.from_run": rid,
                                          "probes.names": list(STAGE2_PROBES)})
            labels = {"arm": "adapter", "source_steps": source.train.steps, "placement": placement, "block": block,
                      "source_run": rid}
            out.append(dataclasses.replace(cfg, conditions=tuple(labels.items())))
    return out


def adapter_outcomes(result) -> pd.DataFrame:
    """One row per stage-2 run: ``test_loss_slow`` at its last fine-tuning step; NaN unless finished and finite."""
    rows = []
    status = dict(zip(result.runs["run_id"], result.runs["status"]))
    for rid, config in result.configs.items():
        value = float("nan")
        if status.get(rid) == "finished":
            m = result.metrics
            sel = m[(m["run_id"] == rid) & (m["metric"] == OUTCOME)
                    & (m["step"] == config.train.steps + config.finetune.steps)]["value"]
            value = float(sel.iloc[-1]) if len(sel) and np.isfinite(sel.iloc[-1]) else float("nan")
        labels = dict(config.conditions)
        rows.append({"run_id": rid, "source_run": labels["source_run"], "source_steps": config.train.steps,
                     "seed": config.seed, "placement": labels["placement"], "block": labels["block"],
                     "status": status.get(rid, "failed"), "metric": OUTCOME, "value": value})
    return pd.DataFrame(rows, columns=OUTCOME_COLUMNS)


def benefits(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per source length and seed: ``adapter_benefit`` = outcome(control) − outcome(inflection) (NaN unpaired)."""
    wide = outcomes.pivot_table(index=["source_steps", "seed"], columns="placement", values="value", dropna=False)
    for p in PLACEMENTS:
        if p not in wide:
            wide[p] = np.nan
    out = (wide["control"] - wide["inflection"]).rename("value").reset_index()
    return out.assign(metric="adapter_benefit", layer="model")[["source_steps", "seed", "metric", "layer", "value"]]


def adapter_tests(outcomes: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """Paired tests: control − inflection per source length (Holm over both), and long − short of the benefit."""
    ok = outcomes.dropna(subset=["value"]).assign(layer="model")
    frames = []
    if ok["placement"].nunique() == 2:
        frames.append(compare_conditions(ok, "placement", baseline="inflection", by=("metric", "layer", "source_steps"),
                                         n_boot=n_boot))
    gain = benefits(outcomes).dropna(subset=["value"])
    if gain["source_steps"].nunique() == 2:
        frames.append(compare_conditions(gain, "source_steps", n_boot=n_boot))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RESULT_COLUMNS))


def adapter_row(outcomes: pd.DataFrame | None, *, n_boot: int) -> dict:
    """The claim's row: long − short of the benefit, by the rule of the protocol (see the module docstring)."""
    def untested(measured: str, n: int = 0) -> dict:
        return {"claim": CLAIM, "source": SOURCE, "measured": measured, "n": n, "reproduced": NOT_TESTED}

    if outcomes is None:
        return untested("not run: no adapter runs were given")
    if not len(outcomes):
        return untested("no source run had an inflection and a control block, so no adapter run was set up")
    if outcomes["value"].isna().all():
        return untested(f"every adapter run ({len(outcomes)}) diverged or failed")
    tests = adapter_tests(outcomes, n_boot=n_boot)
    gain = tests[tests["metric"] == "adapter_benefit"] if len(tests) else tests
    if not len(gain):
        return untested("no seed has a paired benefit at both source lengths")
    row = verdict_row(CLAIM, SOURCE, gain.iloc[0], "Δ benefit of the inflection-layer adapter, long − short "
                      "(target loss at the control block − at the inflection layer)", "positive")
    per = tests[tests["metric"] == OUTCOME]
    longest = per[per["contrast"].str.endswith(f"[source_steps={int(outcomes['source_steps'].max())}]")]
    if len(per):
        row["measured"] += "; benefit per source length: " + ", ".join(
            f"{r.contrast.partition('[')[2].rstrip(']')}: {r.estimate:+.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}] "
            f"(n={r.n})"
            for r in per.itertuples())
    # "Helps the over-trained source more" needs a help: the long source's own benefit must be > 0 too.
    helps = verdict_row(CLAIM, SOURCE, longest.iloc[0], "benefit", "positive")["reproduced"] if len(longest) \
        else "inconclusive"
    interaction = row["reproduced"]
    row["reproduced"] = ("yes" if interaction == "yes" and helps == "yes" else
                         "no" if "no" in (interaction, helps) else "inconclusive")
    row["rule"] = ("yes when long − short of the benefit and the long source's own benefit (Holm over both "
                   "lengths) both have their 95% CI above 0 with p < 0.05; no when either lies below 0 with "
                   "p < 0.05; inconclusive otherwise")
    if row["reproduced"] != "inconclusive":
        row["power"] = ""
    return row


@or_note
def plot_adapter_outcomes(outcomes: pd.DataFrame) -> plt.Figure:
    """One panel per source length: the target loss with the adapter at the inflection vs the control block.

    One line per seed joins its two adapter runs (a seed with a diverged run shows one point or none).
    """
    lengths = sorted(outcomes["source_steps"].unique())
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.4 * len(lengths), 3.2), squeeze=False, sharey=True)
    for ax, steps in zip(axes[0], lengths):
        sub = outcomes[outcomes["source_steps"] == steps]
        for seed, run in sub.groupby("seed"):
            y = run.set_index("placement")["value"].reindex(list(PLACEMENTS))
            ax.plot(range(len(PLACEMENTS)), y.values, marker="o", color="C0", alpha=0.6, lw=1)
        mean = sub.groupby("placement")["value"].mean().reindex(list(PLACEMENTS))
        ax.plot(range(len(PLACEMENTS)), mean.values, marker="s", color="k", lw=2, label="mean")
        ax.set_xticks(range(len(PLACEMENTS)), [f"{p} block" for p in PLACEMENTS])
        ax.set_xlim(-0.4, len(PLACEMENTS) - 0.6)
        ax.set_title(f"{steps} source steps")
    axes[0, 0].set_ylabel("held-out slow-format loss after LoRA")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
