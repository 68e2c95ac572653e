"""Hessian spectra: the exact spectrum of small models, SLQ nodes of larger ones, bulk and outliers.

Read as a bulk near zero plus outliers (the picture of Sagun, Evci, Güney, Dauphin & Bottou 2018,
"Empirical Analysis of the Hessian of Over-Parametrized Neural Networks").

Both kinds of spectrum share one schema, SPECTRUM_COLUMNS = ``step, method, probe, eigenvalue,
weight``: an exact spectrum is one "probe" whose n eigenvalues each weigh 1/n; an SLQ spectrum has
one set of quadrature nodes and weights per probe (see :mod:`analysis_lib.curvature.density`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .density import slq_nodes
from .hessian import HessianOperator

SPECTRUM_COLUMNS = ["step", "method", "probe", "eigenvalue", "weight"]


def spectrum_table(op: HessianOperator, step: int, *, exact_max_dim: int = 3000, slq_probes: int = 4,
                   slq_steps: int = 80, seed: int = 0) -> pd.DataFrame:
    """The Hessian spectrum at one step, as a table with columns SPECTRUM_COLUMNS.

    Exact (dense eigvalsh) when ``op.dim <= exact_max_dim``, otherwise SLQ nodes and weights.
    """
    if op.dim <= exact_max_dim:
        eigs = torch.linalg.eigvalsh(op.dense()).numpy()
        return pd.DataFrame({"step": step, "method": "exact", "probe": 0, "eigenvalue": eigs,
                             "weight": 1.0 / len(eigs)})[SPECTRUM_COLUMNS]
    nodes = slq_nodes(op.matvec, op.dim, n_probes=slq_probes, steps=slq_steps, seed=seed)
    return nodes.rename(columns={"node": "eigenvalue"}).assign(step=step, method="slq")[SPECTRUM_COLUMNS]


def count_outliers(eigenvalues: np.ndarray, max_outliers: int) -> int:
    """Number of outliers by the largest gap in log scale among the top ``max_outliers + 1``.

    The positive eigenvalues are sorted in decreasing order; the count is the i (1 ≤ i ≤
    max_outliers) that maximises log(λ_i / λ_{i+1}), i.e. where the spectrum drops most steeply
    into the bulk. ``max_outliers`` should be well above the expected count (e.g. 2·C + 2).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    lam = lam[lam > 0][: max_outliers + 1]
    if len(lam) < 2:
        return 0
    gaps = np.log(lam[:-1] / lam[1:])
    return int(np.argmax(gaps) + 1)


def bulk_edge(eigenvalues: np.ndarray, n_outliers: int, quantile: float = 0.99) -> float:
    """Width of the bulk: the ``quantile`` of |λ| over the eigenvalues left after the outliers."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    return float(np.quantile(np.abs(lam[n_outliers:]), quantile))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of a weighted sample (weights need not sum to 1)."""
    order = np.argsort(values)
    v, w = np.asarray(values)[order], np.asarray(weights)[order]
    cdf = np.cumsum(w) / w.sum()
    return float(v[min(np.searchsorted(cdf, q), len(v) - 1)])


def spectrum_summary(spectra: pd.DataFrame, n_classes: pd.Series | dict, *, max_outliers_factor: int = 2,
                     bulk_quantile: float = 0.9) -> pd.DataFrame:
    """Per run and step, tidy summary rows of its spectrum.

    Metrics: ``n_outliers`` (exact spectra only), ``lambda_max``, ``bulk_width``, ``n_classes``
    and ``exact`` (1 for an exact spectrum, 0 for SLQ).

    Args:
        spectra: labelled spectrum tables (``run_id, <conditions>, seed`` + SPECTRUM_COLUMNS).
        n_classes: number of classes per run_id; the outlier search looks at the top
            ``max_outliers_factor``·C + 2 eigenvalues.
        bulk_quantile: the bulk width is this weighted quantile of |λ|; outliers carry weight
            ≤ C/dim, so it measures the bulk for exact and SLQ spectra alike.
    """
    id_cols = [c for c in spectra.columns if c not in ("method", "probe", "eigenvalue", "weight")]
    rows = []
    for key, sub in spectra.groupby(id_cols, sort=False, dropna=False):
        ids = dict(zip(id_cols, key))
        lam, w = sub["eigenvalue"].to_numpy(), sub["weight"].to_numpy()
        exact = (sub["method"] == "exact").all()
        c = int(n_classes[ids["run_id"]])
        values = {"lambda_max": lam.max(), "bulk_width": weighted_quantile(np.abs(lam), w, bulk_quantile),
                  "n_outliers": count_outliers(lam, max_outliers_factor * c + 2) if exact else np.nan,
                  "n_classes": c, "exact": float(exact)}
        rows += [{**ids, "layer": "model", "metric": m, "value": v} for m, v in values.items()]
    return pd.DataFrame(rows)


def density_table(spectra: pd.DataFrame, *, points: int = 400, sigma: float = 0.02) -> pd.DataFrame:
    """Smoothed spectral density per run and step, averaged over SLQ probes.

    The grid is symmetric-log spaced over the observed range, and each eigenvalue is a Gaussian
    whose width is ``sigma`` times max(|λ|, bulk scale): narrow near zero, wide for outliers, so
    both the bulk and the outliers stay visible. Returns ``<ids>, step, eigenvalue, density``.
    """
    id_cols = [c for c in spectra.columns if c not in ("method", "probe", "eigenvalue", "weight")]
    lo, hi = spectra["eigenvalue"].min(), spectra["eigenvalue"].max()
    scale = max(np.quantile(np.abs(spectra["eigenvalue"]), 0.5), 1e-12)
    grid = np.sinh(np.linspace(np.arcsinh(lo / scale), np.arcsinh(hi / scale), points)) * scale
    frames = []
    for key, sub in spectra.groupby(id_cols, sort=False, dropna=False):
        lam, w = sub["eigenvalue"].to_numpy(), sub["weight"].to_numpy() / sub["probe"].nunique()
        width = sigma * np.maximum(np.abs(lam), scale)
        dens = (np.exp(-0.5 * ((grid[:, None] - lam[None, :]) / width) ** 2) / (width * np.sqrt(2 * np.pi))) @ w
        frames.append(pd.DataFrame({**dict(zip(id_cols, key)), "eigenvalue": grid, "density": dens}))
    return pd.concat(frames, ignore_index=True)
