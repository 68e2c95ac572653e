"""Where a result came from: package versions, git commit and the project root.

Every rendered report and every run records these so a colleague can tell whether a difference
between two reports comes from the code, the environment or the data.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

from ..paths import project_root

# Distributions whose versions change numbers or figures; `python` is added separately.
TRACKED_PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "statsmodels",
    "seaborn",
    "matplotlib",
    "papermill",
    "nbconvert",
    "analysis_lib",
)

NOT_INSTALLED = "not installed"


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Versions of Python and the packages that shape results, as installed in this interpreter.

    Args:
        packages: distribution names to look up with `importlib.metadata`.

    Returns:
        ``{"python": "3.11.9", "torch": "2.13.0+cpu", ...}``; a package that is not installed maps
        to ``"not installed"``.
    """
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions


def _git(root: Path, *args: str) -> str | None:
    """Stdout of ``git <args>`` run in `root`, or None when git or the repository is missing."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(root: str | Path | None = None) -> dict:
    """The commit the working tree is on and whether it has uncommitted changes.

    Never raises: without git, outside a repository or before the first commit the commit is
    ``"unknown"``.

    Args:
        root: a folder inside the repository; defaults to `project_root()`.

    Returns:
        ``{"commit": <40-hex sha> | "unknown", "modified": bool}``; `modified` is True when
        ``git status --porcelain`` lists anything (untracked files included).
    """
    try:
        root = Path(root) if root is not None else project_root()
    except RuntimeError:
        return {"commit": "unknown", "modified": False}
    sha = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain")
    return {
        "commit": sha.strip() if sha and sha.strip() else "unknown",
        "modified": bool(status and status.strip()),
    }
