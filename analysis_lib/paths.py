"""Where the project keeps generated data, runs and reports.

``ANALYSIS_LIB_DATA`` and ``ANALYSIS_LIB_REPORTS`` override the defaults ``<root>/data`` and
``<root>/reports`` (e.g. a shared filesystem on a cluster, or a temporary folder in tests).
"""

from __future__ import annotations

import os
from pathlib import Path


def _find_pyproject_parent(start: Path) -> Path | None:
    """The first folder at or above `start` that holds a pyproject.toml, or None."""
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def project_root() -> Path:
    """The project root: the folder above `analysis_lib/` that holds ``pyproject.toml``.

    Falls back to walking up from the current directory when the package is installed outside
    the source tree (a non-editable install).

    Returns:
        Absolute path of the project root.

    Raises:
        RuntimeError: when no pyproject.toml is found either way.
    """
    here = Path(__file__).resolve().parent
    root = _find_pyproject_parent(here) or _find_pyproject_parent(Path.cwd().resolve())
    if root is None:
        raise RuntimeError(
            f"cannot find the project root: no pyproject.toml above {here} or {Path.cwd()}; "
            "run from inside the analysis_lib checkout"
        )
    return root


def data_dir() -> Path:
    """Generated datasets, runs and interactive study outputs: ``$ANALYSIS_LIB_DATA`` or ``<root>/data``."""
    return Path(os.environ.get("ANALYSIS_LIB_DATA") or project_root() / "data")


def runs_dir() -> Path:
    """The run store: ``<data>/runs``."""
    return data_dir() / "runs"


def reports_dir() -> Path:
    """Published reports: ``$ANALYSIS_LIB_REPORTS`` or ``<root>/reports``."""
    return Path(os.environ.get("ANALYSIS_LIB_REPORTS") or project_root() / "reports")
