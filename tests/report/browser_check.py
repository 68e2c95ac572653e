"""Open published reports in headless Chromium and list everything a reader would find broken.

The reports folder is copied to a fresh place and served from a sub-path
(``http://127.0.0.1:<port>/some/sub/path/reports/``), then opened a second time from the copy as
``file://``: a report must work wherever it is published. On every page: every image has loaded
(natural width > 0), no console errors (a refused script or resource shows up there, because the
pages forbid both), no page errors, no request that leaves the copied folder, no ``<script>``
element at all. From the index: every link resolves. From every page (reports, index, and
``claims.html`` itself): every link to ``claims.html#<anchor>`` finds that anchor on the claims
page. Screenshots record what a reader sees.

Uses Debian's ``/usr/bin/chromium`` driven by playwright (never ``playwright install``: it
downloads its own browsers). Also a command, run by ``make browser-check`` after ``make report``:
``python tests/report/browser_check.py reports/ --screenshots reports/screenshots``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin

SUB_PATH = "some/sub/path/reports"  # where the copy is served: nothing may assume the root
CLAIMS_PAGE = "claims.html"  # the claims the verdict rows cite, beside the reports
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# Headless without a sandbox (we run as root in CI) and without any background traffic, so every
# request the check sees comes from the page itself.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_PAGE_STATE = """() => ({
  images: Array.from(document.images).map(i => ({src: i.src.slice(0, 80), alt: i.alt,
                                                  ok: i.complete && i.naturalWidth > 0})),
  scripts: document.scripts.length,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  text: document.body.innerText,
})"""


@dataclass
class PageReport:
    """What one page did in the browser."""

    url: str
    images: list = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # element ids: the anchors a link can point at
    text: str = ""  # what a reader sees before clicking anything (folded code excluded)


def find_chromium() -> str | None:
    """Path of a Chromium binary ($CHROMIUM first), or None."""
    for path in (os.environ.get("CHROMIUM"), *CHROMIUM_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    return None


def unavailable_reason() -> str | None:
    """Why the browser check cannot run here (no chromium, no playwright), or None."""
    if find_chromium() is None:
        return ("no Chromium found (looked at $CHROMIUM, " + ", ".join(CHROMIUM_CANDIDATES)
                + "); `make browser` installs Debian's chromium with apt-get (needs root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[test]')"
    return None


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per request would bury the test output
        pass


@contextlib.contextmanager
def serve(root: Path):
    """Serve `root` over HTTP on 127.0.0.1 (a free port) while the block runs; yields the URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _watch(page, allowed_prefix: str, problems: list[str]) -> None:
    """Record console errors, page errors, failed loads and requests outside `allowed_prefix`."""
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:120]}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))

    def gate(route):  # block, and report, anything that would leave the published folder
        url = route.request.url
        if url.startswith(allowed_prefix) or url.startswith("data:"):
            route.continue_()
        else:
            problems.append(f"request outside the reports folder: {url[:120]}")
            route.abort()

    page.route("**/*", gate)


def open_page(context, url: str, allowed_prefix: str, screenshot: Path | None = None,
              full_page: bool = False) -> PageReport:
    """Load `url` in a new page and report its images, links and problems.

    Args:
        context: a playwright BrowserContext. url: the page. allowed_prefix: the URL prefix every
            request must start with (the copied reports folder).
        screenshot: where to save a PNG of the page, if anywhere. full_page: whole page or the
            first screen.

    Returns:
        A PageReport; `problems` is empty when the page is fine.
    """
    report = PageReport(url)
    page = context.new_page()
    _watch(page, allowed_prefix, report.problems)
    page.goto(url, wait_until="load")
    state = page.evaluate(_PAGE_STATE)
    report.images, report.links, report.text = state["images"], state["links"], state["text"]
    report.ids = state["ids"]
    report.problems += [f"image not loaded: {i['src']}" for i in state["images"] if not i["ok"]]
    if state["scripts"]:
        report.problems.append(f"{state['scripts']} <script> element(s) in a published page")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=full_page)
    page.close()
    return report


