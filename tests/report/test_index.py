"""The index of studies, built from summary.json and render.json files without a kernel.

Missing and malformed files give a section that says so, run counts with a diverged or failed run are marked,
provenance is shown, every value is escaped, and a study's status says whether it rendered, failed or is
incomplete.
"""

from __future__ import annotations

import json

import pytest

from analysis_lib.report.index import study_status
from analysis_lib.report.render import build_index


def test_index_survives_missing_and_malformed_files(tmp_path):
    (tmp_path / "03-empty").mkdir()
    (tmp_path / "04-garbled").mkdir()
    (tmp_path / "04-garbled" / "summary.json").write_text("[not an object")
    page = build_index(tmp_path, notebooks_dir=tmp_path / "none").read_text()
    assert "03-empty" in page and "not rendered" in page and "04-garbled" in page


def _fake_rendered_study(root, study, runs, git, title=None):
    """A study folder with a summary.json and render.json, as if rendered, without a kernel."""
    (root / study).mkdir(parents=True)
    summary = {"title": title or study, "question": "q?", "verdict": [], "runs": runs}
    render = {"status": "ok", "param_set": "smoke", "seconds": 12.34, "git": git,
              "package_versions": {"python": "3.11.7", "torch": "2.13.0"}, "command": "papermill x"}
    (root / study / "summary.json").write_text(json.dumps(summary))
    (root / study / "render.json").write_text(json.dumps(render))


def test_index_lists_a_diverged_run_as_diverged_with_provenance(tmp_path):
    _fake_rendered_study(tmp_path, "05-sweep", {"finished": 7, "diverged": 1, "failed": 0},
                         {"commit": "abcdef0123456789", "modified": True})
    _fake_rendered_study(tmp_path, "06-calm", {"finished": 8, "diverged": 0, "failed": 0},
                         {"commit": "0123456789abcdef", "modified": False})
    page = build_index(tmp_path, notebooks_dir=tmp_path / "none").read_text()
    sweep, calm = page.split('id="05-sweep"')[1], page.split('id="06-calm"')[1]
    assert '<dd class="runs warn">7 finished, 1 diverged, 0 failed</dd>' in sweep
    assert '<dd class="runs">8 finished, 0 diverged, 0 failed</dd>' in calm
    assert "abcdef0 (modified" in sweep and "0123456 (modified" not in calm
    for expected in ("smoke", "12.3 s", "python 3.11.7, torch 2.13.0"):
        assert expected in sweep
    assert "smoke parameters: a pipeline check, not a result" in sweep


def test_index_escapes_titles_and_links_only_existing_files(tmp_path):
    _fake_rendered_study(tmp_path, "07-markup", {"finished": 1}, {"commit": "0" * 16},
                         title="<script>alert(1)</script>")
    (tmp_path / "07-markup.html").write_text("")
    page = build_index(tmp_path, notebooks_dir=tmp_path / "none").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="07-markup.html"' in page and 'href="07-markup.ipynb"' not in page  # no notebook written
    assert 'href="claims.html"' in page and (tmp_path / "claims.html").is_file()


@pytest.mark.parametrize("summary, render, status", [
    ({"title": "t"}, {"status": "ok"}, "ok"),
    ({"title": "t"}, {"status": "failed"}, "failed"),
    (None, {"status": "failed"}, "failed"),
    (None, {"status": "ok"}, "incomplete"),
    (None, None, "not rendered"),
])
def test_study_status(summary, render, status):
    assert study_status(summary, render) == status
