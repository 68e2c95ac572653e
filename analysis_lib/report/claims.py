"""``reports/claims.html``: the claims our studies test, published beside the reports that cite them.

Rendered from ``docs/claims.md`` (the repository's own document; every claim has the anchor
``#claim-N``), so a copied ``reports/`` folder stays self-contained: each verdict row links to
the claim it tests (:func:`claim_link`), never to a file outside ``reports/``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from .. import paths
from .fragments import CSP_META

CLAIMS_PAGE = "claims.html"
_CLAIM_NUMBER = re.compile(r"\bclaims? (\d+)\b")
_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:52rem;margin:2rem auto;
padding:0 1rem;color:#1d1d1f}h1{font-size:1.6rem}h2{font-size:1.3rem;border-top:1px solid #ccc;
padding-top:.8rem}h3{font-size:1.08rem;margin-top:1.6rem}code{font-size:.88rem}
a{color:#0645ad}:target+h3{background:#fdf1c7}
"""


def claims_source() -> Path:
    """``docs/claims.md`` of the project."""
    return paths.project_root() / "docs" / "claims.md"


def claim_link(source: str) -> str:
    """The relative URL a verdict row's ``source`` links to: ``claims.html#claim-N``.

    The first "claim N" in the source text names the anchor; a source without one (a premise
    such as LARS or Git Re-Basin) links to the list of other premises.
    """
    match = _CLAIM_NUMBER.search(str(source))
    return f"{CLAIMS_PAGE}#claim-{match[1]}" if match else f"{CLAIMS_PAGE}#other-premises"


def claims_page(markdown_text: str) -> str:
    """The self-contained HTML page of the claims document (inline CSS, no script)."""
    import mistune

    body = mistune.html(markdown_text)
    title = next((line[2:].strip() for line in markdown_text.splitlines() if line.startswith("# ")), "Claims")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{CSP_META}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f'<p><a href="index.html">← index of studies</a></p>\n{body}\n</body></html>\n')


def write_claims_page(out_root: Path) -> Path:
    """Write ``<out_root>/claims.html`` from ``docs/claims.md`` (atomically)."""
    from .render import write_atomic

    page = out_root / CLAIMS_PAGE
    write_atomic(page, claims_page(claims_source().read_text(encoding="utf-8")))
    return page
