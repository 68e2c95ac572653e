"""Study 07, instabilities of a tiny transformer at high learning rates: protocol, checks and verdicts.

Claim 13 of ``docs/claims.md`` (Wortsman et al. 2023, "Small-scale proxies for large-scale
Transformer training instabilities"): at high learning rates the attention logits grow and the
output log-partition log Z drifts; qk-layernorm mitigates the first, z-loss (1e-4 × (log Z)²) the
second, and both lower the sensitivity of the final loss to the learning rate. Claim 17 (Hao et
al. 2025): the top eigenvalue λ_max of each layer's diagonal Hessian block differs substantially
between the layers of a transformer and changes over training.

Protocol, fixed before looking at results. A tiny decoder-only transformer learns the addition
task (:mod:`analysis_lib.lm.training`, pre-training only: ``finetune.steps = 0``) with Adam over a
log-spaced learning-rate grid, in the arms ``baseline`` (no qk-norm, no z-loss), ``qk_norm``,
``z_loss`` and optionally ``warmup``, all on the same grid and seeds (paired by seed), plus a
``curvature`` arm (the baseline recipe at one learning rate with the ``block_sharpness`` and
``gradient_snr`` probes, probed a few times only: each block λ_max costs about 12 Hessian-vector
products).

Per run (:func:`run_table`): the training loss L(t) is the mean of the teacher-forced losses of
both formats on the training problems (the ``eval`` probe); L_0 = L(0), the final loss
L(train.steps). The maximum attention logit A(t) is the largest ``attn_logit_max`` over layers and
heads at probe step t; |log Z|(t) is the absolute mean log Z of the probed batch (``logit_stats``).
Each series is summarised by its ``summary`` (``"peak"``: the maximum over the probes; ``"final"``:
the last probe) and compared with its first probe (the first update). A diverged run keeps what it
recorded before diverging, and counts as L_0 in the learning-rate sensitivity.

Rules (each a paired test by seed, at the highest learning rate of the grid, where the
instabilities are expected): (a) A grows (summary − first > 0) in the baseline, and qk-norm lowers
it (qk_norm − baseline < 0); (b) |log Z| grows in the baseline, and z-loss lowers it; (c) each of
qk-norm and z-loss (and warm-up) lowers the LR sensitivity (``sensitivity_difference`` < 0), the
log-rank test of divergence a further row (hazard ratio < 1). Claim 17, in the ``curvature`` arm:
the max/min ratio of block λ_max exceeds ``factor`` (log10 ratio averaged over probes minus
log10 factor > 0), and changes over training (log10 ratio at the last probe minus the first, CI
excluding 0 either way); the same two rules for the per-layer gradient noise Var_l = E_b‖g_{l,b} −
ḡ_l‖² (``snr_var`` of the ``gradient_snr`` probe, over its layers). "Yes" needs the CI on the
claimed side and p < 0.05.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..stats.compare import compare_conditions
from ..stats.lr_sensitivity import LOG_SPACING_TOL, sensitivity_difference
from ..stats.results import empty_row, finish_table
from ..stats.survival import logrank_test
from ..stats.verdicts import NOT_TESTED, verdict_row
from ..validation import check_choice, check_includes, check_int, check_number, fail
from .sensitivity import decide, with_alternatives

TITLE = "Instabilities of a tiny transformer at high learning rates"
QUESTION = ("Do attention logits grow and log Z drift at high learning rates, do qk-layernorm and z-loss prevent "
            "them and lower the sensitivity to the learning rate, and is per-layer sharpness heterogeneous?")
SOURCE = "Wortsman et al. 2023 (claim 13)"
SHARPNESS_SOURCE = "Hao et al. 2025 (claim 17)"
REQUIRED_ARMS = ("baseline", "qk_norm", "z_loss", "curvature")
GRID_ARMS = ("baseline", "qk_norm", "z_loss", "warmup")  # the arms on the learning-rate grid
SUMMARIES = ("peak", "final")
PROBES = ("eval", "attention_stats", "logit_stats")
CURVATURE_PROBES = ("block_sharpness", "gradient_snr")  # the curvature arm's: block λ_max and Var_l
BLOCKS = ("q", "k", "v", "o", "up", "down")  # the projections of each transformer block
SPREAD_METRICS = {"block_lambda_max": "block λ_max", "snr_var": "gradient noise Var_l"}
RUN_COLUMNS = ["run_id", "arm", "seed", "lr", "diverged", "diverged_step", "last_step", "initial_loss",
               "final_loss"]


def check_parameters(configs: Sequence, arms: Mapping, *, factor: float, summary: str, n_boot: int) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training.

    Needs the arms of :data:`REQUIRED_ARMS` (``warmup`` optional, no others); the grid arms on the
    baseline's learning rates (log-spaced), seeds shared by every arm; the baseline without
    qk-norm and z-loss, ``qk_norm`` with qk-norm only, ``z_loss`` with z-loss only, ``warmup`` with
    warm-up only; the probes of :data:`PROBES` in every run and :data:`CURVATURE_PROBES` in ``curvature``;
    no fine-tuning phase. ``factor`` > 1; ``summary`` one of :data:`SUMMARIES`; ``n_boot`` >= 1.
    """
    check_includes("arms", arms, REQUIRED_ARMS)
    extra = sorted(set(arms) - set(REQUIRED_ARMS) - {"warmup"})
    if extra:
        fail("arms", list(arms), f"unknown arms {extra}; allowed: {[*REQUIRED_ARMS, 'warmup']}")
    check_number("factor", factor, lo=1.0)
    if factor == 1:
        fail("factor", factor, "must be > 1 (the max/min ratio of block λ_max is >= 1 by definition)")
    check_choice("summary", summary, SUMMARIES)
    check_int("n_boot", n_boot, 1)
    by_arm: dict[str, list] = {}
    for c in configs:
        by_arm.setdefault(c.label("arm"), []).append(c)
    base = by_arm["baseline"][0]
    lrs = sorted({c.train.lr for c in by_arm["baseline"]})
    if len(lrs) > 1:
        steps = np.diff(np.log(lrs))
        if np.abs(steps - steps.mean()).max() > LOG_SPACING_TOL * steps.mean():
            fail("arms", lrs, "the baseline's train.lr must be a log-spaced grid (constant ratio between neighbours)")
    seeds = sorted({c.seed for c in configs})
    for arm, runs in by_arm.items():
        if arm in GRID_ARMS and sorted({c.train.lr for c in runs}) != lrs:
            fail("arms", {arm: sorted({c.train.lr for c in runs})}, f"every arm but curvature needs the baseline's "
                 f"learning rates {lrs}")
        if sorted({c.seed for c in runs}) != seeds:
            fail("seeds", sorted({c.seed for c in runs}), f"arm {arm!r} must run every seed {seeds}")
        for c in runs:
            want = {"qk_norm": arm == "qk_norm", "z_loss": arm == "z_loss",
                    "warmup": arm == "warmup" or (arm == "curvature" and base.train.warmup_steps > 0)}
            got = {"qk_norm": c.model.qk_norm, "z_loss": c.train.z_loss > 0, "warmup": c.train.warmup_steps > 0}
            keys = {"qk_norm": "model.qk_norm", "z_loss": "train.z_loss", "warmup": "train.warmup_steps"}
            for what, expected in want.items():
                if got[what] != expected:
                    fail(keys[what], {"arm": arm, "value": got[what]}, f"arm {arm!r} must have {what} "
                         f"{'on' if expected else 'off'} (each treatment arm changes one thing from the baseline)")
            missing = [p for p in (*PROBES, *(CURVATURE_PROBES if arm == "curvature" else []))
                       if p not in c.probes.names]
            if missing:
                fail("probes.names", list(c.probes.names), f"arm {arm!r} needs the probes {missing}")
            if c.finetune.steps:
                fail("finetune.steps", c.finetune.steps, "must be 0: the study reads the pre-training phase only")


