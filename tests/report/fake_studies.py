"""Fake studies for the renderer tests (a few cells each, seconds to execute) and readers of the pages they give.

``write_fake_study`` writes a study notebook, its py:percent pair and its parameter sets; its parameters are
``title``, ``fail`` (raise in the second cell) and ``sources`` (one verdict row per source, the first on the
study's own claim). ``PageParts`` lists what a page holds for a reader; ``broken_references`` the references of
a page that need a network, an absolute path or a missing file.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import jupytext
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SCRIPT_TITLE = "<script>alert(1)</script> fake study"
ESCAPED_TITLE = "&lt;script&gt;alert(1)&lt;/script&gt; fake study"
FIGURE_NOTE = "**A falling line.** Look for the line going down."
HIDDEN_SOURCE = "hidden_marker_value = 4242"  # only in a code cell's source (folded when published)
FAILURE = "fake study failed on purpose"
PARAMETERS = 'output_dir = ""\ntitle = "x"\nfail = False\nsources = []'

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
verdict = [{{"claim": "loss falls for " + title, "measured": "1 -> 0", "n": 2, "reproduced": "yes"}}]
verdict += [{{"claim": "premise " + str(i), "measured": "-", "n": 0, "reproduced": "inconclusive"}}
            for i in range(1, len(sources))]
for row, source in zip(verdict, sources):
    row["source"] = source
summary = {{"study": out.name, "title": title, "question": "Does the renderer publish it?",
           "verdict": verdict, "runs": {{"finished": 2, "diverged": 1, "failed": 0}},
           "params": {{"title": title}}}}
(out / "summary.json").write_text(json.dumps(summary))
print("title:", title)
"""
FIGURE_CELL = 'display(Image(filename=str(out / "curve.png")))\npd.DataFrame({"title": [title]})'


class PageParts(HTMLParser):
    """What a page holds for a reader.

    References (src, href), image alt texts, scripts, element ids, and the text outside folded
    ``<details>`` (what shows before any click).
    """

    def __init__(self, text):
        super().__init__()
        self.refs, self.alts, self.scripts, self.folded, self.shown, self.ids = [], [], 0, 0, [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[k] for k in ("src", "href") if attrs.get(k)]
        self.alts += [attrs.get("alt")] if tag == "img" else []
        self.ids += [attrs["id"]] if attrs.get("id") else []
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


def write_fake_study(notebooks_dir, study, param_sets, extra_cells=()):
    """Write a 5-cell study notebook (plus ``extra_cells``, code), its py:percent pair and its parameter sets."""
    nb = new_notebook(cells=[
        new_markdown_cell("# Fake study\n\nDoes the renderer publish a study?"),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(STUDY_BODY),
        new_markdown_cell(FIGURE_NOTE),
        new_code_cell(FIGURE_CELL),
        *(new_code_cell(source) for source in extra_cells),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, notebooks_dir / f"{study}.ipynb")
    (notebooks_dir / f"{study}.py").write_text(jupytext.writes(nb, fmt="py:percent"))
    for name, values in param_sets.items():
        path = notebooks_dir / "params" / study / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))  # JSON is YAML
