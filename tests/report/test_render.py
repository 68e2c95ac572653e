"""The renderer end to end on tiny fake studies: papermill -> executed notebook -> HTML -> index.

Four kernel starts in all (~5 s each): the module fixture renders a failing and a working study
with `render_all`; one test renders with extra parameters and replays the recorded command.
The rest read the files: published pages are self-contained (no script, no absolute or network
reference), escape markup from parameters, open with the verdict and how to reproduce, and keep
working when the folder moves. The same kind of pages in a real browser: test_browser.py.
"""

import html
import json
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from analysis_lib import html_export, report
from analysis_lib.provenance import project_root

SCRIPT_TITLE = "<script>alert(1)</script> fake study"
ESCAPED_TITLE = "&lt;script&gt;alert(1)&lt;/script&gt; fake study"
FIGURE_NOTE = "**A falling line.** Look for the line going down."
HIDDEN_SOURCE = "hidden_marker_value = 4242"  # only in a code cell's source (folded when published)
FAILURE = "fake study failed on purpose"

STUDY_BODY = f"""\
import json
import pathlib
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display
{HIDDEN_SOURCE}
out = pathlib.Path(output_dir)
if fail:
    raise RuntimeError("{FAILURE}")
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [1, 0])
fig.savefig(out / "curve.png")
plt.close(fig)
verdict = [{{"claim": "loss falls for " + title, "measured": "1 -> 0", "n": 2,
            "reproduced": "yes"}}]
summary = {{"study": out.name, "title": title, "question": "Does the renderer publish it?",
           "verdict": verdict, "runs": {{"finished": 2, "diverged": 1, "failed": 0}},
           "params": {{"title": title}}}}
(out / "summary.json").write_text(json.dumps(summary))
print("title:", title)
"""
FIGURE_CELL = 'display(Image(filename=str(out / "curve.png")))\npd.DataFrame({"title": [title]})'


class PageParts(HTMLParser):
    """What a page holds for a reader: references (src, href), image alt texts, scripts, and
    the text outside folded ``<details>`` (what shows before any click)."""

    def __init__(self, text):
        super().__init__()
        self.refs, self.alts, self.scripts, self.folded, self.shown = [], [], 0, 0, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[k] for k in ("src", "href") if attrs.get(k)]
        self.alts += [attrs.get("alt")] if tag == "img" else []
        self.scripts += tag == "script"
        self.folded += tag == "details"

    def handle_endtag(self, tag):
        self.folded -= tag == "details"

    def handle_data(self, data):
        if not self.folded:
            self.shown.append(data)


def broken_references(page_path):
    """References of an HTML file that need a network, an absolute path or a missing file."""
    broken = []
    for ref in PageParts(page_path.read_text()).refs:
        if ref.startswith(("data:image/", "#")):
            continue
        local = ref.split("#")[0]
        if ":" in local or local.startswith("/") or not (page_path.parent / local).is_file():
            broken.append(ref)
    return broken


