"""Render study notebooks into published reports.

papermill executes ``notebooks/<study>.ipynb`` with a YAML parameter set -> the executed notebook
``reports/<study>.ipynb`` (made portable: :mod:`.portable`) -> a provenance record
``reports/<study>/render.json`` -> self-contained HTML with code folded and the verdict on top
``reports/<study>.html`` (:mod:`.html`) -> one ``reports/index.html`` for all studies
(:mod:`.index`) and ``reports/claims.html``, the claims the verdicts cite (:mod:`.claims`).
A render runs in a staging folder ``<reports>/.staging-<study>-<id>/`` (the kernel's working
directory), and only when it has finished, successfully or with a failing cell, are the study's
folder, executed notebook and HTML moved into place with ``os.replace``: a killed or interrupted
render leaves the previous report, its folder and its index entry as they were. Each staging
folder names its owner (host and pid, in ``.owner``); the next render removes the folders of owners
on this host that are no longer alive, and any other leftover once it is an hour old.

Notebooks name the project's kernel, ``analysis-lib``, which ``make venv`` registers inside
``.venv``; :func:`default_kernel` uses it when it runs this Python and ``python3`` otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import papermill
from papermill.iorw import read_yaml_file  # the loader papermill's own `-f` uses (no date parsing)

from ..runs.provenance import git_commit, package_versions, project_root
from .claims import write_claims_page
from .fragments import read_json
from .html import notebook_title, published_html, study_summary_html
from .index import index_page
from .portable import papermill_command, portable_notebook, shown_path
from .studies import (
    STUDY_NAME,
    check_study,
    list_studies,
    notebooks_dir_or_default,
    param_sets,
    params_path,
    reports_dir_or_default,
)

# One torch/BLAS thread per kernel: on 2-core machines tiny models run fastest that way, and
# PASSIVE stops idle OpenMP threads from spinning (docs/architecture.md, "Threads"). No progress
# bars: they would be printed into the published report.
KERNEL_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                       "ANALYSIS_LIB_PROGRESS": "0"}


PROJECT_KERNEL = "analysis-lib"


def default_kernel() -> str:
    """``analysis-lib`` when that kernel is registered and runs this Python, else ``python3``.

    A kernel of that name registered from another environment (an old ``--user`` install) is not
    used: the study would run against a different installation of the library.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec(PROJECT_KERNEL).argv
    except NoSuchKernel:
        return "python3"
    same = bool(argv) and Path(argv[0]).resolve() == Path(sys.executable).resolve()
    return PROJECT_KERNEL if same else "python3"


def _study_parameters(params_file: Path, output_dir: str, extra: dict | None) -> dict:
    """The parameters papermill injects: YAML set, then ``output_dir``, then ``extra``."""
    base = read_yaml_file(str(params_file)) or {}
    if not isinstance(base, dict):
        raise ValueError(f"{params_file} must hold a mapping of parameter names to values")
    if extra and "output_dir" in extra:
        raise ValueError("output_dir is set by the renderer; pass reports_dir instead")
    return {**base, "output_dir": output_dir, **(extra or {})}


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
    study_ipynb: Path, executed: Path, parameters: dict, kernel_name: str, published: Path | None = None,
    reports_root: Path | None = None,
) -> Exception | None:
    """Run papermill into a temp file, make it portable, move it to ``executed``.

    The kernel runs in ``executed.parent`` (the staging folder), where ``output_dir`` is
    relative. ``published`` is where the executed notebook will end up, in ``reports_root``.

    Returns:
        The error papermill raised (a failing cell), or None.
    """
    published, reports_root = published or executed, reports_root or executed.parent
    for name, value in KERNEL_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)  # the kernel inherits this process's environment
    partial = executed.with_name(f".{executed.stem}.partial.ipynb")
    error = None
    try:
        papermill.execute_notebook(
            str(study_ipynb), str(partial), parameters=parameters, cwd=str(executed.parent),
            kernel_name=kernel_name, log_output=True,
            progress_bar=os.environ.get("CI", "").lower() in ("", "0", "false"),
        )
    except Exception as exc:  # keep the partly executed notebook: it shows the error
        error = exc
    except BaseException:  # interrupted: leave the previous report as it was
        partial.unlink(missing_ok=True)
        raise
    if partial.exists():
        nb = nbformat.read(partial, as_version=4)
        moved = {str(executed.parent.resolve()): str(reports_root.resolve())}
        portable_notebook(nb, study_ipynb, published, reports_root, moved)
        nbformat.write(nb, partial)
        os.replace(partial, executed)
    else:  # nothing ran: do not leave an older report looking current
        executed.unlink(missing_ok=True)
        executed.with_suffix(".html").unlink(missing_ok=True)
    return error


