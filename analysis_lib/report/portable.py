"""Published reports hold no absolute path of the machine that rendered them.

Paths a report shows (the notebook, the parameter file, the output folder in the command that
reproduces it) are written relative to the project root, where every command runs from. A
reports folder outside the project (``ANALYSIS_LIB_REPORTS``) is written as
``"$ANALYSIS_LIB_REPORTS"/...`` and a data folder outside it as ``$ANALYSIS_LIB_DATA/...``; any
other outside path (a notebooks folder of your own) relative to the project root. The kernel
runs inside the reports folder and writes its tables and figures to ``output_dir = "<study>"``,
relative, so the injected parameters hold no path either. :func:`portable_notebook` then
rewrites what papermill recorded (the notebook's input and output paths) and replaces any
remaining occurrence of the machine's folders (project root, reports, data, home, the Python
installation) in cell outputs, e.g. in a warning's file name.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from .. import paths

REPORTS_VARIABLE = "ANALYSIS_LIB_REPORTS"
DATA_VARIABLE = "ANALYSIS_LIB_DATA"


def shown_path(path: Path, reports_root: Path | None = None) -> str:
    """``path`` as a report shows it: relative to the project root, or from a folder's variable.

    Args:
        path: an absolute path. reports_root: the reports folder of the render; paths inside it,
            when it lies outside the project, are shown from ``$ANALYSIS_LIB_REPORTS``, and paths
            in an outside data folder from ``$ANALYSIS_LIB_DATA``.

    Returns:
        A path relative to the project root, ``$ANALYSIS_LIB_REPORTS/<rest>``,
        ``$ANALYSIS_LIB_DATA/<rest>``, or for a path in none of them (a notebooks folder of your
        own) its path relative to the project root (``../...``, so the command still runs); never
        an absolute one.
    """
    path, root = Path(path).resolve(), paths.project_root().resolve()
    try:
        return str(path.relative_to(root))
    except ValueError:
        pass
    outside = [(REPORTS_VARIABLE, reports_root), (DATA_VARIABLE, paths.data_dir())]
    for variable, folder in outside:
        if folder is None:
            continue
        try:
            rest = path.relative_to(Path(folder).resolve())
        except ValueError:
            continue
        return f"${variable}" + ("" if str(rest) == "." else f"/{rest}")
    return os.path.relpath(path, root)


def _quote(part: str) -> str:
    """Shell-quote ``part``, keeping a leading ``$ANALYSIS_LIB_REPORTS`` / ``$ANALYSIS_LIB_DATA`` expandable."""
    for variable in (REPORTS_VARIABLE, DATA_VARIABLE):
        prefix = f"${variable}"
        if part.startswith(prefix):
            rest = part[len(prefix):]
            return f'"{prefix}"' + (shlex.quote(rest) if rest else "")
    return shlex.quote(part)


def papermill_command(study_ipynb: Path, output_ipynb: Path, params_file: Path, reports_root: Path,
                      output_dir: str, extra: dict | None = None, kernel_name: str = "python3") -> str:
    """The ``papermill`` command line that reproduces a render, to run from the project root.

    Args:
        study_ipynb: the study notebook. output_ipynb: where the executed notebook goes.
        params_file: the YAML parameter set. reports_root: the reports folder, the kernel's
            working directory. output_dir: the study's output folder relative to it.
        extra: parameters set on top of the YAML file. kernel_name: Jupyter kernel.

    Returns:
        A shell-quoted command, e.g. ``papermill notebooks/01-x.ipynb reports/01-x.ipynb --cwd
        reports -k python3 -f notebooks/params/01-x/default.yaml -p output_dir 01-x``.
    """
    def shown(p: Path) -> str:
        return _quote(shown_path(p, reports_root))

    parts = ["papermill", shown(study_ipynb), shown(output_ipynb), "--cwd", shown(reports_root),
             "-k", shlex.quote(kernel_name), "-f", shown(params_file), "-p", "output_dir", shlex.quote(output_dir)]
    if extra:
        parts += ["-y", shlex.quote(json.dumps(extra, sort_keys=True))]  # JSON is YAML; keeps types exact
    return " ".join(parts)


def machine_paths(reports_root: Path) -> dict[str, str]:
    """Absolute folders of this machine -> how a published report writes them (longest first)."""
    root = paths.project_root().resolve()
    folders = {str(Path(reports_root).resolve()): shown_path(reports_root, reports_root),
               str(paths.data_dir().resolve()): shown_path(paths.data_dir(), reports_root),
               str(root): ".", sys.prefix: "<python>", str(Path.home()): "~"}
    return dict(sorted(folders.items(), key=lambda kv: -len(kv[0])))


def scrub(text: str, replacements: dict[str, str]) -> str:
    """``text`` with every absolute folder of ``replacements`` replaced by its shown form."""
    for absolute, shown in replacements.items():
        if absolute and absolute not in ("/", "."):
            text = text.replace(absolute, shown)
    return text


def portable_notebook(nb, study_ipynb: Path, executed: Path, reports_root: Path,
                      moved: dict[str, str] | None = None) -> None:
    """Rewrite an executed notebook in place so it holds no absolute path of this machine.

    ``moved`` maps folders the notebook ran in to where its files end up (a render's staging
    folder -> the reports folder); they are rewritten first.
    """
    meta = nb.metadata.get("papermill", {})
    if meta:
        meta["input_path"] = shown_path(study_ipynb, reports_root)
        meta["output_path"] = shown_path(executed, reports_root)
        meta.pop("cwd", None)
    replacements = {**(moved or {}), **machine_paths(reports_root)}
    for cell in nb.cells:
        cell.source = scrub(cell.source, replacements)
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = scrub(output["text"], replacements)
            if "traceback" in output:
                output["traceback"] = [scrub(line, replacements) for line in output["traceback"]]
            if "evalue" in output:
                output["evalue"] = scrub(output["evalue"], replacements)
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = scrub(value, replacements)
