"""Study 08, normalisation placement and inflection layers: the protocol, its checks and verdicts.

Claim 14 of ``docs/claims.md`` (Kim et al., ICML 2025, "Peri-LN"): with Pre-LN the variance of the
hidden states grows with depth; with Post-LN the gradients of early layers shrink; Peri-LN, a norm
around every sublayer, keeps both balanced. The runs are the tiny transformer of
:mod:`analysis_lib.lm` at one depth under ``model.norm`` = pre, post and peri (arm ``norm``),
paired by seed (the seed fixes the initial weights and the data order), with the
``activation_stats`` and ``grad_norm`` probes.

The protocol is fixed before looking at results:

- **Depth growth.** Per run, log Var(h_l) of each block's output (``hidden_variance``) is averaged
  over the probed steps of the ``steps`` choice (``late``: the second half of pre-training;
  ``all``: every probed step; ``last``: the last probed step), and its least-squares slope on the
  block index l is the run's ``variance_slope`` (per block, in log units). Pre-LN's growth is
  reproduced when the 95% t interval of the slope across seeds lies above 0 (one-sample t-test,
  p < 0.05).
- **Early-layer gradients.** Per probed step, the gradient norm of block l is
  ‖g_l‖ = sqrt(Σ ‖g_p‖²) over the parameters p of ``blocks.{l}.*`` (the ``grad_norm`` rows);
  ``grad_log_ratio`` = the mean over the same steps of log(‖g_first‖ / ‖g_last‖). Post-LN's
  shrinkage is reproduced when its t interval lies below 0.
- **Balance under Peri-LN.** Paired by seed, pre − peri of ``variance_slope`` above 0 and
  post − peri of ``grad_log_ratio`` below 0 (paired t-tests, Holm over the table).
- **Loss spikes.** A spike is an update whose mini-batch loss exceeds ``spike_factor`` × the median
  of the ``spike_window`` losses before it; ``spikes`` counts them per run (updates after the first
  window). Peri-LN is claimed to train more stably: pre − peri and post − peri above 0.
- **Massive activations** (Sun et al. 2024, "Massive activations in large language models"): a run
  has them when the largest ``massive_ratio`` (max|h| / median|h|) of any block at any probed step
  reaches ``massive_bar`` (100 in that paper's sense of "about 10³–10⁴ × the median"; our bar is
  lower). They are a scale phenomenon: the row reports the largest ratio seen.

Every summary reads the pre-training steps only (1..``train.steps``): the runs may have a
fine-tuning phase after, which claim 14 does not look at. Claim 15 (inflection layers, Wang 2025)
is in :mod:`analysis_lib.studies.inflection_layers`; without its rows the study's claim-15 rows are
"not tested" (:func:`claim15_rows`).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as sps

from ..stats.compare import compare_conditions
from ..stats.verdicts import NOT_TESTED, share_verdict, verdict_row
from ..validation import check_choice, check_int, check_number, fail
from .inflection_adapters import check_adapter
from .sensitivity import decide, with_alternatives

TITLE = "Normalisation placement and inflection layers"
QUESTION = ("Does hidden-state variance grow with depth under Pre-LN, do early-layer gradients shrink under "
            "Post-LN, does Peri-LN keep both balanced; do inflection layers appear when a source is adapted?")
SOURCE = "Kim et al. 2025, Peri-LN (claim 14)"
MASSIVE_SOURCE = "Sun et al. 2024, massive activations"
INFLECTION_SOURCE = "Wang 2025, inflection layers (claim 15)"
NORMS = ("pre", "post", "peri")
STEP_CHOICES = ("late", "all", "last")
PROBES = ("activation_stats", "grad_norm")
RUN_METRICS = ("variance_slope", "grad_log_ratio", "spikes", "massive_max")


def check_parameters(configs: Sequence, arms: Mapping, *, steps: str, spike_factor: float, spike_window: int,
                     massive_bar: float, n_boot: int, n_problems: int = 2, adapter: Mapping | None = None) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training.

    The study needs the arm ``norm`` varying ``model.norm`` over pre, post and peri, at least 2
    blocks, and the ``activation_stats`` and ``grad_norm`` probes in every run. The optional arm
    ``source`` (claim 15) needs two distinct ``train.steps``, a fine-tuning phase and the
    ``attention_stats`` probe; ``n_problems`` (ΔCKA inputs) at least 2. ``adapter`` (claim 15's
    stage 2, :func:`analysis_lib.studies.inflection_adapters.check_adapter`) also needs ``eval`` there.
    """
    check_int("n_problems", n_problems, 2)
    for c in configs[:1] if adapter is not None else ():
        check_adapter(adapter, c.model.d_model, c.model.d_mlp)
    if "source" in arms and len(set(arms["source"].get("train.steps", []))) != 2:
        fail("arms", dict(arms), "the arm 'source' needs two distinct train.steps (short, long)")
    for c in configs:
        if c.label("arm") == "source":
            if c.finetune.steps < 1:
                fail("finetune.steps", c.finetune.steps, "must be >= 1 in the arm 'source' (the adaptation)")
            if "attention_stats" not in c.probes.names:
                fail("probes.names", list(c.probes.names), "must include attention_stats for the arm 'source'")
            if adapter is not None and "eval" not in c.probes.names:
                fail("probes.names", list(c.probes.names), "must include eval for the adapter runs (their outcome)")
            if c.task.n_test < n_problems:
                fail("n_problems", n_problems, f"must be <= task.n_test (= {c.task.n_test})")
    if "norm" not in arms or sorted(arms["norm"].get("model.norm", [])) != sorted(NORMS):
        fail("arms", dict(arms), "needs the arm 'norm' with model.norm: [pre, post, peri]")
    check_choice("steps", steps, STEP_CHOICES)
    check_number("spike_factor", spike_factor, positive=True, lo=1.0)
    check_int("spike_window", spike_window, 1)
    check_number("massive_bar", massive_bar, lo=1.0)
    check_int("n_boot", n_boot, 1)
    for c in configs:
        if c.model.n_layers < 2:
            fail("model.n_layers", c.model.n_layers, "must be >= 2 (a slope over depth needs two blocks)")
        missing = [p for p in PROBES if p not in c.probes.names]
        if missing:
            fail("probes.names", list(c.probes.names), f"must include {list(PROBES)}")
        if c.train.steps <= spike_window:
            fail("spike_window", spike_window, f"must be < train.steps (= {c.train.steps})")


