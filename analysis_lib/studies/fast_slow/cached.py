"""Study 02's contrast tests at one accuracy gate, as one cached task over the grid's finished runs.

The tests (:mod:`.contrasts`: headline contrasts, per-matrix and spread contrasts, AUROC
separation, data-quality effects) bootstrap over seeds and examples, and the verdict re-decides
them at every accuracy gate of :mod:`.robustness`: seconds each time the study renders. Here the
tables at one gate are one task of :func:`analysis_lib.runs.derived.derive` over the group of the
grid's finished runs, keyed by their ids and the test parameters, so a second render reads them.
"""

from __future__ import annotations

import pandas as pd

from ...runs.derived import Analysis, derive
from ...runs.grid import GridResult
from . import contrasts as c
from .protocol import accuracy_table, comparable, spectra_table

TABLES = ("summary", "matrix", "spread", "separation", "quality")
CONTRAST_TESTS = Analysis("fastslow_tests", "analysis_lib.studies.fast_slow.cached:tests_task", version=1)


def contrast_tables(spectra: pd.DataFrame, accuracy: pd.DataFrame, *, statistic: str,
                    n_boot: int) -> dict[str, pd.DataFrame]:
    """Every test table of the study from the spectra of the models ``accuracy`` admits."""
    kept = comparable(spectra, accuracy)
    means = c.seed_means(kept)
    spreads, scores = c.spread_table(means), c.example_scores(kept, statistic)
    return {"summary": c.summary_tests(means, spreads, statistic, n_boot=n_boot),
            "matrix": c.matrix_tests(means, "fast", "slow", statistic, n_boot=n_boot),
            "spread": c.spread_tests(spreads, "fast", "slow", statistic, n_boot=n_boot),
            "separation": c.separation_table(scores, ["irrelevant", "subtle", "corrupted"], n_boot=n_boot),
            "quality": c.quality_effects(scores, c.example_scores(kept, "effective_rank"), n_boot=n_boot)}


def tests_task(runs: GridResult, run_ids: list[str], *, n_problems: int, learned: float, statistic: str,
               n_boot: int) -> pd.DataFrame:
    """The tables of :func:`contrast_tables` for the runs ``run_ids``, stacked with a ``table`` column."""
    tables = contrast_tables(spectra_table(runs, n_problems), accuracy_table(runs, learned), statistic=statistic,
                             n_boot=n_boot)
    return pd.concat([t.assign(table=name) for name, t in tables.items()], ignore_index=True)


def contrast_tests(result: GridResult, *, n_problems: int, learned: float, statistic: str, n_boot: int,
                   executor=None) -> dict[str, pd.DataFrame]:
    """The study's test tables at the gate ``learned``, computed once per grid and parameters.

    Returns:
        ``{"summary", "matrix", "spread", "separation", "quality"}`` -> result table, as
        :func:`contrast_tables` gives them (computed here, uncached, when no run finished).
    """
    finished = result.run_ids(status="finished")
    if not finished:
        return contrast_tables(spectra_table(result, n_problems), accuracy_table(result, learned),
                               statistic=statistic, n_boot=n_boot)
    params = {"n_problems": n_problems, "learned": learned, "statistic": statistic, "n_boot": n_boot}
    stacked = derive(CONTRAST_TESTS, result, [finished], params=params, executor=executor, labels=False)
    return {name: stacked[stacked["table"] == name].drop(columns="table").reset_index(drop=True)
            for name in TABLES}
