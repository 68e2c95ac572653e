"""The renderer end to end on tiny fake studies: papermill -> executed notebook -> HTML -> index.

Four kernel starts in all (~5 s each): the module fixture renders a failing and a working study
with `render_all`; one test renders with extra parameters and replays the recorded command.
The rest read the files: published pages are self-contained (no script, no absolute or network
reference), escape markup from parameters, open with the verdict and how to reproduce, and keep
working when the folder moves. The same kind of pages in a real browser: test_browser.py; what
a published file may not hold (absolute paths of this machine): test_portable.py.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from analysis_lib.paths import project_root
from analysis_lib.report.render import render_all, render_study
from tests.report.fake_studies import (
    ESCAPED_TITLE,
    FAILURE,
    HIDDEN_SOURCE,
    SCRIPT_TITLE,
    PageParts,
    broken_references,
    write_fake_study,
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Render a failing study (01) and a working one (02) in one `render_all` call."""
    root = tmp_path_factory.mktemp("project")
    nb_dir, reports_dir = root / "notebooks", root / "reports"
    write_fake_study(nb_dir, "01-broken", {"default": {"fail": True}})
    write_fake_study(nb_dir, "02-fake", {"default": {"title": SCRIPT_TITLE}, "smoke": {}})
    with pytest.raises(RuntimeError) as failure:
        render_all("default", reports_dir=reports_dir, notebooks_dir=nb_dir)
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
                     record["git"]["commit"][:7], 'href="02-fake.ipynb"']:
        assert expected in top, expected
    shown = "".join(PageParts(top).shown)  # the text a reader sees (the command holds quotes)
    for expected in [record["command"], record["params_file"]]:
        assert expected in shown, expected


def test_published_pages_load_nothing_and_run_no_script(rendered):
    for name in ("index.html", "claims.html", "01-broken.html", "02-fake.html"):
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
    assert [p.name for p in pages] == ["01-broken.html", "02-fake.html", "claims.html", "index.html"]
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
    assert record["parameters"]["output_dir"] == "02-fake"  # relative to the kernel's cwd, the reports folder
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


def test_recorded_command_reproduces_the_render(rendered, tmp_path):
    """The command, run by a shell from the project root (reports outside it: $ANALYSIS_LIB_REPORTS set)."""
    record = render_study("02-fake", "smoke", notebooks_dir=rendered["nb_dir"],
                          reports_dir=tmp_path, extra_parameters={"title": "extra"})
    assert record["parameters"]["title"] == "extra"
    first = json.loads((tmp_path / "02-fake" / "summary.json").read_text())
    (tmp_path / "02-fake" / "summary.json").unlink()
    command = record["command"]
    assert shlex.split(command)[0] == "papermill"
    python = f"{shlex.quote(sys.executable)} -m papermill"
    subprocess.run(["bash", "-c", python + command.removeprefix("papermill") + " --no-progress-bar"],
                   cwd=project_root(), env={**os.environ, "ANALYSIS_LIB_REPORTS": str(tmp_path)},
                   check=True, capture_output=True)
    assert json.loads((tmp_path / "02-fake" / "summary.json").read_text()) == first


def test_a_render_killed_mid_way_leaves_the_previous_report_and_index_intact(tmp_path):
    import signal
    import time

    from analysis_lib.report.render import build_index

    nb_dir, reports = tmp_path / "notebooks", tmp_path / "reports"
    slow = "import os, time\ntime.sleep(float(os.environ.get('FAKE_STUDY_SLEEP', '0')))"
    write_fake_study(nb_dir, "03-slow", {"default": {"title": "first render"}}, extra_cells=[slow])
    render_study("03-slow", "default", notebooks_dir=nb_dir, reports_dir=reports)
    build_index(reports, notebooks_dir=nb_dir)
    before = {p.relative_to(reports): p.read_bytes() for p in reports.rglob("*")
              if p.is_file() and not any(part.startswith(".") for part in p.relative_to(reports).parts)}
    code = ("import sys; from analysis_lib.report.render import render_study; "
            "render_study('03-slow', 'default', notebooks_dir=sys.argv[1], reports_dir=sys.argv[2], "
            "extra_parameters={'title': 'second render'})")
    render = subprocess.Popen([sys.executable, "-c", code, str(nb_dir), str(reports)], start_new_session=True,
                              env={**os.environ, "FAKE_STUDY_SLEEP": "120"}, cwd=project_root())
    deadline = time.time() + 60
    while not list(reports.glob(".staging-03-slow-*/03-slow/curve.png")) and time.time() < deadline:
        time.sleep(0.2)  # the kernel is past the figure cell, inside the sleeping one
    assert list(reports.glob(".staging-03-slow-*/03-slow/curve.png")), "the second render never started"
    os.killpg(render.pid, signal.SIGKILL)  # the renderer and its kernel
    render.wait(timeout=30)
    after = {p.relative_to(reports): p.read_bytes() for p in reports.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(reports).parts)}
    assert after == before  # the report, its folder, the executed notebook and the index are as they were
    assert "first render" in (reports / "03-slow.html").read_text()
    assert not [p for p in reports.iterdir() if p.name.endswith(".partial.ipynb")]
    from analysis_lib.report.render import _remove_stale_stages

    _remove_stale_stages(reports)  # what the next render does first: the dead renderer's stage goes
    assert not list(reports.glob(".staging-*"))