def export_html(executed: Path, html_path: Path, render: dict | None = None) -> None:
    """Publish an executed notebook as self-contained HTML (:func:`.html.published_html`).

    Args:
        executed: the executed ``.ipynb``; its folder holds ``<study>/summary.json``.
        html_path: where the HTML goes (written atomically).
        render: the render record; with it the page opens with the verdict, provenance and
            how to reproduce.
    """
    nb = nbformat.read(executed, as_version=4)
    study = executed.stem
    summary = read_json(executed.parent / study / "summary.json")
    header = study_summary_html(study, summary, render) if render is not None else ""
    title = str((summary or {}).get("title") or notebook_title(nb) or study)
    write_atomic(html_path, published_html(nb, title, header))


def _publish(executed: Path, record: dict) -> Exception | None:
    """Export `executed` to HTML (when it exists); return the exception raised, if any."""
    if not executed.exists():
        return None
    try:
        export_html(executed, executed.with_suffix(".html"), record)
    except Exception as exc:  # render.json must still be written, with the error
        return exc
    return None


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
    kernel_name: str | None = None,
) -> dict:
    """Execute one study with papermill and publish it as HTML with a provenance record.

    The HTML opens with the verdict, the runs, provenance and how to reproduce (see
    :mod:`.html`). Clears ``<reports_dir>/<study>/`` first so no table or figure from an older
    render survives.

    Args:
        study: study name (``NN-name``). param_set: parameter set in ``notebooks/params/<study>/``.
        notebooks_dir, reports_dir: default to ``notebooks/`` and ``reports/`` in the project.
        extra_parameters: parameters set on top of the YAML set (not ``output_dir``).
        kernel_name: Jupyter kernel that runs the notebook; default :func:`default_kernel`.

    Returns:
        The render.json record: study, param_set, status, error, parameters, started, finished,
        seconds (notebook execution), package_versions, git, kernel_name, params_file (relative
        to the project root), extra_parameters, command.

    Raises:
        ValueError: unknown study or parameter set (before anything runs).
        Exception: whatever papermill raised (`PapermillExecutionError` for a failing cell),
            after the executed notebook, its HTML and render.json (status "failed") are written.
    """
    nb_dir, out_root = notebooks_dir_or_default(notebooks_dir), reports_dir_or_default(reports_dir)
    check_study(study, nb_dir)
    params_file = params_path(study, param_set, nb_dir)
    parameters = _study_parameters(params_file, study, extra_parameters)  # relative to the kernel's cwd
    kernel_name = kernel_name or default_kernel()
    out_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_stages(out_root)
    stage = out_root / f".staging-{study}-{uuid.uuid4().hex[:8]}"
    (stage / study).mkdir(parents=True)
    (stage / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    try:
        study_ipynb, executed = nb_dir / f"{study}.ipynb", stage / f"{study}.ipynb"
        published = out_root / f"{study}.ipynb"
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        error = _execute(study_ipynb, executed, parameters, kernel_name, published, out_root)
        record = _render_record(study, param_set, parameters, error, started, t0) | {
            "kernel_name": kernel_name, "params_file": shown_path(params_file, out_root),
            "extra_parameters": extra_parameters or {},
            "command": papermill_command(study_ipynb, published, params_file, out_root, study,
                                         extra_parameters, kernel_name),
        }
        export_error = _publish(executed, record)
        if export_error and not error:  # a failing cell is the more useful error to report
            error = export_error
            record.update(status="failed", error=error_summary(export_error))
        write_atomic(stage / study / "render.json", json.dumps(record, indent=2, default=str) + "\n")
        _move_into_place(stage, out_root, study)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if error:
        raise error
    return record


def _move_into_place(stage: Path, out_root: Path, study: str) -> None:
    """Replace the study's folder, executed notebook and HTML by the staged ones, each by one rename."""
    folder, trash = out_root / study, out_root / f".old-{study}-{uuid.uuid4().hex[:8]}"
    if folder.exists():
        os.replace(folder, trash)
    os.replace(stage / study, folder)
    for suffix in (".ipynb", ".html"):
        staged, final = stage / f"{study}{suffix}", out_root / f"{study}{suffix}"
        if staged.exists():
            os.replace(staged, final)
        else:  # nothing ran: do not leave an older page looking current
            final.unlink(missing_ok=True)
    shutil.rmtree(trash, ignore_errors=True)


OWNER = ".owner"


def _owner_dead(stage: Path) -> bool:
    """True when `stage` was made by a process on this host that no longer runs."""
    try:
        owner = json.loads((stage / OWNER).read_text())
        if owner.get("host") != socket.gethostname():
            return False
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unreadable, or alive but not ours to signal: leave it to the age rule
    return False


def _remove_stale_stages(out_root: Path, max_age: float = 3600) -> None:
    """Remove staging folders whose render died on this host, and any leftover older than ``max_age`` s."""
    now = time.time()
    for p in out_root.glob(".*"):
        if p.is_dir() and p.name.startswith((".staging-", ".old-")):
            try:
                if _owner_dead(p) or now - p.stat().st_mtime > max_age:
                    shutil.rmtree(p, ignore_errors=True)
            except FileNotFoundError:
                continue


def build_index(
    reports_dir: str | Path | None = None, *, notebooks_dir: str | Path | None = None
) -> Path:
    """Write ``<reports_dir>/index.html`` (one section per study, :mod:`.index`) and ``claims.html``.

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
    write_claims_page(out_root)
    write_atomic(index, index_page(out_root, studies))
    return index


def _studies_to_render(studies, param_set: str, nb_dir: Path, skip_missing: bool) -> list[str]:
    """Validate study names and parameter sets up front, before any study trains."""
    names = list(studies) if studies else list_studies(nb_dir)
    if not names:
        raise ValueError(f"no studies found in {nb_dir} (expected NN-name.ipynb + NN-name.py)")
    for study in names:
        check_study(study, nb_dir)
    missing = [s for s in names if param_set not in param_sets(s, nb_dir)]
    if missing and not skip_missing:
        params_path(missing[0], param_set, nb_dir)  # raises with the sets that exist
    for study in missing:
        print(f"skip     {study}: no parameter set {param_set!r}", flush=True)
    return [s for s in names if s not in missing]


def render_all(
    param_set: str = "default", studies: list[str] | None = None,
    reports_dir: str | Path | None = None, *, notebooks_dir: str | Path | None = None,
    skip_missing: bool = False, workers: int = 1,
) -> Path:
    """Render studies one after another, then the index; fail at the end if any study failed.

    Args:
        param_set: parameter set used for every study. studies: names; default all studies.
        reports_dir, notebooks_dir: default to ``reports/`` and ``notebooks/`` in the project.
        skip_missing: skip studies without `param_set` (e.g. the optional ``full``) instead of
            raising ValueError.
        workers: N > 1 renders every study with ``workers = N`` on one LocalCluster of N
            one-thread processes started here and shared by all studies
            (:func:`analysis_lib.runs.executors.local_pool`), so its start-up and first imports
            are paid once; the reports record ``workers = N`` (the results do not depend on it).

    Returns:
        Path of the index.html written.

    Raises:
        ValueError: unknown study, or a missing parameter set (before anything runs).
        RuntimeError: one or more studies failed to render; the message names each one.
    """
    from ..runs.executors import check_executor_parameters, local_pool

    check_executor_parameters(workers, "")
    nb_dir, out_root = notebooks_dir_or_default(notebooks_dir), reports_dir_or_default(reports_dir)
    failures = {}
    chosen = _studies_to_render(studies, param_set, nb_dir, skip_missing)
    extra = {"workers": workers} if workers > 1 else None
    with local_pool(workers) if workers > 1 else contextlib.nullcontext():
        for study in chosen:
            t0 = time.perf_counter()
            try:
                render_study(study, param_set, notebooks_dir=nb_dir, reports_dir=out_root, extra_parameters=extra)
            except Exception as exc:
                failures[study] = error_summary(exc)
            status = "FAILED" if study in failures else "ok"
            print(f"{status:<8} {study} ({param_set}) {time.perf_counter() - t0:7.1f} s", flush=True)
    index = build_index(out_root, notebooks_dir=nb_dir)
    if failures:
        listed = "; ".join(f"{s}: {msg}" for s, msg in failures.items())
        raise RuntimeError(
            f"{len(failures)} studies failed to render ({listed}); "
            f"the executed notebooks in {shown_path(out_root, out_root)} show the error"
        )
    return index
