"""Render study notebooks into published reports.

papermill executes ``notebooks/<study>.ipynb`` with a YAML parameter set -> the executed notebook
``reports/<study>.ipynb`` -> nbconvert HTML with code hidden ``reports/<study>.html`` -> a
provenance record ``reports/<study>/render.json`` -> one ``reports/index.html`` for all studies.
Every file is written to a temporary name and moved into place with `os.replace`, so a reader
(or a web server) never sees a half-written report.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import nbformat
import papermill
from nbconvert import HTMLExporter
from papermill.iorw import read_yaml_file  # the loader papermill's own `-f` uses (no date parsing)

from analysis_lib import paths
from analysis_lib.provenance import git_commit, package_versions, project_root

STUDY_NAME = re.compile(r"^\d{2}-[A-Za-z0-9][A-Za-z0-9_-]*$")  # NN-name
# One torch/BLAS thread per kernel: on 2-core machines tiny models run fastest that way, and
# PASSIVE stops idle OpenMP threads from spinning (see DESIGN.md, "Speed"). No progress bars:
# they would be printed into the published report.
KERNEL_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                       "ANALYSIS_LIB_PROGRESS": "0"}


def notebooks_dir_or_default(notebooks_dir: str | Path | None = None) -> Path:
    """Absolute notebooks folder: `notebooks_dir`, else ``<project root>/notebooks``."""
    return Path(notebooks_dir).resolve() if notebooks_dir else project_root() / "notebooks"


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


def _check_study(study: str, notebooks_dir: Path) -> None:
    """Raise ValueError naming the known studies when `study` is not one of them."""
    known = list_studies(notebooks_dir)
    if study not in known:
        raise ValueError(
            f"unknown study {study!r} in {notebooks_dir} (a study needs NN-name.ipynb and its "
            f"paired NN-name.py); studies: {', '.join(known) or 'none'}"
        )


def _study_parameters(params_file: Path, output_dir: Path, extra: dict | None) -> dict:
    """The parameters papermill injects: YAML set, then ``output_dir``, then `extra`."""
    base = read_yaml_file(str(params_file)) or {}
    if not isinstance(base, dict):
        raise ValueError(f"{params_file} must hold a mapping of parameter names to values")
    if extra and "output_dir" in extra:
        raise ValueError("output_dir is set by the renderer; pass reports_dir instead")
    return {**base, "output_dir": str(output_dir), **(extra or {})}


def _shown_path(path: Path) -> str:
    """`path` relative to the project root when inside it (commands run from the root)."""
    try:
        return str(path.relative_to(project_root()))
    except ValueError:
        return str(path)


def papermill_command(
    study_ipynb: Path, output_ipynb: Path, params_file: Path, output_dir: Path,
    extra: dict | None = None, kernel_name: str = "python3",
) -> str:
    """The ``papermill`` command line that reproduces a render, to run from the project root.

    Args:
        study_ipynb: the study notebook. output_ipynb: where the executed notebook goes.
        params_file: the YAML parameter set. output_dir: absolute folder for tables/figures.
        extra: parameters set on top of the YAML file. kernel_name: Jupyter kernel.

    Returns:
        A shell-quoted command, e.g. ``papermill notebooks/01-x.ipynb reports/01-x.ipynb
        --cwd notebooks -k python3 -f notebooks/params/01-x/default.yaml -p output_dir /abs``.
    """
    parts = [
        "papermill", _shown_path(study_ipynb), _shown_path(output_ipynb),
        "--cwd", _shown_path(study_ipynb.parent), "-k", kernel_name,
        "-f", _shown_path(params_file), "-p", "output_dir", str(output_dir),
    ]
    if extra:
        parts += ["-y", json.dumps(extra, sort_keys=True)]  # JSON is YAML; keeps types exact
    return shlex.join(parts)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o644)  # temp files are private (0600); reports are meant to be served
    os.replace(tmp.name, path)


def error_summary(exc: BaseException) -> str:
    """One line describing `exc`; for a failing cell, the cell's exception and message."""
    if isinstance(exc, papermill.PapermillExecutionError):
        return f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _execute(
    study_ipynb: Path, executed: Path, parameters: dict, kernel_name: str
) -> Exception | None:
    """Run papermill into a temp file, move it to `executed`; return the error it raised, if any."""
    for name, value in KERNEL_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)  # the kernel inherits this process's environment
    partial = executed.with_name(f".{executed.stem}.partial.ipynb")
    error = None
    try:
        papermill.execute_notebook(
            str(study_ipynb), str(partial), parameters=parameters, cwd=str(study_ipynb.parent),
            kernel_name=kernel_name, log_output=True,
            progress_bar=os.environ.get("CI", "").lower() in ("", "0", "false"),
        )
    except Exception as exc:  # keep the partly executed notebook: it shows the error
        error = exc
    except BaseException:  # interrupted: leave the previous report as it was
        partial.unlink(missing_ok=True)
        raise
    if partial.exists():
        os.replace(partial, executed)
    else:  # nothing ran: do not leave an older report looking current
        executed.unlink(missing_ok=True)
        executed.with_suffix(".html").unlink(missing_ok=True)
    return error


