"""Divergence as survival data: Kaplan–Meier curves per arm and the log-rank test between two arms.

Each run is one unit: its time is the step at which it diverged (its event), or, for a run that
finished, its last step (right-censored: it had not diverged by then). A diverged run is data,
never dropped. Ties follow the usual convention: runs censored at step t were still at risk at t.

- Kaplan–Meier (Kaplan & Meier 1958): S(t) = Π_{t_i <= t} (1 − d_i / n_i) over the distinct
  event steps t_i, with d_i divergences among the n_i runs still at risk. Greenwood's variance
  Var S = S² Σ d_i / (n_i (n_i − d_i)); the interval is the log(−log) ("exponential Greenwood")
  one, exp(−exp(log(−log S) ± z √v)) with v = Σ d_i / (n_i (n_i − d_i)) / (log S)², which stays
  inside [0, 1] (Kalbfleisch & Prentice 1980; the default of lifelines and of ``scipy.stats.ecdf``'s
  ``"log-log"`` interval). Before the first divergence the interval is [1, 1]; once S = 0 it is [0, 0].
- Log-rank (Mantel 1966; Peto & Peto 1972): at each distinct event step, the divergences of the
  treatment arm against their expectation n_1 d / n under equal hazards; U = Σ (O − E),
  V = Σ n_1 n_0 d (n − d) / (n² (n − 1)), statistic U² / V ~ χ²_1. The estimate is Peto's
  hazard ratio exp(U / V) with interval exp(U / V ± z / √V).

The computations are written out here in NumPy/SciPy and tested against ``scipy.stats.ecdf`` and
``scipy.stats.logrank`` and hand computations (lifelines, the usual tool, needs pandas < 3).

Input: a tidy table with one row per run and columns ``arm``, ``diverged`` (bool),
``diverged_step`` (the step of the divergence; ignored for runs that did not diverge) and the
last step of each run (a column, or one number for all runs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from .results import bad_argument, check_columns, empty_row, finish_table

CURVE_COLUMNS = ["arm", "step", "at_risk", "events", "censored", "survival", "ci_low", "ci_high"]


def divergence_times(runs: pd.DataFrame, last_step: str | int = "last_step") -> pd.DataFrame:
    """``arm, time, event`` per run: the divergence step (event True) or the last step (censored).

    Args:
        runs: one row per run with ``arm``, ``diverged``, ``diverged_step`` and, when ``last_step``
            names a column, that column.
        last_step: the column holding each run's last step, or one integer >= 1 for all runs.

    Returns:
        A frame with columns ``arm`` (as given), ``time`` (float64) and ``event`` (bool), in row order.

    Raises:
        ValueError: a missing column, a non-boolean ``diverged``, a diverged run without a finite
            step >= 0 or with one after its last step, or a bad ``last_step``.
    """
    check_columns(runs, **{f"runs[{c!r}]": c for c in ("arm", "diverged", "diverged_step")})
    if isinstance(last_step, str):
        check_columns(runs, last_step=last_step)
        last = runs[last_step].to_numpy(np.float64)
    elif isinstance(last_step, (int, np.integer)) and not isinstance(last_step, bool) and last_step >= 1:
        last = np.full(len(runs), float(last_step))
    else:
        raise bad_argument("last_step", last_step, "must be a column name or an integer >= 1")
    if not np.isin(runs["diverged"].to_numpy(), [True, False]).all():
        raise bad_argument("runs['diverged']", sorted(set(runs["diverged"].tolist()), key=str), "must be True or False")
    event = runs["diverged"].to_numpy(bool)
    step = runs["diverged_step"].to_numpy(np.float64)
    if not np.isfinite(last).all() or (last < 1).any():
        raise bad_argument("last_step", last[~np.isfinite(last) | (last < 1)][:3].tolist(), "must be finite and >= 1")
    bad = event & (~np.isfinite(step) | (step < 0) | (step > last))
    if bad.any():
        raise bad_argument("runs['diverged_step']", step[bad][:3].tolist(), "a diverged run needs a finite step "
                           "in [0, its last step]")
    return pd.DataFrame({"arm": runs["arm"].to_numpy(), "time": np.where(event, step, last), "event": event})


def _check_ci(ci: float) -> float:
    if not 0.0 < ci < 1.0:
        raise bad_argument("ci", ci, "must lie strictly between 0 and 1")
    return float(sps.norm.ppf(0.5 + ci / 2.0))


def _km(time: np.ndarray, event: np.ndarray, z: float) -> pd.DataFrame:
    """Kaplan–Meier rows of one arm at step 0 and every distinct time (event or censoring)."""
    steps = np.unique(time)
    at_risk = np.array([(time >= t).sum() for t in steps])
    events = np.array([(event & (time == t)).sum() for t in steps])
    censored = np.array([(~event & (time == t)).sum() for t in steps])
    survival = np.cumprod(1.0 - events / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(events > 0, events / (at_risk * (at_risk - events)), 0.0))
        log_s = np.log(survival)
        spread = z * np.sqrt(greenwood / log_s**2)
        centre = np.log(-log_s)
        low, high = np.exp(-np.exp(centre + spread)), np.exp(-np.exp(centre - spread))
    low = np.where(survival == 1.0, 1.0, np.where(survival == 0.0, 0.0, low))
    high = np.where(survival == 1.0, 1.0, np.where(survival == 0.0, 0.0, high))
    start = pd.DataFrame({"step": [0.0], "at_risk": [len(time)], "events": [0], "censored": [0],
                          "survival": [1.0], "ci_low": [1.0], "ci_high": [1.0]})
    rows = pd.DataFrame({"step": steps, "at_risk": at_risk, "events": events, "censored": censored,
                         "survival": survival, "ci_low": low, "ci_high": high})
    if len(steps) and steps[0] == 0.0:  # divergence at step 0 (a non-finite loss on the first update)
        return rows
    return pd.concat([start, rows], ignore_index=True)


def kaplan_meier(runs: pd.DataFrame, last_step: str | int = "last_step", *, ci: float = 0.95) -> pd.DataFrame:
    """Kaplan–Meier curve of "not yet diverged" per arm, with log(−log) Greenwood intervals.

    Args:
        runs, last_step: as in :func:`divergence_times`.
        ci: coverage of the pointwise interval.

    Returns:
        :data:`CURVE_COLUMNS`, per arm (in order of appearance) one row at step 0 and one at every
        distinct step at which a run of the arm diverged or ended; ``survival`` holds on until the
        next row (a step function, right-continuous).

    Raises:
        ValueError: what :func:`divergence_times` refuses, an empty table, or ``ci`` not in (0, 1).

    Reference: Kaplan & Meier (1958); Greenwood (1926); Kalbfleisch & Prentice (1980), section 1.3.
    """
    z = _check_ci(ci)
    times = divergence_times(runs, last_step)
    if times.empty:
        raise bad_argument("runs", "empty table", "needs at least one run")
    parts = []
    for arm, part in times.groupby("arm", sort=False):
        curve = _km(part["time"].to_numpy(), part["event"].to_numpy(), z)
        parts.append(curve.assign(arm=arm))
    out = pd.concat(parts, ignore_index=True)[CURVE_COLUMNS]
    return out.astype({"at_risk": np.int64, "events": np.int64, "censored": np.int64})


def logrank_test(runs: pd.DataFrame, treatment, baseline, last_step: str | int = "last_step", *,
                 ci: float = 0.95, adjust: str | None = None) -> pd.DataFrame:
    """Log-rank test of equal divergence hazards in two arms, with Peto's hazard-ratio estimate.

    Args:
        runs, last_step: as in :func:`divergence_times`.
        treatment, baseline: two values of ``runs["arm"]``; the hazard ratio is treatment / baseline
            (below 1: the treatment diverges later or less often).
        ci: coverage of the hazard-ratio interval.
        adjust: multiple-testing adjustment of ``p_adj`` (one row: none is needed).

    Returns:
        One row with :data:`~analysis_lib.stats.results.RESULT_COLUMNS`: metric ``divergence``,
        layer ``model``, contrast ``"<treatment> vs <baseline>"``, estimate the hazard ratio with
        its interval, statistic U²/V (χ²_1), its p-value, effect_size U = observed − expected
        divergences of the treatment, n the number of runs. With no divergence in either arm the
        test is undefined: estimate, statistic and p-value are NaN and the method says why.

    Raises:
        ValueError: what :func:`divergence_times` refuses, an arm not in the table, or the same arm twice.

    Reference: Mantel (1966); Peto & Peto (1972); Collett (2015), *Modelling Survival Data in Medical
    Research*, section 2.6.
    """
    z = _check_ci(ci)
    times = divergence_times(runs, last_step)
    arms = list(dict.fromkeys(times["arm"]))
    for name, arm in (("treatment", treatment), ("baseline", baseline)):
        if arm not in arms:
            raise bad_argument(name, arm, f"not an arm of runs; arms are {arms}")
    if treatment == baseline:
        raise bad_argument("treatment", treatment, "must differ from baseline")
    times = times[times["arm"].isin([treatment, baseline])]
    time, event, treated = (times["time"].to_numpy(), times["event"].to_numpy(),
                            (times["arm"] == treatment).to_numpy())
    u = v = 0.0
    for t in np.unique(time[event]):
        risk = time >= t
        n, n1 = risk.sum(), (risk & treated).sum()
        d, d1 = (event & (time == t)).sum(), (event & (time == t) & treated).sum()
        u += d1 - n1 * d / n
        if n > 1:
            v += n1 * (n - n1) * d * (n - d) / (n**2 * (n - 1))
    base = dict(metric="divergence", layer="model", contrast=f"{treatment} vs {baseline}")
    if v == 0.0:
        why = "no divergence in either arm" if not event.any() else "no information (one arm had no runs at risk)"
        return finish_table([{**base, **empty_row(f"log-rank test: undefined, {why}", n=len(time))}], adjust)
    statistic = u**2 / v
    log_hr = u / v
    row = {**base, "estimate": float(np.exp(log_hr)), "ci_low": float(np.exp(log_hr - z / np.sqrt(v))),
           "ci_high": float(np.exp(log_hr + z / np.sqrt(v))), "effect_size": float(u), "statistic": float(statistic),
           "pvalue": float(sps.chi2.sf(statistic, 1)), "method": "log-rank test, Peto hazard ratio",
           "n": len(time)}
    return finish_table([row], adjust)