def check_links(context, index: PageReport) -> list[str]:
    """Every link of the index, fetched over HTTP: one problem per link that does not resolve."""
    problems = []
    for href in index.links:
        if href.startswith("#"):
            continue  # same-page anchors: the browser needs no file for them
        url = urljoin(index.url, href)
        if not url.startswith(index.url.rsplit("/", 1)[0]):
            problems.append(f"link leaves the reports folder: {href}")
            continue
        status = context.request.get(url).status
        if status != 200:
            problems.append(f"link {href} -> HTTP {status}")
    return problems


def _study_pages(folder: Path) -> list[str]:
    """File names of the study reports (``NN-name.html``) in a reports folder."""
    return sorted(p.name for p in folder.glob("[0-9][0-9]-*.html"))


def claim_link_problems(links: list[str], claim_ids: list[str] | None, on_claims_page: bool = False) -> list[str]:
    """One problem per link to ``claims.html`` (on that page: also to its own anchors) that does not resolve.

    Args:
        links: the ``href`` values of a page. claim_ids: the element ids of ``claims.html``, or None
            when the reports folder has no claims page. on_claims_page: the links are the claims page's.

    Returns:
        ``"link claims.html#claim-7: ..."`` for a missing page or anchor; [] when every one resolves.
    """
    problems = []
    for href in links:
        path, _, anchor = href.partition("#")
        if path != CLAIMS_PAGE and not (on_claims_page and path == "" and anchor):
            continue
        if claim_ids is None:
            problems.append(f"link {href}: no {CLAIMS_PAGE} in the reports folder")
        elif anchor and anchor not in claim_ids:
            problems.append(f"link {href}: {CLAIMS_PAGE} has no anchor #{anchor}")
    return problems


def check_reports(reports: Path, screenshots: Path | None = None) -> dict[str, PageReport]:
    """Copy `reports` elsewhere, serve it from a sub-path, open every page twice (HTTP, file://).

    Args:
        reports: the reports folder (index.html, claims.html plus ``<study>.html`` files).
        screenshots: folder for ``index.png`` (whole page), ``claims.png`` and ``<study>.png``
            (first screen).

    Returns:
        ``{"http index.html": PageReport, "file 01-x.html": ..., ...}``; links of the index
        are checked into the HTTP index's `problems`, links to claims.html into each page's.
    """
    from playwright.sync_api import sync_playwright

    claims = [CLAIMS_PAGE] if (reports / CLAIMS_PAGE).is_file() else []
    pages = ["index.html", *claims, *_study_pages(reports)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="reports-copy-") as tmp, sync_playwright() as pw:
        copy = Path(tmp) / SUB_PATH
        shutil.copytree(reports, copy)
        browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1400})
        with serve(Path(tmp)) as root:
            base = f"{root}{SUB_PATH}/"
            for name in pages:
                shot = screenshots / name.replace(".html", ".png") if screenshots else None
                results[f"http {name}"] = open_page(context, base + name, base, shot,
                                                    full_page=name == "index.html")
            results["http index.html"].problems += check_links(context, results["http index.html"])
        for name in pages:  # the same copy opened from disk, as a colleague would
            results[f"file {name}"] = open_page(context, (copy / name).as_uri(), copy.as_uri())
        browser.close()
    for mode in ("http", "file"):
        claim_page = results.get(f"{mode} {CLAIMS_PAGE}")
        claim_ids = claim_page.ids if claim_page is not None else None
        for name in pages:
            page = results[f"{mode} {name}"]
            page.problems += claim_link_problems(page.links, claim_ids, on_claims_page=name == CLAIMS_PAGE)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: check a reports folder; exit 0 when clean, 1 on problems, 3 when skipped.

    With REQUIRE_BROWSER=1 in the environment, a check that cannot run exits 1, not 3.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path)
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.reports / "index.html").is_file():
        print(f"error: no reports in {args.reports} (no index.html): run make report first", file=sys.stderr)
        return 1
    reason = unavailable_reason()
    if reason:
        print(f"browser check SKIPPED: {reason}", file=sys.stderr)
        return 1 if os.environ.get("REQUIRE_BROWSER") == "1" else 3
    results = check_reports(args.reports.resolve(), args.screenshots)
    for name, page in results.items():
        status = "ok" if not page.problems else "PROBLEMS"
        print(f"{status:<9}{name}: {len(page.images)} images, {len(page.links)} links")
        for problem in page.problems:
            print(f"    {problem}")
    return 1 if any(p.problems for p in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