def write_fake_study(notebooks_dir, study, param_sets):
    """Write a 5-cell study notebook, its py:percent pair and its parameter sets."""
    nb = new_notebook(cells=[
        new_markdown_cell("# Fake study\n\nDoes the renderer publish a study?"),
        new_code_cell('output_dir = ""\ntitle = "x"\nfail = False', metadata={"tags": ["parameters"]}),
        new_code_cell(STUDY_BODY),
        new_markdown_cell(FIGURE_NOTE),
        new_code_cell(FIGURE_CELL),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, notebooks_dir / f"{study}.ipynb")
    (notebooks_dir / f"{study}.py").write_text(jupytext.writes(nb, fmt="py:percent"))
    for name, values in param_sets.items():
        path = notebooks_dir / "params" / study / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))  # JSON is YAML


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Render a failing study (01) and a working one (02) in one `render_all` call."""
    root = tmp_path_factory.mktemp("project")
    nb_dir, reports_dir = root / "notebooks", root / "reports"
    write_fake_study(nb_dir, "01-broken", {"default": {"fail": True}})
    write_fake_study(nb_dir, "02-fake", {"default": {"title": SCRIPT_TITLE}, "smoke": {}})
    with pytest.raises(RuntimeError) as failure:
        report.render_all("default", reports_dir=reports_dir, notebooks_dir=nb_dir)
    return {"nb_dir": nb_dir, "reports": reports_dir, "error": str(failure.value)}


def test_html_embeds_figures_with_alt_text_and_folds_code(rendered):
    page = (rendered["reports"] / "02-fake.html").read_text()
    parts = PageParts(page)
    assert "data:image/png;base64," in page
    assert parts.alts == ["A falling line."]  # from the markdown line before the figure
    shown = "".join(parts.shown)
    assert HIDDEN_SOURCE.split()[0] in page and "hidden_marker_value" not in shown  # folded
    assert "Does the renderer publish a study?" in shown  # markdown stays visible
    assert (rendered["reports"] / "02-fake" / "curve.png").is_file()


def test_study_report_opens_with_verdict_runs_and_how_to_reproduce(rendered):
    page = (rendered["reports"] / "02-fake.html").read_text()
    record = json.loads((rendered["reports"] / "02-fake" / "render.json").read_text())
    top = page[:page.index("<img")]  # everything before the first figure
    for expected in ["1 of 1 claims reproduced", "2 finished, 1 diverged, 0 failed",
                     "How to reproduce", "make report STUDY=02-fake PARAMS=default",
                     html.escape(record["command"]), html.escape(record["params_file"]),
                     record["git"]["commit"][:7], 'href="02-fake.ipynb"']:
        assert expected in top, expected


def test_published_pages_load_nothing_and_run_no_script(rendered):
    for name in ("index.html", "01-broken.html", "02-fake.html"):
        page_path = rendered["reports"] / name
        page = page_path.read_text()
        assert PageParts(page).scripts == 0, page_path.name
        assert 'http-equiv="Content-Security-Policy"' in page and "script-src" not in page
        assert broken_references(page_path) == [], page_path.name


def test_moving_the_reports_folder_keeps_every_report_intact(rendered, tmp_path):
    moved = tmp_path / "elsewhere" / "published"
    shutil.copytree(rendered["reports"], tmp_path / "copy")
    shutil.move(tmp_path / "copy", moved)
    pages = sorted(moved.glob("*.html"))
    assert [p.name for p in pages] == ["01-broken.html", "02-fake.html", "index.html"]
    for page_path in pages:
        assert broken_references(page_path) == [], page_path.name
        refs = PageParts(page_path.read_text()).refs
        assert not [r for r in refs if str(rendered["reports"]) in r], page_path.name
    assert 'href="02-fake.html"' in (moved / "index.html").read_text()


def test_markup_in_a_parameter_shows_as_text(rendered):
    for name in ("index.html", "02-fake.html"):
        page = (rendered["reports"] / name).read_text()
        assert "<script" not in page.lower(), name
        assert ESCAPED_TITLE in page, name
    study = (rendered["reports"] / "02-fake.html").read_text()
    assert f"<title>{ESCAPED_TITLE}</title>" in study
    assert study.count(ESCAPED_TITLE) >= 4  # title, verdict claim, printed line, table cell


def test_index_links_reports_relatively_with_verdict_and_runs(rendered):
    index = (rendered["reports"] / "index.html").read_text()
    assert 'href="02-fake.html"' in index and 'href="02-fake.ipynb"' in index
    assert "1 of 1 claims reproduced" in index and "2 finished, 1 diverged, 0 failed" in index
    assert "failed" in index.split('id="01-broken"')[1].split("</section>")[0]


def test_render_json_records_provenance(rendered):
    record = json.loads((rendered["reports"] / "02-fake" / "render.json").read_text())
    assert record["status"] == "ok" and record["param_set"] == "default"
    assert set(record["git"]) == {"commit", "modified"}
    assert {"python", "torch", "papermill"} <= set(record["package_versions"])
    assert record["parameters"]["output_dir"] == str(rendered["reports"] / "02-fake")
    assert record["parameters"]["title"] == SCRIPT_TITLE
    assert record["command"].startswith("papermill ") and record["seconds"] > 0
    assert record["params_file"].endswith("params/02-fake/default.yaml")
    assert record["extra_parameters"] == {}


def test_failing_study_is_published_with_its_error_and_fails_render_all(rendered):
    record = json.loads((rendered["reports"] / "01-broken" / "render.json").read_text())
    assert record["status"] == "failed" and FAILURE in record["error"]
    page = (rendered["reports"] / "01-broken.html").read_text()
    assert FAILURE in page.split('class="study-summary"')[1].split("</section>")[0]  # on top
    assert "01-broken" in rendered["error"] and "02-fake" not in rendered["error"]


def test_unknown_parameter_set_is_named(rendered):
    with pytest.raises(ValueError, match=r"'02-fake'.*'nope'.*default, smoke"):
        report.render_study("02-fake", "nope", notebooks_dir=rendered["nb_dir"],
                            reports_dir=rendered["reports"])


def test_index_survives_missing_and_malformed_files(tmp_path):
    (tmp_path / "03-empty").mkdir()
    (tmp_path / "04-garbled").mkdir()
    (tmp_path / "04-garbled" / "summary.json").write_text("[not an object")
    page = report.build_index(tmp_path, notebooks_dir=tmp_path / "none").read_text()
    assert "03-empty" in page and "not rendered" in page and "04-garbled" in page


def _fake_rendered_study(root, study, runs, git):
    """A study folder with a summary.json and render.json, as if rendered, without a kernel."""
    (root / study).mkdir(parents=True)
    summary = {"title": study, "question": "q?", "verdict": [], "runs": runs}
    render = {"status": "ok", "param_set": "smoke", "seconds": 12.34, "git": git,
              "package_versions": {"python": "3.11.7", "torch": "2.13.0"}, "command": "papermill x"}
    (root / study / "summary.json").write_text(json.dumps(summary))
    (root / study / "render.json").write_text(json.dumps(render))


def test_index_lists_a_diverged_run_as_diverged_with_provenance(tmp_path):
    _fake_rendered_study(tmp_path, "05-sweep", {"finished": 7, "diverged": 1, "failed": 0},
                         {"commit": "abcdef0123456789", "modified": True})
    _fake_rendered_study(tmp_path, "06-calm", {"finished": 8, "diverged": 0, "failed": 0},
                         {"commit": "0123456789abcdef", "modified": False})
    page = report.build_index(tmp_path, notebooks_dir=tmp_path / "none").read_text()
    sweep, calm = page.split('id="05-sweep"')[1], page.split('id="06-calm"')[1]
    assert '<dd class="runs warn">7 finished, 1 diverged, 0 failed</dd>' in sweep
    assert '<dd class="runs">8 finished, 0 diverged, 0 failed</dd>' in calm
    assert "abcdef0 (modified" in sweep and "0123456 (modified" not in calm
    for expected in ("smoke", "12.3 s", "python 3.11.7, torch 2.13.0"):
        assert expected in sweep


@pytest.mark.parametrize("markdown, number, expected", [
    ("**Gradient norm per layer.** Look for layers that differ.", 1, "Gradient norm per layer."),
    ("Layer profiles of `rotation`. Look for crossings.", 2, "Layer profiles of rotation"),
    ("See [the paper](https://example.org) for why.\n\nMore.", 3, "See the paper for why."),
    ("", 4, "Figure 4"),
])
def test_figure_alt_text_comes_from_the_note_before_the_figure(markdown, number, expected):
    assert html_export.figure_alt_text(markdown, number) == expected


def test_recorded_command_reproduces_the_render(rendered, tmp_path):
    record = report.render_study("02-fake", "smoke", notebooks_dir=rendered["nb_dir"],
                                 reports_dir=tmp_path, extra_parameters={"title": "extra"})
    assert record["parameters"]["title"] == "extra"
    first = json.loads((tmp_path / "02-fake" / "summary.json").read_text())
    (tmp_path / "02-fake" / "summary.json").unlink()
    argv = shlex.split(record["command"])
    assert argv[0] == "papermill"
    subprocess.run([sys.executable, "-m", "papermill", *argv[1:], "--no-progress-bar"],
                   cwd=project_root(), check=True, capture_output=True)
    assert json.loads((tmp_path / "02-fake" / "summary.json").read_text()) == first
