"""Import a researcher's module from a file, wherever the notebook's kernel was started."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .. import paths
from ..validation import fail


def load_module(path: str | Path, *, parameter: str = "user_module") -> ModuleType:
    """The module in ``path``, imported under its file's stem (and kept in ``sys.modules``).

    A relative ``path`` is looked up in the current folder, then in the project's ``notebooks/``
    folder, so a notebook finds the module beside it whether it runs in JupyterLab (cwd
    ``notebooks/``) or is rendered by papermill (cwd ``reports/<study>/``).

    Args:
        path: a ``.py`` file. parameter: the notebook parameter named in the error.

    Raises:
        ConfigError: no such file.
    """
    given = Path(path)
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, paths.project_root() / "notebooks" / given]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None or found.suffix != ".py":
        fail(parameter, str(path), "must be a .py file, absolute or relative to the current folder or notebooks/")
    spec = importlib.util.spec_from_file_location(found.stem, found)
    module = importlib.util.module_from_spec(spec)
    sys.modules[found.stem] = module
    spec.loader.exec_module(module)
    return module
