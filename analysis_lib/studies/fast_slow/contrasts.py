"""Study 02's tests: paired contrasts, cross-layer spreads, AUROC and effect sizes of gradient spectra.

Input: the tidy per-example spectra of :func:`analysis_lib.studies.fast_slow.protocol.spectra_table`
(``run_id, seed, checkpoint, condition, reduction, example, layer, projection, statistic, value``).

The replicate is the seed. Problems within one seed share a model, and the same problems recur in
every seed, so they are neither independent nor nested; every contrast therefore first averages
over problems within a seed (paired by problem: the same problems in every condition) and then
tests across seeds with a paired t-test (:func:`analysis_lib.stats.compare.compare_conditions`), Holm-
adjusted within each family of per-matrix or per-projection tests. We prefer this to a MixedLM with
seed as random intercept: with three to five seeds its Wald z-interval ignores that the seed
variance is estimated from a handful of values (anti-conservative), and the crossed seed × problem
structure is not what statsmodels' MixedLM fits. Headline contrasts summarise all matrices at once
as the mean over matrices of log(statistic): a difference of those is the log of the geometric-
mean ratio, a scale-free "how many times larger" that one matrix with large values cannot dominate.

Per-example separations (AUROC, paired Cohen's d_z) are computed within each seed over problems and
averaged over seeds; their CIs come from a two-level bootstrap (seeds, then problems within each
seed: :func:`analysis_lib.stats.hierarchical.hierarchical_bootstrap`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...gradients.noise import noise_profile
from ...gradients.spread import cross_layer_mad
from ...layers import layer_and_projection
from ...stats.compare import compare_conditions
from ...stats.hierarchical import auroc, hierarchical_bootstrap, paired_dz
from ...stats.results import result_table
from .protocol import CHECKPOINTS

RUN_KEYS = ["run_id", "seed", "checkpoint", "condition", "reduction"]


def seed_means(spectra: pd.DataFrame) -> pd.DataFrame:
    """Mean over problems of every statistic of every matrix, per run, checkpoint, condition and reduction."""
    keys = [*RUN_KEYS, "layer", "projection", "statistic"]
    return spectra.groupby(keys, sort=False, observed=True)["value"].mean().reset_index()


def spread_table(means: pd.DataFrame) -> pd.DataFrame:
    """Cross-layer MAD of each seed's mean profile (:func:`analysis_lib.gradients.spread.cross_layer_mad`).

    Returns:
        ``run_id, seed, checkpoint, condition, reduction, projection, statistic, segment, measure,
        value`` with ``measure`` in ``mad`` and ``relative_mad`` (divided by the layer mean) and
        ``segment`` in all / early / middle / late.
    """
    if means.empty:  # no comparable model (every run diverged or none learned)
        return pd.DataFrame(columns=[*RUN_KEYS, "projection", "statistic", "segment", "measure", "value"])
    keyed = means.assign(example=means.groupby(RUN_KEYS, sort=False).ngroup())
    keys = keyed[[*RUN_KEYS, "example"]].drop_duplicates()
    spread = cross_layer_mad(keyed[["example", "layer", "projection", "statistic", "value"]])
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
    return pd.concat(frames, ignore_index=True) if frames else result_table([])


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
    index = ["run_id", "seed", "checkpoint", "metric"]
    wide = profile.pivot_table(index=index, columns="condition", values="value")
    if a not in wide or b not in wide:  # no comparable model
        return pd.DataFrame(columns=[*index, "value"])
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
    :data:`analysis_lib.stats.results.RESULT_COLUMNS`: ``estimate`` and ``effect_size`` the mean over
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
    return result_table(rows)


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
    return result_table(rows)


def find(table: pd.DataFrame, metric: str, contrast: str) -> pd.Series | None:
    """The row of a result table with this metric and contrast, or None."""
    hit = table[(table["metric"] == metric) & (table["contrast"] == contrast)]
    return None if hit.empty else hit.iloc[0]


def block_noise_profile(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-matrix gradient SNR of the transformer's blocks over training (claim 4, descriptive).

    :func:`analysis_lib.gradients.noise.noise_profile` (ratio of means over seeds) of the block
    matrices, with each layer split into its block and projection.

    Returns:
        ``step, layer, projection, snr, n``: ``layer`` is the block (``blocks.0``), ``projection``
        one of q, k, v, o, up, down; empty when the runs did not record the probe.
    """
    profile = noise_profile(metrics)
    profile = profile[profile["layer"].str.startswith("blocks.")]
    if profile.empty:
        return pd.DataFrame(columns=["step", "layer", "projection", "snr", "n"])
    parts = [layer_and_projection(layer) for layer in profile["layer"]]
    return pd.DataFrame({"step": profile["step"].to_numpy(), "layer": [b for b, _ in parts],
                         "projection": [p for _, p in parts], "snr": profile["snr"].to_numpy(),
                         "n": profile["n"].to_numpy()})