def _block(layer: str) -> int | None:
    parts = layer.split(".")
    return int(parts[1]) if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def probed_steps(steps: np.ndarray, choice: str, train_steps: int) -> np.ndarray:
    """The probed pre-training steps (0 < step <= ``train_steps``) a run's summaries average over (``steps``)."""
    steps = np.unique(steps[(steps > 0) & (steps <= train_steps)])
    if choice == "all" or len(steps) == 0:
        return steps
    if choice == "last":
        return steps[-1:]
    late = steps[steps > train_steps / 2]
    return late if len(late) else steps[-1:]


def variance_slope(block_variance: pd.DataFrame) -> float:
    """Least-squares slope of log Var(h_l) on l from rows ``block, value`` (one per block)."""
    x = block_variance["block"].to_numpy(np.float64)
    y = np.log(block_variance["value"].to_numpy(np.float64))
    if len(x) < 2 or not np.isfinite(y).all():
        return float("nan")
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc ** 2).sum())


def block_grad_norms(grad_rows: pd.DataFrame) -> pd.DataFrame:
    """Per step and block, sqrt of the sum of squared parameter gradient norms of ``blocks.{l}.*``."""
    sub = grad_rows.assign(block=grad_rows["layer"].map(_block)).dropna(subset=["block"])
    sub = sub[sub["layer"].str.count(r"\.") >= 2]  # parameters of a block, not the block itself
    out = sub.assign(sq=sub["value"] ** 2).groupby(["step", "block"], as_index=False)["sq"].sum()
    return out.assign(block=out["block"].astype(int), value=np.sqrt(out["sq"])).drop(columns="sq")


def count_spikes(losses: np.ndarray, factor: float, window: int) -> int:
    """Updates t > window whose loss exceeds ``factor`` × the median of the ``window`` losses before t."""
    losses = np.asarray(losses, dtype=np.float64)
    return int(sum(losses[t] > factor * np.median(losses[t - window:t]) for t in range(window, len(losses))))


