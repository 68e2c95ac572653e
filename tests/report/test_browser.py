"""Published reports in a real browser (headless Chromium), with the claims page they cite.

Every study rendered with `smoke` parameters, plus a fake study fed a title full of markup, opened from a copied
folder served at a sub-path and from ``file://`` (see browser_check.py for what is checked on every page); every
link to claims.html#claim-N lands on an anchor of that page. Skipped, with the reason, where no Chromium or no
playwright is installed; `make test` installs Debian's chromium first where it can (root and apt-get). With
REQUIRE_BROWSER=1 (set by .ci/run once chromium is installed, so e.g. a missing playwright cannot hide as a
skip) it is an error. Cost: one smoke render of every study (the run store is shared with
tests/test_notebooks.py, so runs train once per session) and one browser session.
"""

from __future__ import annotations

import os

import pytest

from analysis_lib.report.render import render_all, render_study
from analysis_lib.report.studies import list_studies
from tests.report import browser_check
from tests.report.fake_studies import HIDDEN_SOURCE, write_fake_study

_REASON = browser_check.unavailable_reason()
if _REASON and os.environ.get("REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"REQUIRE_BROWSER=1 but the browser check cannot run: {_REASON}")
if _REASON:
    pytest.skip(f"browser check SKIPPED, not passed: {_REASON}", allow_module_level=True)

pytestmark = pytest.mark.notebook
MARKUP_STUDY = "99-markup"
# Escaped, this is text; unescaped, it would be a script the page refuses (a console error) and a
# broken image (an image that did not load): the check below fails either way.
MARKUP_TITLE = '<script>document.title="pwned"</script><img src="x.png" alt="markup"> study'


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """Render every study (smoke) and the markup study into one folder; check it in Chromium."""
    root = tmp_path_factory.mktemp("browser")
    reports = root / "reports"
    sources = ["Cohen et al. 2021 (claim 7)", "Git Re-Basin, a premise"]  # a claim and an other premise
    write_fake_study(root / "fake-notebooks", MARKUP_STUDY, {"smoke": {"title": MARKUP_TITLE, "sources": sources}})
    render_study(MARKUP_STUDY, "smoke", notebooks_dir=root / "fake-notebooks",
                        reports_dir=reports)
    failed = None
    try:
        render_all("smoke", reports_dir=reports)  # every study; writes the index last
    except RuntimeError as exc:  # a failed study is published with its error: check it too
        failed = str(exc)
    pages = browser_check.check_reports(reports, screenshots=reports / "screenshots")
    return {"reports": reports, "pages": pages, "studies": list_studies(), "failed": failed}


def test_every_study_renders_with_smoke_parameters(checked):
    assert checked["failed"] is None


def test_every_study_and_the_index_are_checked(checked):
    expected = {"index.html", "claims.html", f"{MARKUP_STUDY}.html", *(f"{s}.html" for s in checked["studies"])}
    assert {name.split(" ", 1)[1] for name in checked["pages"]} == expected
    assert {name.split(" ", 1)[0] for name in checked["pages"]} == {"http", "file"}


def test_pages_have_no_console_errors_broken_links_or_outside_requests(checked):
    problems = {name: page.problems for name, page in checked["pages"].items() if page.problems}
    assert problems == {}


def test_every_claim_link_lands_on_an_anchor_of_the_claims_page(checked):
    anchors = set(checked["pages"]["http claims.html"].ids)
    assert {f"claim-{n}" for n in range(1, 20)} | {"other-premises"} <= anchors
    for mode in ("http", "file"):
        linked = {href.partition("#")[2] for name, page in checked["pages"].items() if name.startswith(mode)
                  for href in page.links if href.startswith("claims.html#")}
        assert linked and linked <= anchors, mode  # the studies' verdict rows cite claims


def test_every_figure_loads(checked):
    for study in checked["studies"]:
        for mode in ("http", "file"):
            images = checked["pages"][f"{mode} {study}.html"].images
            assert images and all(i["ok"] and i["alt"] for i in images), (mode, study)


def test_index_links_every_study_report(checked):
    links = checked["pages"]["http index.html"].links
    for study in [*checked["studies"], MARKUP_STUDY]:
        assert f"{study}.html" in links and f"{study}.ipynb" in links


def test_markup_in_a_parameter_shows_as_text_and_code_is_folded(checked):
    for name in ("index.html", f"{MARKUP_STUDY}.html"):
        page = checked["pages"][f"http {name}"]
        assert MARKUP_TITLE in page.text, name
    study = checked["pages"][f"http {MARKUP_STUDY}.html"]
    assert [i["alt"] for i in study.images] == ["A falling line."]  # the markup made no <img>
    assert HIDDEN_SOURCE not in study.text  # in the page, folded: "show code" opens it


def test_screenshots_are_saved_under_reports(checked):
    shots = checked["reports"] / "screenshots"
    assert (shots / "index.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (shots / "index.png").stat().st_size > 10_000
    assert all((shots / f"{s}.png").is_file() for s in checked["studies"])
