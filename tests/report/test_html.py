"""Publishing an executed notebook as one HTML page, without a kernel.

The page forbids scripts and remote resources, folds code into <details>, gives every figure alt text from the
note before it (escaped), puts the summary block (verdict, provenance, how to reproduce, links to the notebook,
index and claims) under the title, escapes every value, and leaves the notebook it was given unchanged.
"""

from __future__ import annotations

import copy
from html.parser import HTMLParser

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from analysis_lib.report.fragments import CONTENT_SECURITY_POLICY
from analysis_lib.report.html import add_alt_text, figure_alt_text, notebook_title, published_html, study_summary_html
from tests.report.fake_studies import PageParts

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
HIDDEN = "hidden_marker_value = 4242"
RENDER = {"status": "ok", "param_set": "smoke", "params_file": "notebooks/params/07-x/smoke.yaml",
          "command": "papermill notebooks/07-x.ipynb reports/07-x.ipynb --cwd reports -p output_dir 07-x",
          "git": {"commit": "abcdef0123456789", "modified": False}, "extra_parameters": {}}
SUMMARY = {"title": "x", "verdict": [{"claim": "c", "measured": "m", "n": 3, "reproduced": "yes"}],
           "runs": {"finished": 3, "diverged": 0, "failed": 0}}


def _tags(page):
    """Every start tag of a page in order, as (tag, sorted attributes)."""
    tags = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: tags.append((tag, tuple(sorted(attrs))))
    parser.feed(page)
    return tags


def _executed_notebook():
    """A notebook as papermill leaves it: a title, a code cell printing, a note and a figure."""
    figure = new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})
    return new_notebook(cells=[
        new_markdown_cell("# Fake study\n\nWhat it asks."),
        new_code_cell(HIDDEN + "\nprint('printed line')",
                      outputs=[new_output("stream", name="stdout", text="printed line\n")]),
        new_markdown_cell('**Loss & "noise" <1.** Look for the fall.'),
        new_code_cell("show()", outputs=[figure]),
    ])


@pytest.mark.parametrize("markdown, number, expected", [
    ("**Gradient norm per layer.** Look for layers that differ.", 1, "Gradient norm per layer."),
    ("Layer profiles of `rotation`. Look for crossings.", 2, "Layer profiles of rotation"),
    ("See [the paper](https://example.org) for why.\n\nMore.", 3, "See the paper for why."),
    ("", 4, "Figure 4"),
])
def test_figure_alt_text_comes_from_the_note_before_the_figure(markdown, number, expected):
    assert figure_alt_text(markdown, number) == expected


def test_notebook_title_is_the_heading_of_the_first_markdown_cell():
    assert notebook_title(_executed_notebook()) == "Fake study"
    assert notebook_title(new_notebook(cells=[new_markdown_cell("No heading"), new_markdown_cell("# Later")])) is None
    assert notebook_title(new_notebook(cells=[new_code_cell("x = 1")])) is None


def test_alt_text_is_stored_escaped_on_every_figure():
    nb = _executed_notebook()
    assert add_alt_text(nb) == 1
    assert nb.cells[3].outputs[0].metadata["alt"] == "Loss &amp; &quot;noise&quot; &lt;1."


def test_published_page_forbids_scripts_folds_code_and_keeps_the_notebook():
    nb = _executed_notebook()
    before = copy.deepcopy(nb)
    page = published_html(nb, "A <title>", '<section class="study-summary">SUMMARY BLOCK</section>')
    assert nb == before  # published from a copy
    parts = PageParts(page)
    assert parts.scripts == 0 and "script-src" not in page
    tags = _tags(page)
    csp = ("meta", (("content", CONTENT_SECURITY_POLICY), ("http-equiv", "Content-Security-Policy")))
    policy = tags.index(csp)
    assert policy < min(i for i, (tag, _) in enumerate(tags) if tag in ("style", "link", "img"))  # before any load
    assert "<title>A &lt;title&gt;</title>" in page
    shown = "".join(parts.shown)
    assert "hidden_marker_value" in page and "hidden_marker_value" not in shown  # folded, one click away
    assert "printed line" in shown and "What it asks." in shown  # outputs and markdown stay visible
    assert parts.alts == ['Loss & "noise" <1.']
    assert page.index("What it asks.") < page.index("SUMMARY BLOCK") < page.index("printed line")
    assert f"data:image/png;base64,{PNG}" in page
    nbformat.validate(nb)


def test_summary_block_escapes_values_and_links_the_files():
    render = {**RENDER, "command": RENDER["command"] + " -y '{\"title\": \"<b>bold</b>\"}'",
              "extra_parameters": {"title": "<b>bold</b>"}}
    block = study_summary_html("07-x", SUMMARY, render)
    assert block.startswith('<section class="study-summary"><h2>Verdict</h2>') and block.endswith("</section>")
    assert "1 of 1 claims reproduced" in block and "3 finished, 0 diverged, 0 failed" in block
    assert "<b>" not in block and "&lt;b&gt;bold&lt;/b&gt;" in block
    assert "make report STUDY=07-x" not in block  # extra parameters: only the exact command reproduces it
    assert "abcdef0" in block and "notebooks/params/07-x/smoke.yaml" in block
    refs = PageParts(block).refs
    assert {"07-x.ipynb", "index.html", "claims.html"} <= set(refs)
    plain = study_summary_html("07-x", SUMMARY, RENDER)
    assert "make report STUDY=07-x PARAMS=smoke" in plain


def test_summary_block_of_a_failed_or_unfinished_study():
    failed = study_summary_html("07-x", None, {**RENDER, "status": "failed", "error": "cell 3: <ValueError>"})
    assert '<p class="failed">This study failed: cell 3: &lt;ValueError&gt;</p>' in failed
    assert "No verdict: the notebook did not finish." in failed
    assert "claims reproduced" not in failed


def test_smoke_renders_carry_a_banner_and_not_tested_rows_are_counted():
    assert RENDER["param_set"] == "smoke"
    summary = {**SUMMARY, "verdict": [*SUMMARY["verdict"], {"claim": "c", "source": "s", "measured": "m", "n": 0,
                                                            "reproduced": "not tested"}]}
    block = study_summary_html("07-x", summary, RENDER)
    assert "smoke parameters: a pipeline check, not a result" in block
    assert "1 of 2 claims reproduced, 1 not tested" in block and 'class="not-tested"' in block
    assert "not tested: no data reached the claim" in block  # the rule is stated beside the table
    assert "smoke parameters" not in study_summary_html("07-x", summary, {**RENDER, "param_set": "default"})