def run_summary(run: pd.DataFrame, train_steps: int, *, steps: str, spike_factor: float,
                spike_window: int) -> dict:
    """The summaries of one run's tidy metrics (module docstring): slope, gradient ratio, spikes, massive ratio."""
    var = run[(run["metric"] == "hidden_variance") & run["layer"].map(lambda s: _block(s) is not None)]
    keep = probed_steps(var["step"].to_numpy(), steps, train_steps)
    var = var[var["step"].isin(keep)].assign(block=lambda d: d["layer"].map(_block))
    logvar = var.assign(value=np.log(var["value"])).groupby("block", as_index=False)["value"].mean()
    slope = variance_slope(logvar.assign(value=np.exp(logvar["value"])))
    grads = block_grad_norms(run[(run["metric"] == "grad_norm") & run["step"].isin(keep)])
    ratio = float("nan")
    if len(grads):
        wide = grads.pivot(index="step", columns="block", values="value")
        ratio = float(np.log(wide[wide.columns.min()] / wide[wide.columns.max()]).mean())
    batch = run[(run["metric"] == "batch_loss") & (run["step"] <= train_steps)].sort_values("step")["value"]
    massive = run[(run["metric"] == "massive_ratio") & (run["step"] <= train_steps)]["value"]
    return {"variance_slope": slope, "grad_log_ratio": ratio,
            "spikes": float(count_spikes(batch.to_numpy(), spike_factor, spike_window)),
            "massive_max": float(massive.max()) if len(massive) else float("nan")}


def summary_table(metrics: pd.DataFrame, norms: Mapping[str, str], train_steps: Mapping[str, int], *,
                  steps: str, spike_factor: float, spike_window: int) -> pd.DataFrame:
    """Tidy per-run summaries ``run_id, norm, seed, layer="model", metric, value`` (:data:`RUN_METRICS`).

    Args:
        metrics: tidy run metrics. norms, train_steps: run id -> ``model.norm`` / ``train.steps``
            read from the run's config (``GridResult.parameter``).
    """
    rows = []
    for (rid, seed), run in metrics.groupby(["run_id", "seed"], sort=False):
        summary = run_summary(run, int(train_steps[rid]), steps=steps, spike_factor=spike_factor,
                              spike_window=spike_window)
        rows += [{"run_id": rid, "norm": norms[rid], "seed": seed, "layer": "model", "metric": m, "value": v}
                 for m, v in summary.items()]
    return pd.DataFrame(rows, columns=["run_id", "norm", "seed", "layer", "metric", "value"])


def depth_profiles(metrics: pd.DataFrame, norms: Mapping[str, str], train_steps: Mapping[str, int], *,
                   steps: str) -> pd.DataFrame:
    """Per run and block: mean log hidden variance, log massive ratio and log block gradient norm over the steps."""
    rows = []
    for (rid, seed), run in metrics.groupby(["run_id", "seed"], sort=False):
        keep = probed_steps(run.loc[run["metric"] == "hidden_variance", "step"].to_numpy(), steps,
                            int(train_steps[rid]))
        sub = run[run["step"].isin(keep)]
        for metric in ("hidden_variance", "massive_ratio"):
            m = sub[(sub["metric"] == metric) & sub["layer"].map(lambda s: _block(s) is not None)]
            for layer, vals in m.groupby("layer"):
                rows.append({"run_id": rid, "norm": norms[rid], "seed": seed, "block": _block(layer),
                             "metric": f"log {metric}", "value": float(np.log(vals["value"]).mean())})
        for block, vals in block_grad_norms(sub[sub["metric"] == "grad_norm"]).groupby("block"):
            rows.append({"run_id": rid, "norm": norms[rid], "seed": seed, "block": int(block),
                         "metric": "log block grad_norm", "value": float(np.log(vals["value"]).mean())})
    return pd.DataFrame(rows, columns=["run_id", "norm", "seed", "block", "metric", "value"])


def one_sample_row(claim: str, values: pd.Series, name: str, expected: str, unit: str = "seeds") -> dict:
    """Verdict row from a one-sample t interval of ``values`` (one per ``unit``: seed or run) against 0.

    Yes when the 95% t interval lies on the ``expected`` side of 0 and p < 0.05, no when on the
    other side with p < 0.05, inconclusive otherwise; NaN values are dropped; n < 2 is not tested.
    """
    x = values.dropna().to_numpy(np.float64)
    n = len(x)
    rule = (f"yes when the 95% t interval across {unit} lies {'above' if expected == 'positive' else 'below'} 0 "
            "and p < 0.05 (one-sample t-test); no when on the other side; inconclusive otherwise")
    if n < 2:
        return {"claim": claim, "source": SOURCE, "measured": f"{name}: {n} run(s)", "n": n,
                "reproduced": NOT_TESTED, "rule": rule}
    mean, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(n))
    half = float(sps.t.ppf(0.975, n - 1)) * se
    p = float(sps.ttest_1samp(x, 0.0).pvalue) if se > 0 else float("nan")
    result = pd.Series({"estimate": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n, "pvalue": p,
                        "method": "one-sample t"})
    return {**verdict_row(claim, SOURCE, result, name, expected), "rule": rule}


