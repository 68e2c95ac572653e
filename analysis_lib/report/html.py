"""An executed study notebook as one self-contained, publishable HTML page.

nbconvert's ``lab`` template, with what a published report must not have taken out: require.js,
MathJax, mermaid and widget scripts from a CDN (the studies use none of them; each is a network
request that fails offline). What it adds: a Content-Security-Policy that forbids any script or
remote resource, code cells folded into ``<details>`` (hidden by default, one click away), alt
text on every figure (taken from the markdown line before it, which says what to look for), and
a summary block under the title: the verdict, the runs, provenance and how to reproduce.
Figures stay embedded as base64 PNG, so the page works from any folder or URL.
"""

from __future__ import annotations

import copy
import html
import re

import jinja2
import nbformat
from nbconvert import HTMLExporter

from . import fragments as html_summary

TEMPLATE_NAME = "published.html.j2"
# Blocks of nbconvert's lab/index.html.j2 replaced here; see that file for what they held. The
# CSP goes first in <head> (html_head_js held require.js), before anything could load.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% macro with_alt(img, output) -%}
{{ img | replace('<img ', '<img alt="' ~ output.metadata.get('alt', '') ~ '" ', 1) }}
{%- endmacro %}
{% block html_head_js %}{{ resources.published_head }}{% endblock html_head_js %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block input_group -%}
<details class="code-cell"><summary>show code</summary>{{ super() }}</details>
{%- endblock input_group %}
{% block rawcell scoped -%}
{%- if cell.metadata.get('published_summary') %}{{ cell.source }}{% else %}{{ super() }}{% endif -%}
{%- endblock rawcell %}
{% block data_png scoped %}{{ with_alt(super(), output) }}{% endblock data_png %}
{% block data_jpg scoped %}{{ with_alt(super(), output) }}{% endblock data_jpg %}
{% block data_svg scoped %}{{ with_alt(super(), output) }}{% endblock data_svg %}
"""
_CSS = """
details.code-cell>summary{font-size:.75rem;color:#777;cursor:pointer;margin:.2rem 0}
.study-summary{border:1px solid #ccc;border-radius:.4rem;padding:.2rem 1rem;margin:1rem 0;
font:14px/1.45 var(--jp-content-font-family,system-ui,sans-serif)}
.study-summary h2{font-size:1.15rem}
.study-summary a{color:#0645ad;text-decoration:underline}
"""
IMAGE_TYPES = {"image/png", "image/jpeg", "image/svg+xml"}
_BOLD_LEAD = re.compile(r"^\s*\*\*(.+?)\*\*")
_MARKUP = re.compile(r"[*`#>]|\[([^\]]*)\]\([^)]*\)")  # keep "_": names like grad_norm


def notebook_title(nb) -> str | None:
    """Title of a notebook: the ``# heading`` opening its first markdown cell, or None."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            first = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
            return first[2:].strip() if first.startswith("# ") else None
    return None


def figure_alt_text(markdown: str, number: int) -> str:
    """Alt text for a figure: the bold lead of the markdown before it, else its first sentence.

    Args:
        markdown: source of the markdown cell preceding the figure ("" when there is none).
        number: 1-based figure number, for the fallback ``"Figure 3"``.

    Returns:
        Plain text without markdown markup, at most 250 characters (escaped by the caller).
    """
    lead = _BOLD_LEAD.match(markdown)
    text = lead.group(1) if lead else markdown.strip().split("\n\n")[0].split(". ")[0]
    text = " ".join(_MARKUP.sub(r"\1", text).split())
    return text[:250] or f"Figure {number}"


def add_alt_text(nb) -> int:
    """Store alt text (HTML-escaped) in the metadata of every image output of `nb`, in place.

    Returns:
        The number of figures given alt text.
    """
    markdown, count = "", 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            markdown = cell.source
            continue
        for output in cell.get("outputs", []):
            if IMAGE_TYPES & set(output.get("data", {})):
                count += 1
                alt = figure_alt_text(markdown, count)
                output.setdefault("metadata", {})["alt"] = html.escape(alt, quote=True)
    return count


def insert_summary(nb, summary_html: str) -> None:
    """Insert `summary_html` as a raw cell after the first markdown cell (the title)."""
    # Marked so the template writes it as it is: nbconvert's own raw-cell filter (bleach) would
    # escape <section> and <table>; everything in it is escaped where it is built.
    cell = nbformat.v4.new_raw_cell(summary_html, metadata={"published_summary": True})
    first_md = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
    nb.cells.insert(first_md + 1, cell)


def published_html(nb, title: str, summary_html: str = "") -> str:
    """The publishable HTML page of an executed notebook (see the module docstring).

    Args:
        nb: the executed notebook (not modified). title: the page's <title>.
        summary_html: HTML shown under the title (already escaped; see `study_summary_html`).

    Returns:
        The page text.
    """
    nb = copy.deepcopy(nb)
    add_alt_text(nb)
    if summary_html:
        insert_summary(nb, summary_html)
    exporter = HTMLExporter(
        template_name="lab", template_file=TEMPLATE_NAME, exclude_input_prompt=True,
        exclude_output_prompt=True, extra_loaders=[jinja2.DictLoader({TEMPLATE_NAME: _TEMPLATE})],
    )
    head = f"{html_summary.CSP_META}<style>{html_summary.SUMMARY_CSS}{_CSS}</style>"
    resources = {"metadata": {"name": title}, "published_head": head}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def _files_paragraph(study: str) -> str:
    """Links to the executed notebook and the index, relative so the folder can move."""
    name, notebook = html.escape(study), html_summary.report_link(study, ".ipynb")
    return (f'<p>Files: the executed notebook <a href="{notebook}">{name}.ipynb</a> (every '
            f"output and the code), tables and figures in the folder <code>{name}/</code>; "
            f'back to the <a href="index.html">index of studies</a>; the claims the verdicts test: '
            f'<a href="claims.html">claims</a>.</p>')


def study_summary_html(study: str, summary: dict | None, render: dict) -> str:
    """The block under a report's title: verdict, runs and provenance, how to reproduce, files.

    Args:
        study: study name. summary: summary.json, or None when the notebook did not write it.
        render: the render record (render.json's content).

    Returns:
        ``<section class="study-summary">...</section>``, every value escaped.
    """
    parts = ['<section class="study-summary"><h2>Verdict</h2>', html_summary.smoke_banner(render)]
    if render.get("status") == "failed":
        error = html.escape(str(render.get("error")))
        parts.append(f'<p class="failed">This study failed: {error}</p>')
    if summary:
        parts.append(html_summary.verdict_table(summary.get("verdict")))
        parts.append("<p>The analysis each verdict comes from is below; the report ends with "
                     "the same table.</p>")
    else:
        parts.append("<p>No verdict: the notebook did not finish.</p>")
    parts.append(html_summary.provenance_list(summary or {}, render))
    parts.append("<h2>How to reproduce</h2>" + html_summary.reproduce_block(study, render))
    return "".join(parts) + _files_paragraph(study) + "</section>"
