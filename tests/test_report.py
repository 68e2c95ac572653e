"""The renderer end to end on tiny fake studies: papermill -> executed notebook -> HTML -> index.

Four kernel starts in all (~5 s each): the module fixture renders a failing and a working study
with `render_all`; one test renders with extra parameters and replays the recorded command.
"""

import json
import shlex
import subprocess
import sys

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from analysis_lib import report
from analysis_lib.provenance import project_root

SCRIPT_TITLE = "<script>alert(1)</script> fake study"
HIDDEN_SOURCE = "hidden_marker_value = 4242"  # appears only in a code cell's source
FAILURE = "fake study failed on purpose"

STUDY_BODY = f"""\
import json
import pathlib
import matplotlib.pyplot as plt
from IPython.display import Image, display
{HIDDEN_SOURCE}
out = pathlib.Path(output_dir)
if fail:
    raise RuntimeError("{FAILURE}")
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [1, 0])
fig.savefig(out / "curve.png")
plt.close(fig)
verdict = [{{"claim": "loss falls", "measured": "1 -> 0", "reproduced": "yes"}}]
summary = {{"study": out.name, "title": title, "question": "Does the renderer publish it?",
           "verdict": verdict, "runs": {{"finished": 2, "diverged": 1, "failed": 0}},
           "params": {{"title": title}}}}
(out / "summary.json").write_text(json.dumps(summary))
display(Image(filename=str(out / "curve.png")))
"""


def write_fake_study(notebooks_dir, study, param_sets):
    """Write a 3-cell study notebook, its py:percent pair and its parameter sets."""
    nb = new_notebook(cells=[
        new_markdown_cell("# Fake study\n\nDoes the renderer publish a study?"),
        new_code_cell('output_dir = ""\ntitle = "x"\nfail = False', metadata={"tags": ["parameters"]}),
        new_code_cell(STUDY_BODY),
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


def test_html_embeds_the_figure_and_hides_code(rendered):
    page = (rendered["reports"] / "02-fake.html").read_text()
    assert "data:image/png;base64," in page
    assert "hidden_marker_value" not in page
    assert "Does the renderer publish a study?" in page  # markdown stays visible
    assert (rendered["reports"] / "02-fake" / "curve.png").is_file()


def test_index_links_reports_relatively_and_escapes_file_text(rendered):
    index = (rendered["reports"] / "index.html").read_text()
    assert 'href="02-fake.html"' in index
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert "<script" not in index  # neither the title nor any external script
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


def test_failing_study_is_published_with_its_error_and_fails_render_all(rendered):
    record = json.loads((rendered["reports"] / "01-broken" / "render.json").read_text())
    assert record["status"] == "failed" and FAILURE in record["error"]
    assert FAILURE in (rendered["reports"] / "01-broken.html").read_text()
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
