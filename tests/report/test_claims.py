"""The claims page, claims.html, and the links of verdict rows to it.

build_index writes claims.html from docs/claims.md with an anchor for every claim (claim-1 .. claim-19) and for
the other premises; a verdict row's source links to its claim's anchor (or to the other premises when it names
no claim), in a rendered report and in the index, so a copied reports folder stays self-contained. Also the
browser check's test of claim links, on links and anchors given here (no browser needed).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from analysis_lib.report.claims import claim_link, claims_page, claims_source
from analysis_lib.report.fragments import verdict_table
from analysis_lib.report.render import build_index, render_all
from tests.report import browser_check
from tests.report.fake_studies import PageParts, broken_references, write_fake_study

ANCHORS = [f"claim-{n}" for n in range(1, 20)] + ["other-premises"]
SOURCES = ["Cohen et al. 2021 (claim 7)", "Li et al. 2018, claims 9 and 10", "Ainsworth et al. 2023, Git Re-Basin"]
STUDY = "03-cited"


class VerdictRows(HTMLParser):
    """The rows of every verdict table (class study-summary): [(claim text, [hrefs], [link texts])]."""

    def __init__(self, text):
        super().__init__()
        self.rows, self._row, self._link, self._depth = [], None, None, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "study-summary" in (attrs.get("class") or ""):
            self._depth += 1
        elif tag == "tr" and self._depth:
            self._row = ["", [], []]
        elif tag == "a" and self._row is not None:
            self._row[1].append(attrs.get("href"))
            self._link = ""

    def handle_endtag(self, tag):
        if tag == "section" and self._depth:
            self._depth -= 1
        elif tag == "tr" and self._row is not None:
            if self._row[0].strip() not in ("", "claim"):  # the header row holds "claim" and no link
                self.rows.append(tuple(self._row))
            self._row = None
        elif tag == "a" and self._link is not None:
            self._row[2].append(self._link)
            self._link = None

    def handle_data(self, data):
        if self._link is not None:
            self._link += data
        elif self._row is not None and not self._row[0]:
            self._row[0] = data


@pytest.fixture(scope="module")
def cited(tmp_path_factory):
    """One rendered fake study whose three verdict rows cite a claim, two claims and a premise."""
    root = tmp_path_factory.mktemp("claims")
    write_fake_study(root / "notebooks", STUDY, {"smoke": {"title": "cited", "sources": SOURCES}})
    render_all("smoke", reports_dir=root / "reports", notebooks_dir=root / "notebooks")
    return root / "reports"


def _ids(page: str) -> list[str]:
    return PageParts(page).ids


def test_claim_link_names_the_first_claim_of_the_source():
    assert claim_link("Cohen et al. 2021 (claim 7)") == "claims.html#claim-7"
    assert claim_link("Li et al. 2018, claims 9 and 10") == "claims.html#claim-9"
    assert claim_link("Li et al. 2024, fast vs slow thinking (claim 1)") == "claims.html#claim-1"
    assert claim_link("Ainsworth et al. 2023, Git Re-Basin") == "claims.html#other-premises"
    assert claim_link("You et al. 2017, LARS") == "claims.html#other-premises"
    assert claim_link("proclaims 3 things") == "claims.html#other-premises"  # a whole word "claim"


def test_build_index_writes_the_claims_page_with_an_anchor_per_claim(tmp_path):
    build_index(tmp_path, notebooks_dir=tmp_path / "none")
    page = (tmp_path / "claims.html").read_text()
    ids = _ids(page)
    assert [a for a in ANCHORS if ids.count(a) != 1] == []  # each anchor exactly once
    parts = PageParts(page)
    assert parts.scripts == 0 and 'http-equiv="Content-Security-Policy"' in page
    assert "index.html" in parts.refs and broken_references(tmp_path / "claims.html") == []
    internal = [r[1:] for r in parts.refs if r.startswith("#")]
    assert internal and set(internal) <= set(ids)  # cross references between claims resolve
    assert page == claims_page(claims_source().read_text(encoding="utf-8"))


def test_every_claim_of_the_document_has_its_anchor():
    numbers = [int(n) for n in re.findall(r"^### (\d+)\.", claims_source().read_text(), re.MULTILINE)]
    assert numbers == list(range(1, 20))


@pytest.mark.parametrize("page", [f"{STUDY}.html", "index.html"])
def test_every_verdict_source_links_to_the_claims_page(cited, page):
    text = (cited / page).read_text()
    rows = VerdictRows(text).rows
    assert [links for _, _, links in rows] == [[s] for s in SOURCES]  # each row shows its source as a link
    assert [hrefs for _, hrefs, _ in rows] == [["claims.html#claim-7"], ["claims.html#claim-9"],
                                               ["claims.html#other-premises"]]
    anchors = _ids((cited / "claims.html").read_text())
    assert all(href.partition("#")[2] in anchors for _, hrefs, _ in rows for href in hrefs)


def test_a_verdict_row_without_a_source_has_no_link():
    table = verdict_table([{"claim": "c", "measured": "m", "n": 1, "reproduced": "yes"},
                           {"claim": "d", "source": "X (claim 4)", "measured": "m", "n": 1, "reproduced": "no"}])
    assert PageParts(table).refs == ["claims.html#claim-4"]


def test_browser_check_flags_claim_links_that_do_not_resolve():
    ids = ["claim-1", "claim-7", "other-premises"]
    links = ["claims.html#claim-7", "claims.html", "index.html", "#top", "claims.html#claim-99"]
    assert browser_check.claim_link_problems(links, ids) == [
        "link claims.html#claim-99: claims.html has no anchor #claim-99"]
    assert browser_check.claim_link_problems(["#claim-1", "#claim-5"], ids, on_claims_page=True) == [
        "link #claim-5: claims.html has no anchor #claim-5"]
    assert browser_check.claim_link_problems(["claims.html#claim-1"], None) == [
        "link claims.html#claim-1: no claims.html in the reports folder"]
    assert browser_check.claim_link_problems(["02-x.html", "#claim-5"], None) == []
