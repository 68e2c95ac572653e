"""Study 06's analyses of pairs of runs as cached tasks, one task per pair.

Interpolation between two final minima and the distance between two trajectories, through
:mod:`analysis_lib.runs.derived`. Each task reads its two runs from the store and returns the table the direct functions
(:func:`~analysis_lib.landscape.interpolation.pair_interpolations`,
:func:`~analysis_lib.trajectories.distances.pair_distances`) give for that pair; the pair's labels
(``pair``, ``perturb_step``, ``seed``) are joined afterwards, so a stored table serves any
labelling of the same two runs.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..runs.derived import Analysis, derive
from ..runs.grid import GridResult

INTERPOLATION = Analysis("pair_interpolation", "analysis_lib.studies.run_to_run_pairs:interpolation_task", version=1)
DISTANCES = Analysis("pair_distances", "analysis_lib.studies.run_to_run_pairs:distance_task", version=1)
KEYS = ["run_id", "run_id_b"]


def interpolation_task(runs: GridResult, run_ids: Sequence[str], *, alphas: Sequence[float],
                       matching: Sequence[bool] = (False, True), **kwargs) -> pd.DataFrame:
    """Interpolation curves (train and test split) between the final weights of the pair ``run_ids``."""
    from ..landscape.interpolation import pair_interpolations

    config = runs.configs[run_ids[0]]
    dataset = config.dataset()
    splits = {"train": (dataset.x_train, dataset.y_train), "test": (dataset.x_test, dataset.y_test)}
    states = {rid: runs.store.load_checkpoint(rid, "final") for rid in run_ids}
    pair = pd.DataFrame([dict(zip(KEYS, run_ids))])
    curves, _ = pair_interpolations(pair, states, config.build_model(), splits, alphas=alphas, matching=matching,
                                    **kwargs)
    return curves


def distance_task(runs: GridResult, run_ids: Sequence[str]) -> pd.DataFrame:
    """Distances between the stored trajectories of the pair ``run_ids``, whole model and per layer."""
    from ..layers import layer_sizes
    from ..trajectories.distances import pair_distances

    trajectories = {rid: runs.store.load_checkpoint(rid, "trajectory") for rid in run_ids}
    pair = pd.DataFrame([dict(zip(KEYS, run_ids))])
    return pair_distances(pair, trajectories, layer_sizes(runs.configs[run_ids[0]].build_model()))


def _groups(pairs: pd.DataFrame) -> list[list[str]]:
    return [list(k) for k in pairs[KEYS].drop_duplicates().itertuples(index=False)]


def cached_pair_interpolations(result: GridResult, pairs: pd.DataFrame, *, alphas: Sequence[float], executor=None,
                               progress: bool | None = None, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(curves, barriers)`` of every pair, as ``pair_interpolations`` gives them; each pair computed once.

    Args:
        result: the study's grid. pairs: :func:`analysis_lib.studies.run_to_run.twin_pairs`.
        alphas: points on the line; kwargs: passed on (``batchnorm``, ``matching``, ...), JSON values.
    """
    from ..landscape.interpolation import interpolation_barriers, pair_interpolations

    if pairs.empty:
        return pair_interpolations(pairs, {}, None, {}, alphas=alphas, **kwargs)
    curves = derive(INTERPOLATION, result, _groups(pairs), params={"alphas": [float(a) for a in alphas], **kwargs},
                    executor=executor, progress=progress, labels=False)
    labels = pairs.drop_duplicates(KEYS)
    return curves.merge(labels, on=KEYS), interpolation_barriers(curves).merge(labels, on=KEYS)


def cached_pair_distances(result: GridResult, pairs: pd.DataFrame, *, executor=None,
                          progress: bool | None = None) -> pd.DataFrame:
    """``pair_distances`` of every pair (pair columns, then ``step, layer, metric, value``); each pair once."""
    columns = [*pairs.columns, "step", "layer", "metric", "value"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    table = derive(DISTANCES, result, _groups(pairs), executor=executor, progress=progress, labels=False)
    return pairs.merge(table, on=KEYS)[columns]