def _series(metrics: pd.DataFrame, metric: str, reduce: str = "max") -> pd.DataFrame:
    """``run_id, step, value``: ``metric`` reduced over layers per run and step (finite values only)."""
    sub = metrics[metrics["metric"] == metric]
    sub = sub[np.isfinite(sub["value"].to_numpy(np.float64))]
    return sub.groupby(["run_id", "step"], as_index=False)["value"].agg(reduce)


def _loss_series(metrics: pd.DataFrame) -> pd.DataFrame:
    sub = metrics[metrics["metric"].isin(["train_loss_fast", "train_loss_slow"])]
    return sub.groupby(["run_id", "step"], as_index=False)["value"].mean()


def run_table(result) -> pd.DataFrame:
    """One row per run: :data:`RUN_COLUMNS` (L_0 and the final loss of the module docstring).

    A run without a step-0 loss takes the mean L_0 of the runs that have one (all runs start from
    the same kind of initialisation); its final loss is NaN unless it finished.
    """
    runs, metrics = result.runs, result.metrics
    loss = _loss_series(metrics) if len(metrics) else pd.DataFrame(columns=["run_id", "step", "value"])
    rows = []
    for r in runs.itertuples():
        config = result.configs[r.run_id]
        own = loss[loss["run_id"] == r.run_id].set_index("step")["value"]
        diverged = r.status == "diverged"
        rows.append({"run_id": r.run_id, "arm": config.label("arm"), "seed": config.seed, "lr": config.train.lr,
                     "diverged": diverged, "diverged_step": float(r.diverged_step) if diverged else np.nan,
                     "last_step": config.train.steps, "status": r.status,
                     "initial_loss": own.get(0, np.nan),
                     "final_loss": own.get(config.train.steps, np.nan) if r.status == "finished" else np.nan})
    table = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "status"])
    table["initial_loss"] = table["initial_loss"].fillna(table["initial_loss"].mean())
    return table