def _find(tests: pd.DataFrame, metric: str, contrast: str) -> pd.Series | None:
    hit = tests[(tests["metric"] == metric) & (tests["contrast"] == contrast)] if len(tests) else tests
    return hit.iloc[0] if len(hit) else None


def _contrast_row(claim: str, tests: pd.DataFrame, metric: str, contrast: str, name: str, expected: str) -> dict:
    row = _find(tests, metric, contrast)
    if row is None:
        return {"claim": claim, "source": SOURCE, "measured": f"no paired {contrast} data", "n": 0,
                "reproduced": NOT_TESTED}
    return verdict_row(claim, SOURCE, row, name, expected)


def norm_tests(summary: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """Paired (by seed) pre − peri and post − peri of every run summary, Holm over the table."""
    sub = summary[summary["metric"].isin(["variance_slope", "grad_log_ratio", "spikes"])]
    if sub.empty or sub["norm"].nunique() < 2 or "peri" not in set(sub["norm"]):
        return compare_conditions(sub.iloc[0:0].assign(norm=pd.Series(dtype=str)), "norm", n_boot=n_boot)
    return compare_conditions(sub, "norm", baseline="peri", n_boot=n_boot)


def balance_row(slope_row: dict, grad_row: dict) -> dict:
    """The row "Peri-LN keeps both balanced" from the two paired-contrast rows.

    Yes when both read yes, partly when one does, no when one reads no and the other not yes,
    inconclusive otherwise, not tested when either lacks data.
    """
    outcomes = (slope_row["reproduced"], grad_row["reproduced"])
    if NOT_TESTED in outcomes:
        verdict = NOT_TESTED
    elif outcomes == ("yes", "yes"):
        verdict = "yes"
    elif "yes" in outcomes:
        verdict = "partly"
    elif "no" in outcomes:
        verdict = "no"
    else:
        verdict = "inconclusive"
    return {"claim": "Peri-LN keeps both balanced (less depth growth than Pre-LN and less early-gradient "
                     "shrinkage than Post-LN)", "source": SOURCE,
            "measured": f"{slope_row['measured']}; {grad_row['measured']}", "n": min(slope_row["n"], grad_row["n"]),
            "reproduced": verdict, "power": "" if verdict != "inconclusive" else "see the two rows above",
            "rule": "yes when both paired contrasts read yes; partly when one does; no when one reads no and the "
                    "other not yes; inconclusive otherwise"}


def claim15_rows() -> list[dict]:
    """The rows of claim 15 when the caller gives none (n = 0: not tested), with the reason."""
    reason = ("not run: no claim-15 rows were given (the arm source and its adapter stage, "
              "analysis_lib.studies.inflection_layers)")
    return [{"claim": c, "source": INFLECTION_SOURCE, "measured": reason, "n": 0, "reproduced": NOT_TESTED}
            for c in ("Adapting a too-briefly or too-long trained source gives inflection layers (saturated "
                      "attention, steep drop of the activation gradient)",
                      "An adapter at the inflection layers helps the over-trained source more")]


def verdict_rows(summary: pd.DataFrame, tests: pd.DataFrame, *, massive_bar: float,
                 claim15: Sequence[dict] | None = None) -> list[dict]:
    """Every verdict row of the study by the rules of the module docstring.

    ``claim15``: the rows of claim 15 (:func:`analysis_lib.studies.inflection_layers.verdict_rows`);
    None gives :func:`claim15_rows` (not tested).
    """
    by = lambda norm, metric: summary[(summary["norm"] == norm) & (summary["metric"] == metric)]["value"]  # noqa: E731
    slope = _contrast_row("Peri-LN: hidden-state variance grows less with depth than under Pre-LN", tests,
                          "variance_slope", "pre - peri", "Δ slope of log Var per block", "positive")
    grad = _contrast_row("Peri-LN: early-layer gradients shrink less than under Post-LN", tests,
                         "grad_log_ratio", "post - peri", "Δ log(‖g_first‖/‖g_last‖)", "negative")
    massive = summary[summary["metric"] == "massive_max"].dropna(subset=["value"])
    largest = f"{massive['value'].max():.3g}" if len(massive) else "nan"
    return [one_sample_row("With Pre-LN the variance of the hidden states grows with depth",
                           by("pre", "variance_slope"), "slope of log Var(h_l) per block", "positive"),
            one_sample_row("With Post-LN the gradients of early layers shrink",
                           by("post", "grad_log_ratio"), "log(‖g_first‖/‖g_last‖)", "negative"),
            slope, grad, balance_row(slope, grad),
            _contrast_row("Fewer loss spikes with Peri-LN than with Pre-LN", tests, "spikes", "pre - peri",
                          "Δ spikes", "positive"),
            _contrast_row("Fewer loss spikes with Peri-LN than with Post-LN", tests, "spikes", "post - peri",
                          "Δ spikes", "positive"),
            {"claim": "Massive activations appear at this size", "source": MASSIVE_SOURCE,
             "measured": f"{int((massive['value'] >= massive_bar).sum())} of {len(massive)} runs reach "
                         f"max|h|/median|h| ≥ {massive_bar:g}; largest ratio {largest}",
             "n": len(massive), "reproduced": share_verdict(massive["value"] >= massive_bar),
             "rule": f"yes when every run's largest block ratio reaches {massive_bar:g}, partly when some do, no "
                     "when none"},
            *(claim15_rows() if claim15 is None else claim15)]


# The free choices a fair reader could make differently: which probed steps the per-layer summaries
# average over, and what counts as a loss spike (the factor over the running median, its window).
ALTERNATIVES = {"steps": ("all", "last"), "spike_factor": (1.5, 3.0), "spike_window": (5, 20)}


def robust_verdict_rows(metrics: pd.DataFrame, norms, train_steps, *, steps: str, spike_factor: float,
                        spike_window: int, massive_bar: float, n_boot: int,
                        claim15: Sequence[dict] | None = None) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` under the protocol, each no / partly with its robustness, and the sensitivity table.

    ``metrics``: the runs of the ``norm`` arm. ``claim15``: as for :func:`verdict_rows` (no choice here
    enters them).
    """
    def evaluate(setting: dict) -> list[dict]:
        summary = summary_table(metrics, norms, train_steps, steps=setting["steps"],
                                spike_factor=setting["spike_factor"], spike_window=setting["spike_window"])
        return verdict_rows(summary, norm_tests(summary, n_boot=n_boot), massive_bar=massive_bar, claim15=claim15)

    protocol = {"steps": steps, "spike_factor": spike_factor, "spike_window": spike_window}
    choices = {"steps": [steps, *[s for s in ALTERNATIVES["steps"] if s != steps]],
               **with_alternatives(protocol, {k: v for k, v in ALTERNATIVES.items() if k != "steps"})}
    return decide(evaluate, choices, protocol)


def plot_depth_profiles(profiles: pd.DataFrame, hue: str = "norm", label: str = "{}-LN") -> plt.Figure:
    """One panel per metric: the mean over seeds per block, one line per ``hue`` level, thin lines per seed."""
    metrics = list(dict.fromkeys(profiles["metric"]))
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4.2 * max(len(metrics), 1), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = profiles[profiles["metric"] == metric]
        for i, (norm, d) in enumerate(sub.groupby(hue, sort=True)):
            color = f"C{i}"
            for _, run in d.groupby("seed"):
                ax.plot(run["block"], run["value"], color=color, alpha=0.3, lw=0.8)
            mean = d.groupby("block")["value"].mean()
            ax.plot(mean.index, mean.values, color=color, lw=2, marker="o", label=label.format(norm))
        ax.set_xlabel("block l")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_losses(metrics: pd.DataFrame, norms: Mapping[str, str]) -> plt.Figure:
    """Mini-batch loss over pre-training, one panel per placement, one line per seed (log scale)."""
    sub = metrics[metrics["metric"] == "batch_loss"]
    order = [n for n in NORMS if n in set(dict(norms).values())]
    fig, axes = plt.subplots(1, max(len(order), 1), figsize=(4 * max(len(order), 1), 3), squeeze=False, sharey=True)
    for ax, norm in zip(axes[0], order):
        for rid, run in sub[sub["run_id"].map(dict(norms)) == norm].groupby("run_id"):
            ax.plot(run["step"], run["value"], lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{norm}-LN")
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("mini-batch loss")
    fig.tight_layout()
    return fig