def export_html(executed: Path, html_path: Path) -> None:
    """Convert an executed notebook to standalone HTML with code cells and prompts hidden.

    Args:
        executed: the executed ``.ipynb``. html_path: where the HTML goes (written atomically).
    """
    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    title = notebook_title(nb) or executed.stem
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    write_atomic(html_path, body)


def _render_record(
    study: str, param_set: str, parameters: dict, error: Exception | None,
    started: datetime, t0: float,
) -> dict:
    """Status, timing and provenance of one render (the core of render.json)."""
    return {
        "study": study, "param_set": param_set, "status": "failed" if error else "ok",
        "error": error_summary(error) if error else None, "parameters": parameters,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 2),
        "package_versions": package_versions(), "git": git_commit(project_root()),
    }


def render_study(
    study: str, param_set: str = "default", *, notebooks_dir: str | Path | None = None,
    reports_dir: str | Path | None = None, extra_parameters: dict | None = None,
    kernel_name: str = "python3",
) -> dict:
    """Execute one study with papermill and publish it as HTML with a provenance record.

    Clears ``<reports_dir>/<study>/`` first so no table or figure from an older render survives.

    Args:
        study: study name (``NN-name``). param_set: parameter set in ``notebooks/params/<study>/``.
        notebooks_dir, reports_dir: default to ``notebooks/`` and ``reports/`` in the project.
        extra_parameters: parameters set on top of the YAML set (not ``output_dir``).
        kernel_name: Jupyter kernel that runs the notebook.

    Returns:
        The render.json record: study, param_set, status, error, parameters, started, finished,
        seconds, package_versions, git, command, kernel_name.

    Raises:
        ValueError: unknown study or parameter set (before anything runs).
        Exception: whatever papermill raised (`PapermillExecutionError` for a failing cell),
            after the executed notebook, its HTML and render.json (status "failed") are written.
    """
    nb_dir, out_root = notebooks_dir_or_default(notebooks_dir), reports_dir_or_default(reports_dir)
    _check_study(study, nb_dir)
    params_file = params_path(study, param_set, nb_dir)
    out_dir = out_root / study
    parameters = _study_parameters(params_file, out_dir, extra_parameters)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    study_ipynb, executed = nb_dir / f"{study}.ipynb", out_root / f"{study}.ipynb"
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    error = _execute(study_ipynb, executed, parameters, kernel_name)
    if executed.exists():
        try:
            export_html(executed, executed.with_suffix(".html"))
        except Exception as exc:  # a failing cell is the more useful error to report
            error = error or exc
    record = _render_record(study, param_set, parameters, error, started, t0) | {
        "kernel_name": kernel_name,
        "command": papermill_command(study_ipynb, executed, params_file, out_dir,
                                     extra_parameters, kernel_name),
    }
    write_atomic(out_dir / "render.json", json.dumps(record, indent=2, default=str) + "\n")
    if error:
        raise error
    return record


