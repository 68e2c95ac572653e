"""Study 02's free choice: which trained models count as having learned the task.

The protocol compares only models whose greedy accuracy on held-out problems reaches ``learned``
in both formats (init is always kept: it is the length baseline). A fair reader could set that
gate lower or higher; :func:`robust_verdict_rows` re-decides every claim from the same cached
spectra with the gate at :data:`GATES` (one at a time, :mod:`..sensitivity`), so each "no" says
whether it hangs on which models were admitted.
"""

from __future__ import annotations

import pandas as pd

from ..sensitivity import decide, stamped, with_alternatives
from . import contrasts as c
from .protocol import accuracy_table, comparable
from .verdicts import fastslow_verdicts

GATES = (0.5, 0.99)  # alternatives to the protocol's `learned` accuracy gate


def robust_verdict_rows(result, spectra: pd.DataFrame, *, learned: float, statistic: str,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """The study's verdict rows with each no / partly's robustness under other accuracy gates, and the table."""
    def evaluate(setting: dict) -> list[dict]:
        kept = comparable(spectra, accuracy_table(result, setting["learned"]))
        means = c.seed_means(kept)
        spreads, scores = c.spread_table(means), c.example_scores(kept, statistic)
        rows = fastslow_verdicts(c.summary_tests(means, spreads, statistic, n_boot=n_boot),
                                 c.matrix_tests(means, "fast", "slow", statistic, n_boot=n_boot),
                                 c.separation_table(scores, ["irrelevant", "subtle", "corrupted"], n_boot=n_boot),
                                 c.quality_effects(scores, c.example_scores(kept, "effective_rank"), n_boot=n_boot),
                                 statistic)
        return stamped(rows, f"trained models admitted at held-out accuracy ≥ {setting['learned']:g}")

    protocol = {"learned": learned}
    return decide(evaluate, with_alternatives(protocol, {"learned": GATES}), protocol)
