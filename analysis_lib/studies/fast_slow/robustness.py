"""Study 02's free choice: which trained models count as having learned the task.

The protocol compares only models whose greedy accuracy on held-out problems reaches ``learned``
in both formats (init is always kept: it is the length baseline). A fair reader could set that
gate lower or higher; :func:`robust_verdict_rows` re-decides every claim from the same cached
spectra with the gate at :data:`GATES` (one at a time, :mod:`..sensitivity`; the tests at each gate
are cached too), so each "no" says whether it hangs on which models were admitted.
"""

from __future__ import annotations

import pandas as pd

from ..sensitivity import decide, stamped, with_alternatives
from .cached import contrast_tests
from .verdicts import fastslow_verdicts

GATES = (0.5, 0.99)  # alternatives to the protocol's `learned` accuracy gate


def robust_verdict_rows(result, *, n_problems: int, learned: float, statistic: str, n_boot: int,
                        executor=None) -> tuple[list[dict], pd.DataFrame]:
    """The study's verdict rows with each no / partly's robustness under other accuracy gates, and the table.

    The tests at each gate come from :func:`.cached.contrast_tests` (computed once per grid).
    """
    def evaluate(setting: dict) -> list[dict]:
        t = contrast_tests(result, n_problems=n_problems, learned=setting["learned"], statistic=statistic,
                           n_boot=n_boot, executor=executor)
        rows = fastslow_verdicts(t["summary"], t["matrix"], t["separation"], t["quality"], statistic)
        return stamped(rows, f"trained models admitted at held-out accuracy ≥ {setting['learned']:g}")

    protocol = {"learned": learned}
    return decide(evaluate, with_alternatives(protocol, {"learned": GATES}), protocol)
