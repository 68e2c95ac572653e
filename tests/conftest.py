"""Shared fixtures: every test writes data and runs under a temporary folder, never into data/."""

from __future__ import annotations

import os

import pytest

# Set before torch is imported anywhere in the test process (docs/architecture.md, "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dir(tmp_path_factory):
    """Point ANALYSIS_LIB_DATA at a session-wide temporary folder (datasets are cached there)."""
    folder = tmp_path_factory.mktemp("analysis_lib_data")
    old = os.environ.get("ANALYSIS_LIB_DATA")
    os.environ["ANALYSIS_LIB_DATA"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("ANALYSIS_LIB_DATA", None)
    else:
        os.environ["ANALYSIS_LIB_DATA"] = old


@pytest.fixture
def store_root(tmp_path):
    """A fresh, empty run store for one test."""
    return str(tmp_path / "runs")


@pytest.fixture
def tiny_config():
    """A run that trains in well under a second: Gaussian mixture, small MLP, 12 steps."""
    from tests.cases import tiny_config

    return tiny_config()


@pytest.fixture(scope="session")
def twin_runs(tmp_path_factory):
    """The GridResult of :func:`tests.cases.twin_configs`, trained once for every test that reads it."""
    from analysis_lib.runs.execute import run_grid
    from tests.cases import twin_configs

    return run_grid(twin_configs(), store_root=str(tmp_path_factory.mktemp("twins") / "runs"), progress=False)
