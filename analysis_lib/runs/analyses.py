"""The library's analyses of stored runs as cached tasks (see :mod:`analysis_lib.runs.derived`).

Each wrapper takes what the function it wraps takes, plus ``executor`` and ``progress``, and
returns the same table: computed once per run (or pair) and stored in the run store, so a second
render of a study reads it back, and a cluster computes the runs' analyses in parallel.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .derived import Analysis, derive
from .grid import GridResult

# Bump a version when the code it names changes what it computes.
SURFACES = Analysis("surfaces", "analysis_lib.landscape.surfaces:run_surfaces", version=1)
CURVATURE = Analysis("curvature", "analysis_lib.runs.analyses:curvature_task", version=1,
                     parts=("eigenvalues", "traces"))


def finished_runs(result: GridResult, run_ids: Sequence[str] | None = None) -> list[str]:
    """The finished runs among ``run_ids`` (default: the grid's), each once, in the order given."""
    finished = set(result.run_ids(status="finished"))
    return [r for r in dict.fromkeys(result.run_ids() if run_ids is None else run_ids) if r in finished]


def cached_surfaces(result: GridResult, run_ids: Sequence[str] | None = None, *, executor=None,
             progress: bool | None = None, **params) -> pd.DataFrame:
    """:func:`analysis_lib.landscape.surfaces.run_surfaces` as one cached task per finished run.

    ``params`` are ``run_surfaces``'s keyword arguments (``seeds``, ``normalizations``, ``radius``,
    ``dims``, ``steps``, ...), JSON-serialisable. With no finished run, ``run_surfaces`` itself
    says why (a warning when every run diverged, an error when the runs kept no final weights).
    """
    from ..landscape.surfaces import run_surfaces

    ids = finished_runs(result, run_ids)
    if not ids:
        return run_surfaces(result, [], **params)
    return derive(SURFACES, result, [[rid] for rid in ids], params=params, executor=executor, progress=progress)


def curvature_task(runs: GridResult, run_ids: Sequence[str], **params) -> dict[str, pd.DataFrame]:
    """:func:`analysis_lib.curvature.final.run_curvature` of the task's runs as ``{part: table}``."""
    from ..curvature.final import run_curvature

    eigenvalues, traces = run_curvature(runs, list(run_ids), **params)
    return {"eigenvalues": eigenvalues, "traces": traces}


def cached_curvature(result: GridResult, run_ids: Sequence[str] | None = None, *, executor=None,
                     progress: bool | None = None, **params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`analysis_lib.curvature.final.run_curvature` as one cached task per finished run.

    ``params``: ``k``, ``tol``, ``n_matvecs``, ``exact_max_dim``, ``split``. Returns
    ``(eigenvalues, traces)`` as ``run_curvature`` does; with no finished run, ``run_curvature``
    itself says why.
    """
    from ..curvature.final import run_curvature

    ids = finished_runs(result, run_ids)
    if not ids:
        return run_curvature(result, [], **params)
    tables = derive(CURVATURE, result, [[rid] for rid in ids], params=params, executor=executor, progress=progress)
    return tables["eigenvalues"], tables["traces"]
