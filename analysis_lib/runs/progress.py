"""Progress bars for grids and long probes: widgets in notebooks, text on a terminal, quiet in CI.

One rule everywhere: a bar is shown unless ``$CI`` is set or ``ANALYSIS_LIB_PROGRESS=0``, so CI
logs are not filled with carriage-return redraws. Probes (Lanczos, loss surfaces) use the same
helper as :func:`analysis_lib.runs.execute.run_grid`::

    with progress_bar(n_points, "surface") as bar:
        for point in points:
            ...
            bar.update()
"""

from __future__ import annotations

import os


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to draw a bar: ``progress`` when given, else off in CI or with ANALYSIS_LIB_PROGRESS=0.

    Args:
        progress: an explicit choice; None means decide from the environment.

    Returns:
        True when a bar should be drawn.
    """
    if progress is not None:
        return bool(progress)
    return not os.environ.get("CI") and os.environ.get("ANALYSIS_LIB_PROGRESS", "1") != "0"


def progress_bar_class():
    """Notebook widget bars where ipywidgets exists (JupyterLab), plain text bars otherwise."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm
    return tqdm


def progress_bar(total: int, desc: str, *, initial: int = 0, progress: bool | None = None):
    """A tqdm bar of ``total`` steps (a context manager; call ``.update(n)`` as work completes).

    Args:
        total: number of steps (runs, Lanczos iterations, grid points).
        desc: short label shown before the bar.
        initial: steps already done (e.g. runs reused from the store).
        progress: force on/off; None applies the CI / ANALYSIS_LIB_PROGRESS rule.

    Returns:
        A tqdm instance; disabled bars accept the same calls and print nothing.
    """
    tqdm = progress_bar_class()
    return tqdm(total=total, initial=initial, desc=desc, disable=not progress_enabled(progress))