def series_summaries(metrics: pd.DataFrame, runs: pd.DataFrame, summary: str) -> pd.DataFrame:
    """Tidy ``run_id, arm, seed, lr, metric, layer="model", value`` of every run's first and summary values.

    Metrics: ``attn_logit_first``/``attn_logit_<summary>`` (A(t)), ``abs_log_z_first``/
    ``abs_log_z_<summary>`` (|log Z|(t)), and their differences ``attn_logit_growth``,
    ``log_z_drift`` (summary − first).
    """
    rows = []
    series = {"attn_logit": _series(metrics, "attn_logit_max") if len(metrics) else None,
              "abs_log_z": _series(metrics, "log_z_mean") if len(metrics) else None}
    for r in runs.itertuples():
        ids = {"run_id": r.run_id, "arm": r.arm, "seed": r.seed, "lr": r.lr, "layer": "model"}
        for name, table in series.items():
            values = (table[table["run_id"] == r.run_id].sort_values("step")["value"].abs().to_numpy()
                      if table is not None else np.array([]))
            first = values[0] if len(values) else np.nan
            value = (values.max() if summary == "peak" else values[-1]) if len(values) else np.nan
            growth = "attn_logit_growth" if name == "attn_logit" else "log_z_drift"
            rows += [{**ids, "metric": f"{name}_first", "value": first},
                     {**ids, "metric": f"{name}_{summary}", "value": value},
                     {**ids, "metric": growth, "value": value - first}]
    return pd.DataFrame(rows, columns=["run_id", "arm", "seed", "lr", "layer", "metric", "value"])


def _paired(df: pd.DataFrame, metric: str, treatment: str, baseline: str, contrast: str, n_boot: int) -> pd.Series:
    """The paired comparison treatment − baseline of ``metric`` (by seed), or an empty row without pairs."""
    sub = df[(df["metric"] == metric) & df["arm"].isin([treatment, baseline])].dropna(subset=["value"])
    paired = sub.groupby("seed")["arm"].nunique()
    if (paired == 2).sum() < 2:
        row = {"metric": metric, "layer": "model", "contrast": contrast,
               **empty_row("paired t-test: fewer than 2 seeds with both values", n=int((paired == 2).sum()))}
        return finish_table([row], None).iloc[0]
    out = compare_conditions(sub, "arm", baseline=baseline, adjust=None, n_boot=n_boot)
    return out.assign(contrast=contrast).iloc[0]


def instability_tests(values: pd.DataFrame, *, lr: float, summary: str, n_boot: int) -> pd.DataFrame:
    """Rules (a) and (b) at learning rate ``lr``: growth in the baseline, and each mitigation's paired effect.

    Growth is tested as the paired difference summary − first of the baseline runs (a constant
    first-probe "arm" against the summary one); mitigations as treatment − baseline of the summary.
    """
    at = values[values["lr"] == lr]
    base = at[at["arm"] == "baseline"]
    rows = []
    for name, growth, arm in (("attn_logit", "attn_logit_growth", "qk_norm"), ("abs_log_z", "log_z_drift", "z_loss")):
        pair = pd.concat([base[base["metric"] == f"{name}_first"].assign(arm="first"),
                          base[base["metric"] == f"{name}_{summary}"].assign(arm=summary)])
        rows.append(_paired(pair.assign(metric=growth), growth, summary, "first",
                            f"baseline {summary} - first [lr={lr:g}]", n_boot))
        rows.append(_paired(at, f"{name}_{summary}", arm, "baseline", f"{arm} - baseline [lr={lr:g}]", n_boot))
    return pd.DataFrame(rows).reset_index(drop=True)


