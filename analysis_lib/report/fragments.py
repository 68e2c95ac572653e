"""A study's verdict, run counts and provenance as HTML fragments, for the index and each report.

Both `reports/index.html` and the top of every `reports/<study>.html` show the same facts, read
from the study's ``summary.json`` (written by the notebook) and ``render.json`` (written by the
renderer). Every value from those files is escaped: titles, claims and parameters can hold
anything a user typed, including markup, and must show as text.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

_E = html.escape  # every text that comes from a file goes through this

# Published pages load nothing: no scripts at all, images only inline or from the same folder,
# styles inline. A stray <script> (e.g. unescaped markup in a table) is refused by the browser
# instead of running, and shows up as a console error in the browser check.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                           "font-src data:; base-uri 'none'; form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'

SUMMARY_CSS = """
.study-summary table{border-collapse:collapse;margin:.5rem 0}
.study-summary td,.study-summary th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;
vertical-align:top}.study-summary th{background:#f4f4f4}
.study-summary :is(.ok,.yes){background:#d4f4dd}.study-summary :is(.failed,.no){background:#fbd5d5}
.study-summary :is(.partly,.incomplete){background:#fdf1c7}
.study-summary :is(.inconclusive,.not-rendered){background:#e8e8e8}
.study-summary .not-tested{background:#f4f4f4;color:#666;font-style:italic}
.study-summary .replicates{background:#d4f4dd}.study-summary .weakens{background:#fdf1c7}
.study-summary .contradicts{background:#fbd5d5}.study-summary .missing{background:#e8e8e8}
.study-summary .smoke{background:#fdf1c7;border:1px solid #e0c060;padding:.4rem .6rem;font-weight:600}
.study-summary .warn{color:#9a3b00;font-weight:600}
.study-summary .rules{font-size:.85rem;margin:.2rem 0}.study-summary :is(.power,.robustness){color:#555}
.study-summary dt{font-weight:600;float:left;clear:left;width:9rem}
.study-summary dd{margin:0 0 .2rem 9.5rem}.study-summary code{font-size:.85rem;word-break:break-all}
.study-summary pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;padding:.4rem}
"""
RUN_STATUSES = ("finished", "diverged", "failed")


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _verdict_row(row: dict) -> str:
    """One <tr>: claim (its source linked to the claim in claims.html), measured, n, reproduced."""
    from .claims import claim_link

    claim = _E(str(row.get("claim", "")))
    if row.get("source"):
        link = _E(claim_link(row["source"]))
        claim += f"<br><small><a href=\"{link}\">{_E(str(row['source']))}</a></small>"
    outcome = _E(str(row.get("reproduced", "")))
    css = outcome.replace(" ", "-")  # "not tested" -> one class
    measured = _E(str(row.get("measured", "")))
    if row.get("power"):  # an inconclusive row: what the design could have detected
        measured += f'<br><small class="power">power: {_E(str(row["power"]))}</small>'
    if row.get("robustness"):  # a "no" or "partly": does it hold under the other protocol choices?
        measured += f'<br><small class="robustness">robustness: {_E(str(row["robustness"]))}</small>'
    return (f'<tr><td>{claim}</td><td>{measured}</td>'
            f'<td>{_E(str(row.get("n", "")))}</td><td class="{css}">{outcome}</td></tr>')


def _rules(rows: list[dict]) -> str:
    """Each distinct rule the rows name (written by the code that applied it), listed once."""
    rules = list(dict.fromkeys(str(r["rule"]) for r in rows if r.get("rule")))
    if not rules:
        return ""
    items = "".join(f"<li>{_E(rule)}</li>" for rule in rules)
    return f'<p><small>Rules applied to the rows above:</small></p><ul class="rules">{items}</ul>'


def verdict_table(verdict) -> str:
    """HTML table claim / measured / n / reproduced, with a one-line count above it.

    Args:
        verdict: the ``verdict`` list of summary.json (dicts with claim, source, measured, n,
            reproduced); anything else gives "No verdict recorded."

    Returns:
        ``<p>K of N claims reproduced.</p><table>...</table>``.
    """
    rows = [v for v in verdict if isinstance(v, dict)] if isinstance(verdict, list) else []
    if not rows:
        return "<p>No verdict recorded.</p>"
    reproduced = sum(str(v.get("reproduced")) == "yes" for v in rows)
    untested = sum(str(v.get("reproduced")) == "not tested" for v in rows)
    count = f"{reproduced} of {len(rows)} claims reproduced" + (f", {untested} not tested" if untested else "")
    body = "".join(_verdict_row(v) for v in rows)
    return (f"<p>{count}.</p><table><tr><th>claim</th>"
            f"<th>measured</th><th>n</th><th>reproduced</th></tr>{body}</table>"
            "<p><small>yes / no: the interval lies on the predicted / the other side (or inside / outside "
            "the equivalence band), with p below 0.05 where a test applies; partly: some runs or settings; "
            "inconclusive: the interval straddles the bar; not tested: no data reached the claim (no run "
            "finished, no run qualified, or no interval could be computed). An inconclusive row says, "
            "under power, the smallest effect the design could detect at 80% power and the seeds the "
            "observed effect would need; a no or partly row says, under robustness, whether it holds under "
            "the study's alternative protocol choices.</small></p>" + _rules(rows))


def replication_block(record: dict | None) -> str:
    """The replication state of a study (``<study>/replication.json``), '' when it has none.

    One line with the counts and a link to the replication report, and the rows that did not
    replicate, each with both verdicts.
    """
    from .replicate import replication_summary

    text = replication_summary(record)
    if text is None:
        return ""
    link = _E(quote(str(record.get("report", "")), safe="/"))
    rows = [r for r in record.get("rows", []) if isinstance(r, dict) and r.get("class") != "replicates"]
    body = "".join(f'<tr><td>{_E(str(r.get("claim")))}</td><td>{_E(str(r.get("original")))}</td>'
                   f'<td>{_E(str(r.get("replication")))}</td><td class="{_E(str(r.get("class")).replace(" ", "-"))}">'
                   f'{_E(str(r.get("class")))}</td></tr>' for r in rows)
    table = (f"<table><tr><th>claim</th><th>verdict</th><th>on new seeds</th><th>replication</th></tr>{body}</table>"
             if rows else "")
    return (f'<p class="replication"><b>Replication</b> on {_E(text)} '
            f'(<a href="{link}">replication report</a>).</p>{table}')


def smoke_banner(render: dict | None) -> str:
    """A warning paragraph for renders with the ``smoke`` parameter set (a pipeline check), else ''."""
    if not render or render.get("param_set") != "smoke":
        return ""
    return ('<p class="smoke">smoke parameters: a pipeline check, not a result. The verdicts below come from '
            "the fastest settings that exercise every cell; render with the default parameters to read them.</p>")


def runs_summary(runs) -> str | None:
    """``"12 finished, 1 diverged, 0 failed"`` from summary.json's run counts, or None."""
    if not isinstance(runs, dict) or not runs:
        return None
    return ", ".join(f"{runs.get(k, '?')} {k}" for k in RUN_STATUSES)


def _runs_dd(runs) -> str:
    """The runs <dd>, marked `warn` when any run diverged or failed (a reader should notice)."""
    text = runs_summary(runs)
    if text is None:
        return ""
    bad = any(isinstance(runs.get(k), int) and runs[k] > 0 for k in ("diverged", "failed"))
    return f'<dt>runs</dt><dd class="runs{" warn" if bad else ""}">{_E(text)}</dd>'


def short_commit(git) -> str:
    """``"3435f84"`` or ``"3435f84 (modified)"`` from render.json's git record."""
    git = git if isinstance(git, dict) else {}
    sha = str(git.get("commit", "unknown"))  # "unknown"[:7] is still "unknown"
    return sha[:7] + (" (modified: uncommitted changes)" if git.get("modified") else "")


def provenance_list(summary: dict, render: dict) -> str:
    """Definition list: parameter set, run time, rendered, runs, versions, git commit, error.

    Args:
        summary: summary.json (may be empty). render: render.json (may be empty).

    Returns:
        ``<dl>...</dl>`` with only the entries that are known.
    """
    seconds = render.get("seconds")
    versions = render.get("package_versions")
    items = {
        "parameter set": render.get("param_set"),
        "parameter file": render.get("params_file"),
        "run time": f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else None,
        "rendered": render.get("finished"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items())
        if isinstance(versions, dict) else None,
        "git commit": short_commit(render.get("git")) if render.get("git") else None,
        "error": render.get("error"),
    }
    rows = "".join(f"<dt>{_E(k)}</dt><dd>{_E(str(v))}</dd>" for k, v in items.items() if v)
    return f"<dl>{_runs_dd(summary.get('runs'))}{rows}</dl>"


def reproduce_block(study: str, render: dict) -> str:
    """"How to reproduce": the make target (when no extra parameters) and the exact command.

    Args:
        study: study name. render: render.json (param_set, params_file, command, git).

    Returns:
        HTML: the commit to check out, the parameter file and the commands, all escaped.
    """
    param_set, command = render.get("param_set"), render.get("command")
    if not command:
        return ""
    parts = [f"<p>From the project root, at git commit <code>{_E(short_commit(render.get('git')))}"
             f"</code>, with the parameter file <code>{_E(str(render.get('params_file', '?')))}"
             f"</code> (set <code>{_E(str(param_set))}</code>):</p>"]
    if param_set and not render.get("extra_parameters"):
        make = f"make report STUDY={study} PARAMS={param_set}"
        parts.append(f"<pre><code>{_E(make)}</code></pre><p>or, exactly as rendered:</p>")
    parts.append(f"<pre><code>{_E(str(command))}</code></pre>")
    return "".join(parts)


def report_link(study: str, suffix: str = ".html") -> str:
    """Relative URL of a study's file beside index.html (works from any folder or sub-path)."""
    return _E(quote(f"{study}{suffix}"))
