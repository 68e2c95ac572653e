"""Parameter files for one study render: read, check against the notebook's parameters cell."""

from __future__ import annotations

from pathlib import Path

from ..validation import ConfigError, read_yaml


def read_params_file(path: str | Path, study: str, notebooks_dir: str | Path | None = None) -> dict:
    """The parameters in a YAML file, checked against the study notebook's ``parameters`` cell.

    A misspelt name would otherwise be injected by papermill as a new variable and silently
    ignored, so unknown names are an error here, before any kernel starts.

    Args:
        path: YAML file mapping parameter names to values.
        study: study name (``NN-name``); its notebook lists the allowed names.
        notebooks_dir: default ``notebooks/`` in the project.

    Returns:
        The mapping, to pass as ``extra_parameters`` to :func:`analysis_lib.report.render.render_study`.

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping, or an unknown parameter name.
    """
    path = Path(path)
    values = read_yaml(path, f"invalid parameter --params-file={str(path)!r}")
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"invalid parameter --params-file={str(path)!r}: must hold a non-empty "
                          f"mapping of parameter names to values, not {type(values).__name__}")
    allowed = notebook_parameters(study, notebooks_dir)
    unknown = sorted(set(values) - set(allowed)) if allowed else []
    if unknown:
        raise ConfigError(f"invalid parameter --params-file={str(path)!r}: unknown parameters "
                          f"{unknown} for study {study}; allowed: {', '.join(allowed)}")
    return values


def notebook_parameters(study: str, notebooks_dir: str | Path | None = None) -> list[str]:
    """Names in the study notebook's ``parameters`` cell; [] when the notebook does not exist."""
    import papermill

    from .studies import notebooks_dir_or_default

    notebook = notebooks_dir_or_default(notebooks_dir) / f"{study}.ipynb"
    if not notebook.exists():
        return []  # render_study raises the error that lists the known studies
    return list(papermill.inspect_notebook(str(notebook)))
