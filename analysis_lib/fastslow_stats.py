"""Tests of the fast-vs-slow-thinking study: paired contrasts, spreads, AUROC and effect sizes.

Input: the tidy per-example spectra of :func:`analysis_lib.fastslow.spectra_table`
(``run_id, seed, checkpoint, condition, reduction, example, layer, projection, statistic, value``).

The replicate is the seed. Problems within one seed share a model, and the same problems recur in
every seed, so they are neither independent nor nested; every contrast therefore first averages
over problems within a seed (paired by problem: the same problems in every condition) and then
tests across seeds with a paired t-test (:func:`analysis_lib.stats.compare_conditions`), Holm-
adjusted within each family of per-matrix or per-projection tests. We prefer this to a MixedLM with
seed as random intercept: with three to five seeds its Wald z-interval ignores that the seed
variance is estimated from a handful of values (anti-conservative), and the crossed seed × problem
structure is not what statsmodels' MixedLM fits. Headline contrasts summarise all matrices at once
as the mean over matrices of log(statistic): a difference of those is the log of the geometric-
mean ratio, a scale-free "how many times larger" that one matrix with large values cannot dominate.

Per-example separations (AUROC, paired Cohen's d_z) are computed within each seed over problems and
averaged over seeds; their CIs come from a two-level bootstrap (seeds, then problems within each
seed: :func:`hierarchical_bootstrap`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .fastslow import CHECKPOINTS
from .gradstats import layer_spread
from .stats import _as_result, compare_conditions

RUN_KEYS = ["run_id", "seed", "checkpoint", "condition", "reduction"]


def seed_means(spectra: pd.DataFrame) -> pd.DataFrame:
    """Mean over problems of every statistic of every matrix, per run, checkpoint, condition and reduction."""
    keys = [*RUN_KEYS, "layer", "projection", "statistic"]
    return spectra.groupby(keys, sort=False, observed=True)["value"].mean().reset_index()


def spread_table(means: pd.DataFrame) -> pd.DataFrame:
    """Cross-layer MAD of each seed's mean profile (:func:`analysis_lib.gradstats.layer_spread`).

    Returns:
        ``run_id, seed, checkpoint, condition, reduction, projection, statistic, segment, measure,
        value`` with ``measure`` in ``mad`` and ``relative_mad`` (divided by the layer mean) and
        ``segment`` in all / early / middle / late.
    """
    keyed = means.assign(example=means.groupby(RUN_KEYS, sort=False).ngroup())
    keys = keyed[[*RUN_KEYS, "example"]].drop_duplicates()
    spread = layer_spread(keyed[["example", "layer", "projection", "statistic", "value"]])
    return keys.merge(spread, on="example").drop(columns="example")


def log_mean(df: pd.DataFrame, over: Sequence[str], metric: str) -> pd.DataFrame:
    """Mean of log(value) over the columns ``over`` (e.g. all matrices), labelled ``metric``."""
    keys = [c for c in df.columns if c not in (*over, "value", "statistic")]
    out = df.assign(value=np.log(df["value"].astype(np.float64)))
    return out.groupby(keys, sort=False, observed=True)["value"].mean().reset_index().assign(metric=metric)


def matrix_tests(means: pd.DataFrame, a: str, b: str, statistic: str, *, n_boot: int) -> pd.DataFrame:
    """``a − b`` per matrix, paired by seed; Holm within each (checkpoint, reduction) family."""
    sub = means[means["condition"].isin([a, b]) & (means["statistic"] == statistic)]
    sub = sub.rename(columns={"statistic": "metric"})
    return _by_family(sub, b, ("metric", "layer", "projection", "checkpoint", "reduction"), n_boot)


def spread_tests(spreads: pd.DataFrame, a: str, b: str, statistic: str, *, n_boot: int) -> pd.DataFrame:
    """``a − b`` MAD per projection and segment (``layer`` = segment), Holm within each family."""
    sub = spreads[spreads["condition"].isin([a, b]) & (spreads["statistic"] == statistic)]
    sub = sub.rename(columns={"measure": "metric", "segment": "layer"})
    return _by_family(sub, b, ("metric", "layer", "projection", "checkpoint", "reduction"), n_boot)


def _by_family(df: pd.DataFrame, baseline: str, by: tuple, n_boot: int) -> pd.DataFrame:
    frames = [compare_conditions(g, "condition", baseline=baseline, by=by, n_boot=n_boot)
              for _, g in df.groupby(["checkpoint", "reduction"], sort=False) if g["condition"].nunique() == 2]
    return pd.concat(frames, ignore_index=True) if frames else _as_result([])


def summary_tests(means: pd.DataFrame, spreads: pd.DataFrame, statistic: str, *, n_boot: int) -> pd.DataFrame:
    """The headline contrasts, each a pre-specified claim (unadjusted p; per-matrix tests are Holm'd).

    Rows (``contrast`` ends in ``[checkpoint=..., reduction=...]``): fast − slow and fast −
    answer_only of the mean log ``statistic`` over matrices; fast − slow of the mean log MAD and
    relative MAD over projections (all layers); and the fast-vs-slow gap of the token-averaged
    profile between checkpoints (``base - init``, ``tuned - base``).
    """
    prof = log_mean(means[means["statistic"] == statistic], ("layer", "projection"), f"mean log {statistic}")
    spread = spreads[(spreads["statistic"] == statistic) & (spreads["segment"] == "all")]
    frames = []
    for measure, sub in spread.groupby("measure", sort=False):
        frames.append(log_mean(sub.drop(columns=["segment", "measure"]), ("projection",), f"mean log {measure}"))
    by = ("metric", "checkpoint", "reduction")
    tables = [compare_conditions(prof[prof["condition"].isin(["fast", "slow"])], "condition", baseline="slow",
                                 by=by, adjust=None, n_boot=n_boot)]
    control = prof[prof["condition"].isin(["fast", "answer_only"]) & (prof["reduction"] == "mean")]
    tables.append(compare_conditions(control, "condition", baseline="answer_only", by=by, adjust=None, n_boot=n_boot))
    for table in frames:
        tables.append(compare_conditions(table[table["condition"].isin(["fast", "slow"])], "condition",
                                         baseline="slow", by=by, adjust=None, n_boot=n_boot))
    gap = gap_table(prof[prof["reduction"] == "mean"], "fast", "slow")
    for baseline, levels in (("init", ["init", "base"]), ("base", ["base", "tuned"])):
        sub = gap[gap["checkpoint"].isin(levels)]
        if sub["checkpoint"].nunique() == 2:
            tables.append(compare_conditions(sub, "checkpoint", baseline=baseline, by=("metric",), adjust=None,
                                             n_boot=n_boot))
    return pd.concat(tables, ignore_index=True)


def gap_table(profile: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per run and checkpoint, ``a − b`` of a profile summary (one ``metric``); metric ``"a - b <metric>"``."""
    wide = profile.pivot_table(index=["run_id", "seed", "checkpoint", "metric"], columns="condition", values="value")
    out = (wide[a] - wide[b]).rename("value").reset_index()
    out["metric"] = f"{a} - {b} " + out["metric"]
    return out


def example_scores(spectra: pd.DataFrame, statistic: str, reduction: str = "mean") -> pd.DataFrame:
    """One number per example: the mean over matrices of log(``statistic``).

    Returns:
        ``run_id, seed, checkpoint, condition, example, value``.
    """
    sub = spectra[(spectra["statistic"] == statistic) & (spectra["reduction"] == reduction)]
    out = sub.assign(value=np.log(sub["value"].astype(np.float64)))
    keys = ["run_id", "seed", "checkpoint", "condition", "example"]
    return out.groupby(keys, sort=False, observed=True)["value"].mean().reset_index()


def auroc(negative, positive) -> np.ndarray:
    """Area under the ROC curve of a score that should be larger for ``positive`` examples.

    The Mann-Whitney form: the share of (negative, positive) pairs ranked correctly, ties
    counting one half. Vectorised over leading axes.

    Args:
        negative: (..., n0) scores. positive: (..., n1) scores.

    Returns:
        (...) AUROC in [0, 1]; 0.5 = no separation.
    """
    neg, pos = np.asarray(negative, dtype=np.float64), np.asarray(positive, dtype=np.float64)
    n0, n1 = neg.shape[-1], pos.shape[-1]
    ranks = sps.rankdata(np.concatenate([neg, pos], axis=-1), axis=-1)  # average ranks for ties
    return (ranks[..., n0:].sum(axis=-1) - n1 * (n1 + 1) / 2) / (n0 * n1)


def paired_dz(differences: np.ndarray) -> np.ndarray:
    """Cohen's d_z over the problem axis: (..., n, k) paired differences -> (..., k)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return differences.mean(axis=-2) / differences.std(axis=-2, ddof=1)


def hierarchical_bootstrap(groups: Sequence[np.ndarray], statistic: Callable, *, n_boot: int, ci: float = 0.95,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over groups (seeds) of a per-group statistic, with a two-level percentile bootstrap CI.

    Each replicate resamples the groups with replacement and, within each, its rows (problems,
    kept paired across columns); a statistic undefined on a resample (NaN) is ignored.

    Args:
        groups: S arrays of shape (n_s, k). statistic: maps (..., n, k) to (..., m).
        n_boot, ci, seed: replicates, coverage, seed of the ``np.random.default_rng``.

    Returns:
        (estimate (m,), ci_low (m,), ci_high (m,), per-group values (S, m)).
    """
    per_group = np.stack([statistic(np.asarray(g, dtype=np.float64)) for g in groups])  # (S, m)
    rng = np.random.default_rng(seed)
    reps = np.stack([statistic(np.asarray(g, dtype=np.float64)[rng.integers(0, len(g), (n_boot, len(g)))])
                     for g in groups])  # (S, n_boot, m)
    pick = rng.integers(0, len(groups), (n_boot, len(groups)))  # (n_boot, S)
    boot = reps[pick, np.arange(n_boot)[:, None]].mean(axis=1)  # (n_boot, m)
    alpha = (1 - ci) / 2
    low, high = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
    return per_group.mean(axis=0), low, high, per_group


def _paired_groups(scores: pd.DataFrame, checkpoint: str, columns: Sequence[str]) -> list[np.ndarray]:
    """Per seed, an (n_problems, len(columns)) array of scores, rows paired by problem."""
    sub = scores[scores["checkpoint"] == checkpoint]
    wide = sub.pivot_table(index=["seed", "example"], columns="condition", values="value")
    if not set(columns) <= set(wide.columns):
        return []
    wide = wide[list(columns)].dropna()
    return [g.to_numpy() for _, g in wide.groupby(level="seed")]


def separation_table(scores: pd.DataFrame, positives: Sequence[str], *, negative: str = "slow", n_boot: int,
                     seed: int = 0) -> pd.DataFrame:
    """AUROC of the per-example score separating ``negative`` (correct) from each positive condition.

    Direction fixed in advance: the positive (wrong-reasoning) condition should score higher
    (larger gradients). One row per checkpoint and positive, in
    :data:`analysis_lib.stats.RESULT_COLUMNS`: ``estimate`` and ``effect_size`` the mean over
    seeds of the per-seed AUROC, CI two-level bootstrap, no p-value, ``n`` seeds.
    """
    rows = []
    for checkpoint in CHECKPOINTS:
        for positive in positives:
            groups = _paired_groups(scores, checkpoint, [negative, positive])
            if not groups:
                continue
            est, low, high, _ = hierarchical_bootstrap(groups, lambda x: auroc(x[..., 0], x[..., 1])[..., None],
                                                       n_boot=n_boot, seed=seed)
            rows.append({"metric": "AUROC", "layer": "all",
                         "contrast": f"{positive} vs {negative} [checkpoint={checkpoint}]",
                         "estimate": est[0], "ci_low": low[0], "ci_high": high[0], "effect_size": est[0],
                         "statistic": np.nan, "pvalue": np.nan, "p_adj": np.nan,
                         "method": "AUROC per seed over problems, mean; bootstrap over seeds and problems",
                         "n": len(groups)})
    return _as_result(rows)


QUALITY_EFFECTS = ("d_z nuclear_norm", "d_z effective_rank", "erank minus nuclear separation")


def _quality_statistics(differences: np.ndarray) -> np.ndarray:
    """(..., n, 2) corrupted − clean differences of (nuclear, erank) -> (..., 3) :data:`QUALITY_EFFECTS`."""
    d = paired_dz(differences)  # (..., 2)
    return np.concatenate([d, (-d[..., 1] - d[..., 0])[..., None]], axis=-1)


def quality_effects(nuclear: pd.DataFrame, erank: pd.DataFrame, *, clean: str = "slow", corrupted: str = "corrupted",
                    n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Paired effect sizes of corrupted − clean for nuclear norm and effective rank, and which is larger.

    Per seed, d_z over problems of the per-example difference (:func:`example_scores`, log
    scale); averaged over seeds. The claim (Li et al. 2025): corrupted data → larger nuclear norm
    (d_z > 0) and lower effective rank (d_z < 0), the effective rank separating more robustly.
    The last row compares separations in the claimed directions: −d_z(erank) − d_z(nuclear),
    positive when effective rank separates better. CIs: two-level bootstrap, the same resamples
    for both statistics.
    """
    rows = []
    for checkpoint in CHECKPOINTS:
        nuc = _paired_groups(nuclear, checkpoint, [clean, corrupted])
        rank = _paired_groups(erank, checkpoint, [clean, corrupted])
        if not nuc or not rank:
            continue
        groups = [np.stack([n[:, 1] - n[:, 0], r[:, 1] - r[:, 0]], axis=1) for n, r in zip(nuc, rank)]
        est, low, high, _ = hierarchical_bootstrap(groups, _quality_statistics, n_boot=n_boot, seed=seed)
        for i, name in enumerate(QUALITY_EFFECTS):
            rows.append({"metric": name, "layer": "all", "contrast": f"{corrupted} - {clean} [checkpoint={checkpoint}]",
                         "estimate": est[i], "ci_low": low[i], "ci_high": high[i], "effect_size": est[i],
                         "statistic": np.nan, "pvalue": np.nan, "p_adj": np.nan,
                         "method": "paired Cohen's d_z per seed over problems, mean; bootstrap over seeds and problems",
                         "n": len(groups)})
    return _as_result(rows)


def find(table: pd.DataFrame, metric: str, contrast: str) -> pd.Series | None:
    """The row of a result table with this metric and contrast, or None."""
    hit = table[(table["metric"] == metric) & (table["contrast"] == contrast)]
    return None if hit.empty else hit.iloc[0]


def noise_profile(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-layer gradient signal-to-noise ratio over training from the ``grad_noise`` probe (claim 4).

    One mini-batch's bias-corrected signal ‖ḡ‖² − trΣ/B is noisy and can be negative, so the ratio
    is taken of means over seeds: SNR = mean(grad_signal) / mean(grad_var_trace) per step and
    matrix (:mod:`analysis_lib.gradnoise`), and likewise the noise scale trΣ/signal is its inverse.

    Returns:
        ``step, layer, projection, snr, n`` (n seeds), for every matrix of every block; empty when
        the runs did not record the probe.
    """
    sub = metrics[metrics["metric"].isin(["grad_signal", "grad_var_trace"])
                  & metrics["layer"].str.startswith("blocks.")]
    if sub.empty:
        return pd.DataFrame(columns=["step", "layer", "projection", "snr", "n"])
    wide = sub.pivot_table(index=["step", "layer", "seed"], columns="metric", values="value").reset_index()
    out = wide.groupby(["step", "layer"], sort=True).agg(
        signal=("grad_signal", "mean"), noise=("grad_var_trace", "mean"), n=("seed", "nunique")).reset_index()
    parts = out["layer"].str.split(".")
    return pd.DataFrame({"step": out["step"], "layer": parts.str[:2].str.join("."),
                         "projection": parts.str[-1], "snr": out["signal"] / out["noise"], "n": out["n"]})
