"""``reports/index.html``: one section per study, from its summary.json and render.json.

Each section links the study's report and executed notebook (relative links, so the folder can be
copied or served from any sub-path) and shows the question, the verdict, the parameter set, the
run time, the runs finished / diverged / failed, package versions and the git commit. The page
is one file with inline CSS and no scripts; every value from a file is escaped.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

from .fragments import (
    CSP_META,
    SUMMARY_CSS,
    provenance_list,
    read_json,
    replication_block,
    report_link,
    reproduce_block,
    smoke_banner,
    verdict_table,
)

INDEX_TITLE = "Training-dynamics studies"
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:70rem;margin:2rem auto;
padding:0 1rem;color:#1d1d1f}
h1{font-size:1.6rem}section{border-top:1px solid #ccc;padding:.6rem 0 1rem}
h2{font-size:1.2rem;margin:.4rem 0}.question{font-style:italic}
.badge{font-size:.75rem;padding:.1rem .45rem;border-radius:.6rem;background:#ddd;margin-left:.4rem}
"""
_E = html.escape


def study_status(summary: dict | None, render: dict | None) -> str:
    """Ok | failed | incomplete (rendered without a summary.json) | not rendered."""
    if render and render.get("status") == "failed":
        return "failed"
    if summary is not None:
        return "ok"
    return "incomplete" if render else "not rendered"


def _heading(out_root: Path, study: str, summary: dict | None, status: str) -> str:
    """<h2>: the title linked to the report when it exists, a status badge, the study name."""
    title = _E(str((summary or {}).get("title") or study))
    if (out_root / f"{study}.html").is_file():
        title = f'<a href="{report_link(study)}">{title}</a>'
    badge = f'<span class="badge {status.replace(" ", "-")}">{_E(status)}</span>'
    links = ""
    if (out_root / f"{study}.ipynb").is_file():
        links = f' · <a href="{report_link(study, ".ipynb")}">executed notebook</a>'
    return f"<h2>{title} {badge}</h2><p><code>{_E(study)}</code>{links}</p>"


def study_section(out_root: Path, study: str) -> str:
    """One <section> of the index for `study`.

    Args:
        out_root: the reports folder. study: study name (``NN-name``).

    Returns:
        ``<section id="<study>" class="study-summary">...</section>``.
    """
    summary = read_json(out_root / study / "summary.json")
    render = read_json(out_root / study / "render.json")
    status = study_status(summary, render)
    parts = [f'<section id="{_E(study)}" class="study-summary">',
             _heading(out_root, study, summary, status)]
    parts.append(smoke_banner(render))
    if summary and summary.get("question"):
        parts.append(f'<p class="question">{_E(str(summary["question"]))}</p>')
    if summary is not None:
        parts.append(verdict_table(summary.get("verdict")))
        parts.append(replication_block(read_json(out_root / study / "replication.json")))
    if summary is not None or render is not None:
        parts.append(provenance_list(summary or {}, render or {}))
        parts.append(f"<details><summary>how to reproduce</summary>"
                     f"{reproduce_block(study, render or {})}</details>")
    return "".join(parts) + "</section>"


def index_page(out_root: Path, studies: list[str]) -> str:
    """The self-contained index.html text (inline CSS, no scripts) for `studies`.

    Args:
        out_root: the reports folder holding ``<study>/summary.json`` and ``render.json``.
        studies: study names, in the order they are listed.

    Returns:
        The page text.
    """
    sections = "\n".join(study_section(out_root, s) for s in studies) or "<p>No studies.</p>"
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{CSP_META}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{INDEX_TITLE}</title><style>{_CSS}{SUMMARY_CSS}</style></head><body>"
            f"<h1>{INDEX_TITLE}</h1><p>Generated {_E(generated)}. Each title links to the full "
            f"report (code folded, figures embedded); the executed notebook sits beside it. The "
            f'claims the verdicts test, with definitions and sources: <a href="claims.html">claims</a>.</p>'
            f"\n{sections}\n</body></html>\n")
