"""The house stays a house: subject packages, short modules, no study text in quantities, docs in the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "analysis_lib"
GROUND_FLOOR = {"__init__.py", "__main__.py", "validation.py", "layers.py", "paths.py"}
SUBJECTS = {"training", "gradients", "weights", "activations", "curvature", "landscape", "trajectories", "lm",
            "custom", "runs", "stats", "plots", "report", "studies"}
QUANTITIES = ("training", "gradients", "weights", "activations", "curvature", "landscape", "trajectories", "lm",
              "custom", "stats", "plots")
MAX_LINES = 400


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if ".venv" not in p.parts)


def test_ground_floor_holds_only_a_handful_of_modules():
    assert {p.name for p in LIB.glob("*.py")} == GROUND_FLOOR
    assert {p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == SUBJECTS


@pytest.mark.parametrize("path", _python_files(LIB), ids=lambda p: str(p.relative_to(LIB)))
def test_no_module_is_over_the_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concept"


def test_quantities_hold_no_claim_references_or_verdict_rules():
    claim = re.compile(r"\bclaim \d+\b|\bverdict", re.IGNORECASE)
    offenders = [f"{p.relative_to(ROOT)}:{i}" for pkg in QUANTITIES for p in _python_files(LIB / pkg)
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if claim.search(line)]
    allowed = {"stats/verdicts.py"}  # the general verdict rules (CI sides, equivalence) live there
    offenders = [o for o in offenders if not any(o.startswith(f"analysis_lib/{a}") for a in allowed)]
    assert not offenders, f"claim references or verdict rules outside studies/: {offenders}"


def test_quantities_do_not_import_studies_or_the_run_grid():
    bad = re.compile(r"^\s*from \.\.(studies|runs)\b|^\s*from analysis_lib\.(studies|runs)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for pkg in QUANTITIES for p in _python_files(LIB / pkg)
                 if bad.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"quantity modules importing studies/ or runs/: {offenders}"


def test_every_cited_document_lives_in_the_repository():
    cited = re.compile(r"\b(PHENOMENA|DESIGN|STYLE)\.md\b|\.\./shared\b")
    files = [p for p in [*_python_files(LIB), *_python_files(ROOT / "tests"), *_python_files(ROOT / "benchmarks"),
                         *(ROOT / "notebooks").rglob("*"), *ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"),
                         ROOT / "Makefile", *(ROOT / "reports").glob("*.md"), *(ROOT / "data").glob("*.md")]
             if p.is_file() and p.name != Path(__file__).name]
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if cited.search(p.read_text(encoding="utf-8", errors="ignore"))]
    assert not offenders, f"files citing documents outside the repository: {offenders}"
    for doc in ("claims.md", "architecture.md"):
        assert (ROOT / "docs" / doc).is_file(), f"docs/{doc} is missing"


def test_importing_the_package_loads_neither_torch_nor_matplotlib():
    code = "import sys, analysis_lib, analysis_lib.paths; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]
