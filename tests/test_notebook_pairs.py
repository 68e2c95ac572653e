"""Every study notebook follows the conventions the renderer and reviewers rely on.

Parametrised over ``notebooks/*.ipynb``: new studies are picked up without editing this file,
and `test_at_least_one_study_exists` fails while the list is empty.
"""

import difflib
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
REQUIRED_PARAM_SETS = ("smoke", "default")
DEF_OR_CLASS = re.compile(r"^\s*(async\s+def|def|class)\s", re.MULTILINE)
VERSION_STAMP = re.compile(r"#\s+(jupytext_version|format_version):")
OUTPUT_DIR_PARAM = re.compile(r"^output_dir\s*(:[^=\n]*)?=", re.MULTILINE)

each_notebook = pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])


def normalise_py(text: str) -> list[str]:
    """Lines of a py:percent file without trailing spaces, final blank lines or version stamps.

    The header's ``jupytext_version`` / ``format_version`` depend on the jupytext that wrote the
    file, not on the notebook, so they are dropped before comparing.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    lines = [line for line in lines if not VERSION_STAMP.match(line)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def pair_mismatch(ipynb: Path, py: Path) -> str | None:
    """A diff between `py` and the py:percent text jupytext makes from `ipynb`, or None if equal.

    Args:
        ipynb: the notebook. py: its paired py:percent file.

    Returns:
        None when in sync, else the first lines of a unified diff (expected vs committed).
    """
    expected = normalise_py(jupytext.writes(jupytext.read(ipynb), fmt="py:percent"))
    actual = normalise_py(py.read_text(encoding="utf-8"))
    if expected == actual:
        return None
    diff = difflib.unified_diff(expected, actual, "from .ipynb", py.name, lineterm="")
    return "\n".join(list(diff)[:40])


def code_cells(ipynb: Path) -> list:
    """The code cells of a notebook."""
    return [c for c in nbformat.read(ipynb, as_version=4).cells if c.cell_type == "code"]


def test_at_least_one_study_exists():
    assert NOTEBOOKS, f"no study notebooks in {NOTEBOOKS_DIR}"


@each_notebook
def test_paired_py_is_in_sync(ipynb):
    py = ipynb.with_suffix(".py")
    assert py.is_file(), f"{ipynb.name} has no paired {py.name}: jupytext --set-formats ipynb,py:percent"
    mismatch = pair_mismatch(ipynb, py)
    assert mismatch is None, f"{py.name} is out of sync; run `make sync`:\n{mismatch}"


@each_notebook
def test_committed_without_outputs(ipynb):
    dirty = [i for i, c in enumerate(code_cells(ipynb)) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{ipynb.name}: code cells {dirty} have outputs or execution counts"


@each_notebook
def test_one_parameters_cell_with_output_dir(ipynb):
    tagged = [c for c in code_cells(ipynb) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{ipynb.name}: {len(tagged)} cells tagged 'parameters', need 1"
    assert OUTPUT_DIR_PARAM.search(tagged[0].source), f"{ipynb.name}: no `output_dir` parameter"


@each_notebook
def test_smoke_and_default_parameter_sets_exist(ipynb):
    folder = NOTEBOOKS_DIR / "params" / ipynb.stem
    missing = [s for s in REQUIRED_PARAM_SETS if not (folder / f"{s}.yaml").is_file()]
    assert not missing, f"{ipynb.name}: missing parameter sets {missing} in {folder}"


@each_notebook
def test_no_functions_or_classes_in_code_cells(ipynb):
    found = [m.group(0).strip() for c in code_cells(ipynb) for m in DEF_OR_CLASS.finditer(c.source)]
    assert not found, f"{ipynb.name} defines {found}; move them into analysis_lib"


@each_notebook
def test_title_and_question_open_the_notebook(ipynb):
    cells = nbformat.read(ipynb, as_version=4).cells
    first_md = next((c.source for c in cells if c.cell_type == "markdown"), "")
    heading, _, rest = first_md.strip().partition("\n")
    assert heading.startswith("# "), f"{ipynb.name}: first markdown cell must start with '# <title>'"
    assert rest.strip(), f"{ipynb.name}: the paragraph after the title must state the question"


def test_pair_check_detects_an_out_of_sync_copy(tmp_path):
    nb = new_notebook(cells=[
        new_markdown_cell("# T\n\nQuestion?"),
        new_code_cell('output_dir = ""', metadata={"tags": ["parameters"]}),
        new_code_cell("x = 1"),
    ])
    ipynb, py = tmp_path / "01-t.ipynb", tmp_path / "01-t.py"
    nbformat.write(nb, ipynb)
    py.write_text(jupytext.writes(nb, fmt="py:percent") + "\n\n")
    assert pair_mismatch(ipynb, py) is None
    py.write_text(py.read_text().replace("x = 1", "x = 2"))
    assert "x = 2" in pair_mismatch(ipynb, py)