# --- index.html ---------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:70rem;margin:2rem auto;
padding:0 1rem;color:#1d1d1f}
h1{font-size:1.6rem}section{border-top:1px solid #ccc;padding:.6rem 0 1rem}
h2{font-size:1.2rem;margin:.4rem 0}.question{font-style:italic}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}
.badge{font-size:.75rem;padding:.1rem .45rem;border-radius:.6rem;background:#ddd;margin-left:.4rem}
.ok,.yes{background:#d4f4dd}.failed,.no{background:#fbd5d5}.partly,.incomplete{background:#fdf1c7}
.inconclusive,.not-rendered{background:#e8e8e8}dt{font-weight:600;float:left;clear:left;width:9rem}
dd{margin:0 0 .2rem 9.5rem}code{font-size:.85rem;word-break:break-all}
"""
_E = html.escape  # every text that comes from a file goes through this


def notebook_title(nb) -> str | None:
    """Title of a notebook: the ``# heading`` opening its first markdown cell, or None."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            first = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
            return first[2:].strip() if first.startswith("# ") else None
    return None


def _read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _study_status(summary: dict | None, render: dict | None) -> str:
    """ok | failed | incomplete (rendered without a summary.json) | not rendered."""
    if render and render.get("status") == "failed":
        return "failed"
    if summary is not None:
        return "ok"
    return "incomplete" if render else "not rendered"


def _verdict_row(row: dict) -> str:
    """One <tr>: claim (with its source), measured, reproduced (coloured by outcome)."""
    claim = _E(str(row.get("claim", "")))
    if row.get("source"):
        claim += f"<br><small>{_E(str(row['source']))}</small>"
    outcome = _E(str(row.get("reproduced", "")))
    return (f'<tr><td>{claim}</td><td>{_E(str(row.get("measured", "")))}</td>'
            f'<td class="{outcome}">{outcome}</td></tr>')


def _verdict_table(verdict) -> str:
    """HTML table claim / measured / reproduced, with a one-line count above it."""
    rows = [v for v in verdict if isinstance(v, dict)] if isinstance(verdict, list) else []
    if not rows:
        return "<p>No verdict recorded.</p>"
    reproduced = sum(str(v.get("reproduced")) == "yes" for v in rows)
    body = "".join(_verdict_row(v) for v in rows)
    return (f"<p>{reproduced} of {len(rows)} claims reproduced.</p><table><tr><th>claim</th>"
            f"<th>measured</th><th>reproduced</th></tr>{body}</table>")


def _meta_list(summary: dict, render: dict) -> str:
    """Definition list: parameter set, run time, runs, versions, git commit, command."""
    runs = summary.get("runs") if isinstance(summary.get("runs"), dict) else {}
    versions = render.get("package_versions") or {}
    git = render.get("git") or {}
    sha = str(git.get("commit", "unknown"))  # "unknown"[:7] is still "unknown"
    seconds = render.get("seconds")
    items = {
        "parameter set": render.get("param_set", "—"),
        "run time": f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "—",
        "rendered": render.get("finished", "—"),
        "runs": ", ".join(f"{runs.get(k, '?')} {k}" for k in ("finished", "diverged", "failed"))
        if runs else None,
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) or "—",
        "git commit": sha[:7] + (" (modified)" if git.get("modified") else ""),
        "error": render.get("error"),
    }
    rows = "".join(f"<dt>{_E(k)}</dt><dd>{_E(str(v))}</dd>" for k, v in items.items() if v)
    if render.get("command"):
        rows += f'<dt>reproduce</dt><dd><code>{_E(str(render["command"]))}</code></dd>'
    return f"<dl>{rows}</dl>"


def _study_section(out_root: Path, study: str) -> str:
    """One <section> of the index for `study`, from its summary.json and render.json."""
    summary = _read_json(out_root / study / "summary.json")
    render = _read_json(out_root / study / "render.json")
    status = _study_status(summary, render)
    title = _E(str((summary or {}).get("title") or study))
    if (out_root / f"{study}.html").is_file():
        title = f'<a href="{_E(quote(study))}.html">{title}</a>'
    question = (summary or {}).get("question", "")
    badge = f'<span class="badge {status.replace(" ", "-")}">{_E(status)}</span>'
    parts = [f'<section id="{_E(study)}"><h2>{title} {badge}</h2><p>{_E(study)}</p>']
    if question:
        parts.append(f'<p class="question">{_E(str(question))}</p>')
    if summary is not None:
        parts.append(_verdict_table(summary.get("verdict")))
    if summary is not None or render is not None:
        parts.append(_meta_list(summary or {}, render or {}))
    return "".join(parts) + "</section>"


def index_page(out_root: Path, studies: list[str]) -> str:
    """The self-contained index.html text (inline CSS, no scripts) for `studies`."""
    sections = "\n".join(_study_section(out_root, s) for s in studies) or "<p>No studies.</p>"
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Training-dynamics studies</title><style>{_CSS}</style></head><body>"
            f"<h1>Training-dynamics studies</h1><p>Generated {_E(generated)}. Each title links "
            f"to the full report; code is hidden there, the executed notebook sits beside it.</p>"
            f"\n{sections}\n</body></html>\n")


def build_index(
    reports_dir: str | Path | None = None, *, notebooks_dir: str | Path | None = None
) -> Path:
    """Write ``<reports_dir>/index.html``: one section per study (see `index_page`).

    Args:
        reports_dir: defaults to ``<project root>/reports``.
        notebooks_dir: studies listed there appear even when not rendered yet.

    Returns:
        Path of the index.html written.
    """
    out_root = reports_dir_or_default(reports_dir)
    nb_dir = notebooks_dir_or_default(notebooks_dir)
    rendered = [p.name for p in out_root.glob("*") if p.is_dir() and STUDY_NAME.match(p.name)]
    studies = sorted(set(rendered) | set(list_studies(nb_dir)))
    index = out_root / "index.html"
    write_atomic(index, index_page(out_root, studies))
    return index


def _studies_to_render(studies, param_set: str, nb_dir: Path, skip_missing: bool) -> list[str]:
    """Validate study names and parameter sets up front, before any study trains."""
    names = list(studies) if studies else list_studies(nb_dir)
    if not names:
        raise ValueError(f"no studies found in {nb_dir} (expected NN-name.ipynb + NN-name.py)")
    for study in names:
        _check_study(study, nb_dir)
    missing = [s for s in names if param_set not in param_sets(s, nb_dir)]
    if missing and not skip_missing:
        params_path(missing[0], param_set, nb_dir)  # raises with the sets that exist
    for study in missing:
        print(f"skip     {study}: no parameter set {param_set!r}", flush=True)
    return [s for s in names if s not in missing]


def render_all(
    param_set: str = "default", studies: list[str] | None = None,
    reports_dir: str | Path | None = None, *, notebooks_dir: str | Path | None = None,
    skip_missing: bool = False,
) -> Path:
    """Render studies one after another, then the index; fail at the end if any study failed.

    Args:
        param_set: parameter set used for every study. studies: names; default all studies.
        reports_dir, notebooks_dir: default to ``reports/`` and ``notebooks/`` in the project.
        skip_missing: skip studies without `param_set` (e.g. the optional ``full``) instead of
            raising ValueError.

    Returns:
        Path of the index.html written.

    Raises:
        ValueError: unknown study, or a missing parameter set (before anything runs).
        RuntimeError: one or more studies failed to render; the message names each one.
    """
    nb_dir, out_root = notebooks_dir_or_default(notebooks_dir), reports_dir_or_default(reports_dir)
    failures = {}
    for study in _studies_to_render(studies, param_set, nb_dir, skip_missing):
        t0 = time.perf_counter()
        try:
            render_study(study, param_set, notebooks_dir=nb_dir, reports_dir=out_root)
        except Exception as exc:
            failures[study] = error_summary(exc)
        status = "FAILED" if study in failures else "ok"
        print(f"{status:<8} {study} ({param_set}) {time.perf_counter() - t0:7.1f} s", flush=True)
    index = build_index(out_root, notebooks_dir=nb_dir)
    if failures:
        listed = "; ".join(f"{s}: {msg}" for s, msg in failures.items())
        raise RuntimeError(
            f"{len(failures)} studies failed to render ({listed}); "
            f"the executed notebooks in {out_root} show the error"
        )
    return index
