"""Published reports hold no absolute path of the machine that rendered them.

One `render_all` of two tiny fake studies (two kernel starts) into a reports folder outside the project: one
prints this machine's folders, saves a table and warns from a file under sys.prefix, the other fails inside
pandas (a traceback through site-packages). No file under the reports folder (html, ipynb, json, csv) may hold
the absolute path of the project root, the reports folder, the data folder or sys.prefix, and the recorded
command runs from the project root with `--cwd` and a relative `output_dir`. Unit tests of the pieces:
`shown_path`, the quoting of `papermill_command` (checked through a real shell), and `scrub`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from analysis_lib import paths
from analysis_lib.report.portable import machine_paths, papermill_command, scrub, shown_path
from analysis_lib.report.render import render_all
from tests.report.fake_studies import write_fake_study

TELLTALE = """\
import os, sys, warnings
from analysis_lib import paths
from analysis_lib.report.outputs import StudyOutputs
outputs = StudyOutputs(out.name, output_dir)
outputs.save_table("table", pd.DataFrame({"x": [1, 2]}))
print("output folder:", os.path.abspath(output_dir))
print("data folder:", paths.data_dir())
print("project:", paths.project_root())
warnings.warn_explicit("careful", UserWarning, filename=sys.prefix + "/lib/site-packages/fake.py", lineno=3)
"""
FAILS_IN_PANDAS = "pd.DataFrame({'x': [1]}).loc[:, 'missing']"
STUDIES = ("01-telltale", "02-pandas-error")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("portable")
    nb_dir, reports = root / "notebooks", root / "reports"
    write_fake_study(nb_dir, STUDIES[0], {"smoke": {"title": "telltale"}}, extra_cells=[TELLTALE])
    write_fake_study(nb_dir, STUDIES[1], {"smoke": {}}, extra_cells=[FAILS_IN_PANDAS])
    with pytest.raises(RuntimeError, match=STUDIES[1]):
        render_all("smoke", reports_dir=reports, notebooks_dir=nb_dir)
    return reports


def _machine_folders(reports: Path) -> set[str]:
    folders = {paths.project_root(), reports, paths.data_dir(), Path(sys.prefix)}
    return {str(f) for f in folders} | {str(f.resolve()) for f in folders}


def test_the_studies_printed_this_machines_folders(published):
    executed = (published / f"{STUDIES[0]}.ipynb").read_text()
    assert "output folder: $ANALYSIS_LIB_REPORTS/01-telltale" in executed
    assert "project: ." in executed
    assert "<python>/lib/site-packages/fake.py:3: UserWarning: careful" in executed
    assert "KeyError" in (published / f"{STUDIES[1]}.ipynb").read_text()
    assert (published / STUDIES[0] / "table.csv").is_file()


def test_no_published_file_holds_an_absolute_path_of_this_machine(published):
    files = [p for p in published.rglob("*") if p.suffix in (".html", ".ipynb", ".json", ".csv")]
    assert {p.suffix for p in files} == {".html", ".ipynb", ".json", ".csv"}
    assert len([p for p in files if p.name == "render.json"]) == 2
    folders = _machine_folders(published)  # never in any form
    leaks = {(p.name, f) for p in files for f in folders if f in p.read_text()}
    assert leaks == set()
    assert "data folder: $ANALYSIS_LIB_DATA" in (published / f"{STUDIES[0]}.ipynb").read_text()


def test_recorded_command_holds_no_absolute_path(published):
    for study in STUDIES:
        record = json.loads((published / study / "render.json").read_text())
        argv = shlex.split(record["command"])
        assert argv[0] == "papermill"
        assert not [a for a in argv if os.path.isabs(a) or any(f in a for f in _machine_folders(published))]
        assert argv[argv.index("--cwd") + 1] == "$ANALYSIS_LIB_REPORTS"
        i = argv.index("-p")
        assert argv[i: i + 3] == ["-p", "output_dir", study]
        assert record["parameters"]["output_dir"] == study
        assert not os.path.isabs(record["params_file"])


def test_shown_path_inside_the_project_is_relative():
    root = paths.project_root()
    assert shown_path(root / "notebooks" / "01-x.ipynb") == "notebooks/01-x.ipynb"
    assert shown_path(root) == "."
    # a reports folder inside the project is shown from the project root, not from the variable
    assert shown_path(root / "reports" / "01-x.html", root / "reports") == "reports/01-x.html"


def test_shown_path_inside_an_outside_reports_root_uses_the_variable(tmp_path):
    reports = tmp_path / "published reports"
    assert shown_path(reports / "01-x" / "table.csv", reports) == "$ANALYSIS_LIB_REPORTS/01-x/table.csv"
    assert shown_path(reports, reports) == "$ANALYSIS_LIB_REPORTS"


def test_shown_path_elsewhere_is_relative_to_the_project_root(tmp_path):
    elsewhere = tmp_path / "notebooks" / "01-x.ipynb"
    shown = shown_path(elsewhere, tmp_path / "reports")
    assert shown.startswith("../") and not os.path.isabs(shown)
    assert (paths.project_root() / shown).resolve() == elsewhere.resolve()


def test_papermill_command_quotes_every_part_for_a_shell(tmp_path):
    """The command, run by bash from the project root, gives papermill exactly the intended arguments."""
    reports = tmp_path / "my reports"
    notebook, params = tmp_path / "note books" / "01-x.ipynb", tmp_path / "p's" / "smoke.yaml"
    extra = {"title": "it's \"quoted\" $HOME", "n": 2}
    command = papermill_command(notebook, reports / "01-x.ipynb", params, reports, "01-x", extra, "py 3")
    assert '"$ANALYSIS_LIB_REPORTS"' in command
    printed = subprocess.run(["bash", "-c", command.replace("papermill", "printf '%s\\n'", 1)],
                             cwd=paths.project_root(), env={**os.environ, "ANALYSIS_LIB_REPORTS": str(reports)},
                             capture_output=True, text=True, check=True).stdout.splitlines()
    resolved = [str((paths.project_root() / a).resolve()) if a.startswith("..") else a for a in printed]
    assert resolved == [str(notebook), str(reports / "01-x.ipynb"), "--cwd", str(reports), "-k", "py 3",
                        "-f", str(params), "-p", "output_dir", "01-x", "-y", json.dumps(extra, sort_keys=True)]
    assert json.loads(printed[-1]) == extra


def test_scrub_replaces_sys_prefix_in_a_warning_line(tmp_path):
    line = f"{sys.prefix}/lib/python3.11/site-packages/pkg/mod.py:12: UserWarning: careful\n"
    scrubbed = scrub(line, machine_paths(tmp_path / "reports"))
    assert scrubbed == "<python>/lib/python3.11/site-packages/pkg/mod.py:12: UserWarning: careful\n"
    assert scrub("nothing to replace", machine_paths(tmp_path)) == "nothing to replace"
