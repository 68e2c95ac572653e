"""The studies: notebooks ``notebooks/NN-name.ipynb`` paired with ``NN-name.py``, and their parameter sets.

A study's parameter sets live in ``notebooks/params/<study>/<set>.yaml`` (at least ``smoke`` for
the tests and ``default`` for the published report).
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import paths

STUDY_NAME = re.compile(r"^\d{2}-[A-Za-z0-9][A-Za-z0-9_-]*$")  # NN-name


def notebooks_dir_or_default(notebooks_dir: str | Path | None = None) -> Path:
    """Absolute notebooks folder: `notebooks_dir`, else ``<project root>/notebooks``."""
    return Path(notebooks_dir).resolve() if notebooks_dir else paths.project_root() / "notebooks"


def reports_dir_or_default(reports_dir: str | Path | None = None) -> Path:
    """Absolute reports folder: `reports_dir`, else `paths.reports_dir()` (``reports/``)."""
    return Path(reports_dir or paths.reports_dir()).resolve()


def list_studies(notebooks_dir: str | Path | None = None) -> list[str]:
    """Names of the studies in `notebooks_dir`: ``NN-name`` with both ``.ipynb`` and ``.py``.

    Args:
        notebooks_dir: folder holding the notebooks; defaults to ``<project root>/notebooks``.

    Returns:
        Sorted study names, e.g. ``["01-layer-dynamics", "02-edge-of-stability"]``.
    """
    folder = notebooks_dir_or_default(notebooks_dir)
    if not folder.is_dir():
        return []
    return sorted(
        p.stem for p in folder.glob("*.ipynb")
        if STUDY_NAME.match(p.stem) and p.with_suffix(".py").is_file()
    )


def param_sets(study: str, notebooks_dir: str | Path | None = None) -> list[str]:
    """Names of the parameter sets ``notebooks/params/<study>/<set>.yaml`` that exist, sorted."""
    folder = notebooks_dir_or_default(notebooks_dir) / "params" / study
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def params_path(study: str, param_set: str, notebooks_dir: str | Path | None = None) -> Path:
    """Path of a study's parameter set.

    Args:
        study: study name, e.g. ``"01-layer-dynamics"``.
        param_set: set name, e.g. ``"smoke"``, ``"default"`` or ``"full"``.
        notebooks_dir: folder holding the notebooks; defaults to ``<project root>/notebooks``.

    Returns:
        ``<notebooks_dir>/params/<study>/<param_set>.yaml``.

    Raises:
        ValueError: the file does not exist; the message names the study, the set and the sets
            that do exist.
    """
    path = notebooks_dir_or_default(notebooks_dir) / "params" / study / f"{param_set}.yaml"
    if not path.is_file():
        existing = ", ".join(param_sets(study, notebooks_dir)) or "none"
        raise ValueError(
            f"study {study!r} has no parameter set {param_set!r} (no file {path}); "
            f"parameter sets that exist: {existing}"
        )
    return path


def check_study(study: str, notebooks_dir: Path) -> None:
    """Raise ValueError naming the known studies when ``study`` is not one of them."""
    known = list_studies(notebooks_dir)
    if study not in known:
        raise ValueError(
            f"unknown study {study!r} in {notebooks_dir} (a study needs NN-name.ipynb and its "
            f"paired NN-name.py); studies: {', '.join(known) or 'none'}"
        )
