"""Run-to-run variance of test accuracy against the binomial prediction from per-example correctness.

k runs (seeds) of one training recipe are evaluated on the same n test examples; c_si = 1 when run
s classifies example i correctly. Run s's accuracy is A_s = (1/n) Σ_i c_si. If each example is
right or wrong independently of the others across runs, c_si ~ Bernoulli(p_i) independent over i,
and

    Var(A_s) = Σ_i p_i (1 − p_i) / n²

(Jordan, "Calibrated Chaos: Variance Between Runs of Neural Network Training is Harmless and
Inevitable", 2023). We compare

- observed: the sample variance of A_1..A_k (ddof = 1);
- predicted: Σ_i v_i / n², with v_i the sample variance (ddof = 1) of c_1i..c_ki, i.e.
  p̂_i (1 − p̂_i) · k/(k − 1) where p̂_i is example i's correctness rate; the factor k/(k − 1) makes
  it unbiased, since E[p̂(1 − p̂)] = p(1 − p)(k − 1)/k.

The ratio observed / predicted = Σ_ij Ĉ_ij / Σ_i Ĉ_ii (Ĉ the sample covariance of the columns of
c) is about 1 when errors are independent across examples, above 1 when runs differ as a whole
(some runs are better on many examples at once), below 1 when they compensate.

Confidence interval of the ratio, ``method="chi2"``: the predicted variance is treated as known
(it averages n examples and is far more precise than the observed one) and A_s as normal (a sum
over many examples), so (k − 1)·observed/Var ~ χ²_{k−1}: [(k−1)R/χ²_{1−a/2}, (k−1)R/χ²_{a/2}].
``method="bootstrap"``: percentile interval over resamples of the seeds, both variances
recomputed on each resample (tends to be too narrow for k of a few dozen).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

VARIANCE_COLUMNS = ["n_seeds", "n_examples", "mean_acc", "observed_var", "predicted_var", "ratio",
                    "ci_low", "ci_high", "method"]
METHODS = ("chi2", "bootstrap")


def _variances(counts: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observed and predicted variance for seed resamples given as counts.

    Args:
        counts: (B, k) how often each seed occurs in each resample (rows sum to k).
        correct: (k, n) 0/1 floats.

    Returns:
        two (B,) arrays; a resample is the multiset of seeds its counts describe.
    """
    k, n = correct.shape
    acc = correct.mean(axis=1)  # (k,)
    acc_mean = counts @ acc / k  # (B,)
    observed = (counts @ acc**2 - k * acc_mean**2) / (k - 1)
    hits = counts @ correct  # (B, n): Σ_s w_s c_si (c² = c for 0/1)
    predicted = (hits - hits**2 / k).sum(axis=1) / ((k - 1) * n**2)
    return observed, predicted


def accuracy_variance(correct, *, ci: float = 0.95, method: str = "chi2", n_boot: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """Between-seed variance of accuracy, its binomial prediction and their ratio with a CI.

    Args:
        correct: (k, n) 0/1 or boolean array-like (a DataFrame from
            :func:`analysis_lib.training.evaluation.per_example_correctness` works), k >= 2 runs × n examples.
        ci: coverage of the interval.
        method: ``"chi2"`` or ``"bootstrap"`` (see the module docstring).
        n_boot, seed: resamples and ``np.random.default_rng`` seed of the bootstrap.

    Returns:
        One-row DataFrame with :data:`VARIANCE_COLUMNS`; the ratio and interval are NaN when
        every example has the same outcome in every run (nothing varies).
    """
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 2 or c.shape[1] < 1 or not np.isin(c, (0.0, 1.0)).all():
        raise ValueError(f"invalid argument correct of shape {c.shape}: need a (k >= 2, n >= 1) 0/1 array")
    if method not in METHODS:
        raise ValueError(f"invalid argument method={method!r}: must be one of {METHODS}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"invalid argument ci={ci!r}: must lie strictly between 0 and 1")
    k, n = c.shape
    observed, predicted = (v[0] for v in _variances(np.ones((1, k)), c))
    ratio = observed / predicted if predicted > 0 else np.nan
    tail = (1.0 - ci) / 2.0
    if np.isnan(ratio):
        low = high = np.nan
    elif method == "chi2":
        low = (k - 1) * ratio / sps.chi2.ppf(1.0 - tail, k - 1)
        high = (k - 1) * ratio / sps.chi2.ppf(tail, k - 1)
    else:
        idx = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
        counts = np.zeros((n_boot, k))
        np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
        obs_b, pred_b = _variances(counts, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = np.where(pred_b > 0, obs_b / pred_b, np.nan)
        low, high = np.nanquantile(ratios, [tail, 1.0 - tail])
    return pd.DataFrame([{"n_seeds": k, "n_examples": n, "mean_acc": c.mean(), "observed_var": observed,
                          "predicted_var": predicted, "ratio": ratio, "ci_low": float(low),
                          "ci_high": float(high), "method": method}], columns=VARIANCE_COLUMNS)