def sensitivity_tests(runs: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """Rule (c): ``sensitivity_difference`` of each treatment arm on the grid against the baseline."""
    grid = runs[runs["arm"].isin(GRID_ARMS)]
    rows = []
    for arm in [a for a in GRID_ARMS[1:] if a in set(grid["arm"])]:
        if grid["lr"].nunique() < 2:
            rows.append({"metric": "lr_sensitivity", "layer": "model", "contrast": f"{arm} - baseline",
                         **empty_row("LR sensitivity: needs at least two learning rates", n=0)})
            continue
        rows.append(sensitivity_difference(grid, arm, "baseline", n_boot=n_boot).iloc[0].to_dict())
    return finish_table(rows, None) if rows else finish_table([], None)


def divergence_tests(runs: pd.DataFrame) -> pd.DataFrame:
    """The log-rank test of each treatment arm's divergence steps against the baseline's (all learning rates)."""
    grid = runs[runs["arm"].isin(GRID_ARMS)]
    return pd.concat([logrank_test(grid, arm, "baseline") for arm in GRID_ARMS[1:] if arm in set(grid["arm"])],
                     ignore_index=True)


def spread_table(metrics: pd.DataFrame, metric: str = "block_lambda_max") -> pd.DataFrame:
    """``run_id, seed, step, ratio``: max/min of ``metric`` over the q, k, v, o, up, down blocks per run and probe.

    Only layers named ``....<projection>`` with a projection of :data:`BLOCKS` count (the blocks of
    ``block_sharpness``; for ``snr_var`` the embeddings, norms and unembedding are left out, so both
    spreads are over the same blocks). The ratio is NaN where the smallest value is <= 0 or not
    finite (then it measures no spread).
    """
    if metrics.empty:
        return pd.DataFrame(columns=["run_id", "seed", "step", "ratio"])
    blocks = metrics["layer"].astype(str).str.rsplit(".", n=1).str[-1].isin(BLOCKS)
    sub = metrics[(metrics["metric"] == metric) & blocks]
    if sub.empty:
        return pd.DataFrame(columns=["run_id", "seed", "step", "ratio"])
    grouped = sub.groupby(["run_id", "seed", "step"])["value"]
    low, high = grouped.min(), grouped.max()
    ratio = (high / low).where((low > 0) & np.isfinite(low) & np.isfinite(high))
    return ratio.rename("ratio").reset_index()


def spread_tests(spread: pd.DataFrame, *, factor: float, n_boot: int, label: str = "block λ_max") -> pd.DataFrame:
    """Claim 17's tests on :func:`spread_table` rows: mean log10 ratio vs log10 ``factor``; last − first probe.

    ``label`` names the quantity in the contrasts (``"<label>: mean over probes - log10(factor)"``).
    """
    spread = spread.dropna(subset=["ratio"]).assign(value=lambda d: np.log10(d["ratio"].astype(float)),
                                                  layer="model")
    mean = spread.groupby("seed", as_index=False)["value"].mean()
    ordered = spread.sort_values("step").groupby("seed")
    level = pd.concat([mean.assign(arm="measured"), mean.assign(arm="factor", value=math.log10(factor))])
    change = pd.concat([ordered.head(1).assign(arm="first"), ordered.tail(1).assign(arm="last")])
    rows = [_paired(level.assign(metric="log10_block_ratio", layer="model"), "log10_block_ratio", "measured",
                    "factor", f"{label}: mean over probes - log10({factor:g})", n_boot),
            _paired(change.assign(metric="log10_block_ratio"), "log10_block_ratio", "last", "first",
                    f"{label}: last probe - first probe", n_boot)]
    return pd.DataFrame(rows).reset_index(drop=True)


def _logrank_row(row: pd.Series, arm: str) -> dict:
    out = {"claim": f"{arm} makes divergence less likely (log-rank, all learning rates)", "source": SOURCE,
           "n": int(row["n"]), "rule": "yes when the 95% CI of the hazard ratio lies below 1 and p < 0.05; no when "
                                       "above 1 and p < 0.05; inconclusive otherwise"}
    if not np.isfinite(row["estimate"]):
        return {**out, "measured": f"{row['method']}", "n": 0, "reproduced": NOT_TESTED}
    below, above = row["ci_high"] < 1, row["ci_low"] > 1
    outcome = ("yes" if below else "no" if above else "inconclusive") if row["pvalue"] < 0.05 else "inconclusive"
    return {**out, "reproduced": outcome,
            "measured": f"hazard ratio = {row['estimate']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}], "
                        f"p = {row['pvalue']:.2g}"}


def verdict_rows(tests: pd.DataFrame, sensitivity: pd.DataFrame, divergence: pd.DataFrame,
                 spread: pd.DataFrame) -> list[dict]:
    """Every verdict row of the study by the rules of the module docstring, from the four test tables."""
    t = tests.reset_index(drop=True)
    rows = [verdict_row("At a high learning rate the maximum attention logit grows (baseline)", SOURCE,
                        t.iloc[0], "Δ max attention logit", "positive"),
            verdict_row("qk-layernorm keeps the attention logits lower", SOURCE, t.iloc[1],
                        "Δ max attention logit (qk_norm − baseline)", "negative"),
            verdict_row("At a high learning rate |log Z| drifts upward (baseline)", SOURCE, t.iloc[2], "Δ |log Z|",
                        "positive"),
            verdict_row("z-loss keeps |log Z| lower", SOURCE, t.iloc[3], "Δ |log Z| (z_loss − baseline)",
                        "negative")]
    for _, row in sensitivity.iterrows():
        arm = row["contrast"].split(" - ")[0]
        rows.append(verdict_row(f"{arm} lowers the learning-rate sensitivity", SOURCE, row,
                                f"Δ LR sensitivity ({arm} − baseline)", "negative"))
    rows += [_logrank_row(row, row["contrast"].split(" vs ")[0]) for _, row in divergence.iterrows()]
    spread = spread.reset_index(drop=True)
    for i, name in enumerate(("Block λ_max", "Gradient noise Var_l")[:len(spread) // 2]):
        level, change = spread.iloc[2 * i], spread.iloc[2 * i + 1]
        rows.append(verdict_row(f"{name} differs between layers: max/min above the factor", SHARPNESS_SOURCE, level,
                                "log10(max/min) − log10(factor)", "positive"))
        moved = verdict_row(f"... and the max/min ratio of {name} changes over training", SHARPNESS_SOURCE, change,
                            "Δ log10(max/min), last − first probe",
                            "negative" if np.isfinite(change["estimate"]) and change["estimate"] < 0 else "positive")
        rows.append({**moved, "rule": "yes when the 95% CI excludes 0 (either sign) and p < 0.05; inconclusive "
                                      "otherwise"})
    return rows


# The free choices a fair reader could make differently: how each run's attention-logit and log Z
# series are summarised (their peak or their last probe), the learning rate the growth rules read
# (the highest of the grid or the one below), and the factor claim 17's spread must exceed.
ALTERNATIVES = {"summary": ("final",), "lr_rank": (2,), "factor": (5.0, 20.0)}


def robust_verdict_rows(metrics: pd.DataFrame, runs: pd.DataFrame, *, summary: str, factor: float,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame, dict]:
    """:func:`verdict_rows` under the protocol with robustness, the sensitivity table, and the protocol's tables.

    ``lr_rank`` 1 is the highest learning rate of the grid, 2 the next one down (the highest
    again when the grid has one). Returns the rows, the sensitivity table and
    ``{"instability", "sensitivity", "divergence", "spread"}`` test tables under the protocol.
    """
    lrs = sorted(runs.loc[runs["arm"].isin(GRID_ARMS), "lr"].unique(), reverse=True)
    curvature = metrics[metrics["arm"] == "curvature"] if len(metrics) else pd.DataFrame(columns=["metric", "layer"])
    spreads = {m: spread_table(curvature, m) for m in SPREAD_METRICS}
    fixed = {"sensitivity": sensitivity_tests(runs, n_boot=n_boot), "divergence": divergence_tests(runs)}

    def tables(setting: dict) -> dict:
        lr = lrs[min(setting["lr_rank"], len(lrs)) - 1]
        values = series_summaries(metrics, runs, setting["summary"])
        return {**fixed, "instability": instability_tests(values, lr=lr, summary=setting["summary"], n_boot=n_boot),
                "spread": pd.concat([spread_tests(spreads[m], factor=setting["factor"], n_boot=n_boot, label=label)
                                     for m, label in SPREAD_METRICS.items()], ignore_index=True)}

    def evaluate(setting: dict) -> list[dict]:
        t = tables(setting)
        return verdict_rows(t["instability"], t["sensitivity"], t["divergence"], t["spread"])

    protocol = {"summary": summary, "lr_rank": 1, "factor": float(factor)}
    rows, table = decide(evaluate, with_alternatives(protocol, ALTERNATIVES), protocol)
    return rows, table, tables(protocol)