def test_a_live_renders_staging_folder_is_kept_and_a_dead_ones_removed(tmp_path):
    import socket

    from analysis_lib.report.render import OWNER, _remove_stale_stages

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for name, pid, host in [("live", os.getpid(), socket.gethostname()), ("dead", int(dead), socket.gethostname()),
                            ("elsewhere", int(dead), "another-host"), ("unmarked", None, None)]:
        stage = tmp_path / f".staging-01-x-{name}"
        stage.mkdir()
        if pid is not None:
            (stage / OWNER).write_text(json.dumps({"host": host, "pid": pid}))
    _remove_stale_stages(tmp_path)
    left = sorted(p.name.rsplit("-", 1)[1] for p in tmp_path.glob(".staging-*"))
    assert left == ["elsewhere", "live", "unmarked"]  # another host's or an unmarked stage waits for the age rule
    _remove_stale_stages(tmp_path, max_age=-1)
    assert not list(tmp_path.glob(".staging-*"))


def test_the_project_kernel_is_used_only_when_it_runs_this_python(monkeypatch):
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

    from analysis_lib.report import render

    def spec_running(python):
        def get(self, name):
            if name != render.PROJECT_KERNEL or python is None:
                raise NoSuchKernel(name)
            return KernelSpec(argv=[python, "-m", "ipykernel_launcher"], display_name="x", language="python")
        return get

    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", spec_running(sys.executable))
    assert render.default_kernel() == "analysis-lib"
    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", spec_running("/another/env/bin/python"))
    assert render.default_kernel() == "python3"
    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", spec_running(None))
    assert render.default_kernel() == "python3"


def test_every_notebook_names_the_project_kernel():
    import nbformat

    from analysis_lib.report.render import PROJECT_KERNEL

    notebooks = sorted((project_root() / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    assert notebooks
    for path in notebooks:
        assert nbformat.read(path, as_version=4).metadata.kernelspec.name == PROJECT_KERNEL, path.name


def test_render_all_with_workers_shares_one_pool_and_records_the_workers(tmp_path, monkeypatch):
    """``report --workers 2``: one pool around every study; each study gets ``workers = 2``."""
    import contextlib

    import analysis_lib.report.render as render
    import analysis_lib.runs.executors as executors

    events = []

    @contextlib.contextmanager
    def fake_pool(workers, **_):
        events.append(("pool start", workers))
        os.environ[executors.POOL_ENV] = "{}"
        yield "tcp://pool"
        del os.environ[executors.POOL_ENV]
        events.append(("pool end", workers))

    def fake_render(study, param_set, **kwargs):
        events.append((study, kwargs["extra_parameters"], executors.POOL_ENV in os.environ))

    nb_dir = tmp_path / "notebooks"
    for name in ("01-a", "02-b"):
        write_fake_study(nb_dir, name, {"default": {}})
    monkeypatch.setattr(executors, "local_pool", fake_pool)
    monkeypatch.setattr(render, "render_study", fake_render)
    monkeypatch.setattr(render, "build_index", lambda *a, **k: tmp_path / "index.html")
    render_all("default", reports_dir=tmp_path / "reports", notebooks_dir=nb_dir, workers=2)
    assert events == [("pool start", 2), ("01-a", {"workers": 2}, True), ("02-b", {"workers": 2}, True),
                      ("pool end", 2)]
    events.clear()
    render_all("default", reports_dir=tmp_path / "reports", notebooks_dir=nb_dir)
    assert events == [("01-a", None, False), ("02-b", None, False)]
    with pytest.raises(ValueError, match="invalid parameter workers=0"):
        render_all("default", reports_dir=tmp_path / "reports", notebooks_dir=nb_dir, workers=0)
