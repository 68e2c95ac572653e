"""How per-layer statistics differ across layers: the cross-layer MAD and relative differences.

For a profile s_1..s_L of one statistic over the layers of a model (in forward order), the
mean absolute difference between consecutive layers MAD = (1/(L−1)) Σ_l |s_{l+1} − s_l|, overall
and per early / middle / late third of the differences, raw and divided by the mean of s over
the layers it spans (scale-free). Used on per-example gradient spectra
(:mod:`analysis_lib.gradients.spectra`), but any tidy ``example, layer, projection, statistic,
value`` table works.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPREAD_COLUMNS = ["example", "projection", "statistic", "segment", "measure", "value"]


def difference_thirds(n_layers: int) -> dict[str, np.ndarray]:
    """Which consecutive-layer differences belong to the early / middle / late third.

    The L − 1 differences s_{l+1} − s_l (l = 0..L−2) are split into three contiguous groups with
    ``np.array_split`` (sizes differ by at most one, the earlier groups take the extra ones), so
    every third is defined from L = 4 layers on and the three thirds partition the overall MAD:
    L = 4 -> one difference each; L = 7 -> (0-1, 1-2), (2-3, 3-4), (4-5, 5-6). A third with no
    difference (L < 4) is left out.

    Returns:
        segment name (``"all"``, ``"early"``, ``"middle"``, ``"late"``) -> indices l of its differences.
    """
    pairs = np.arange(n_layers - 1)
    out = {"all": pairs}
    for name, part in zip(("early", "middle", "late"), np.array_split(pairs, 3)):
        if len(part):
            out[name] = part
    return out


def cross_layer_mad(spectra: pd.DataFrame) -> pd.DataFrame:
    """Cross-layer spread of each example's profile s_1..s_L, per projection and statistic.

    ``mad`` = (1/(L−1)) Σ_l |s_{l+1} − s_l| over consecutive layers in the order they first appear
    in ``spectra`` (forward order for :func:`gradient_spectra` output), for all layers and for each
    third of the differences (:func:`difference_thirds`); ``relative_mad`` = mad divided by the
    mean of s over the layers the segment spans (scale-free). Projections present in fewer than
    two layers have no spread and are left out.

    Args:
        spectra: tidy ``example, layer, projection, statistic, value`` (e.g. from
            :func:`gradient_spectra`, or averaged over examples with a constant ``example``).

    Returns:
        Tidy table ``example, projection, statistic, segment, measure, value``.
    """
    order = list(dict.fromkeys(spectra["layer"]))
    frames = []
    for projection, group in spectra.groupby("projection", sort=False):
        wide = group.pivot_table(index=["example", "statistic"], columns="layer", values="value",
                                 aggfunc="mean")
        wide = wide[[layer for layer in order if layer in wide.columns]]
        if wide.shape[1] < 2:
            continue
        s = wide.to_numpy()  # (examples × statistics, L)
        diffs = np.abs(np.diff(s, axis=1))  # (rows, L − 1)
        for segment, idx in difference_thirds(s.shape[1]).items():
            mad = diffs[:, idx].mean(axis=1)
            level = s[:, idx[0]: idx[-1] + 2].mean(axis=1)
            for measure, value in (("mad", mad), ("relative_mad", mad / level)):
                frame = wide.index.to_frame(index=False)
                frame["projection"], frame["segment"], frame["measure"], frame["value"] = (
                    projection, segment, measure, value)
                frames.append(frame)
    return pd.concat(frames, ignore_index=True)[SPREAD_COLUMNS]


def relative_difference(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Relative difference of condition ``a`` from condition ``b``, per group.

    Groups are all columns except ``example`` and ``value`` (e.g. layer, projection, statistic).
    ``rel_diff`` = (mean_a − mean_b) / mean_b, the ratio of condition means minus one;
    ``paired_rel_diff`` = mean over examples present in both of (a_i − b_i) / b_i (NaN when no
    example is shared). Both are positive when ``a`` is larger.

    Returns:
        One row per group: group columns, ``mean_a, mean_b, rel_diff, paired_rel_diff, n_pairs``.
    """
    keys = [c for c in a.columns if c not in ("example", "value")]
    means = (a.groupby(keys, sort=False)["value"].mean().rename("mean_a").to_frame()
             .join(b.groupby(keys, sort=False)["value"].mean().rename("mean_b"), how="inner"))
    means["rel_diff"] = (means["mean_a"] - means["mean_b"]) / means["mean_b"]
    pairs = a.merge(b, on=[*keys, "example"], suffixes=("_a", "_b"))
    pairs["ratio"] = (pairs["value_a"] - pairs["value_b"]) / pairs["value_b"]
    paired = pairs.groupby(keys, sort=False)["ratio"].agg(paired_rel_diff="mean", n_pairs="size")
    out = means.join(paired, how="left").reset_index()
    out["n_pairs"] = out["n_pairs"].fillna(0).astype(int)
    return out
