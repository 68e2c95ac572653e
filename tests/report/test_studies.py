"""Which studies and parameter sets exist, and the folders they live in.

A study is a NN-name notebook paired with its .py, parameter sets are the YAML files of its params folder, an
unknown study or set is refused naming the ones that exist (before any kernel starts), and the notebooks and
reports folders default to the project's.
"""

from __future__ import annotations

import pytest

from analysis_lib import paths
from analysis_lib.report.render import render_study
from analysis_lib.report.studies import (
    check_study,
    list_studies,
    notebooks_dir_or_default,
    param_sets,
    params_path,
    reports_dir_or_default,
)
from tests.report.fake_studies import write_fake_study


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    write_fake_study(folder, "02-fake", {"default": {}, "smoke": {}})
    write_fake_study(folder, "01-other", {"smoke": {}})
    (folder / "03-unpaired.ipynb").write_text("{}")  # no .py pair: not a study
    (folder / "scratch.ipynb").write_text("{}")
    (folder / "scratch.py").write_text("")  # not NN-name
    return folder


def test_studies_are_paired_notebooks_named_nn_name(notebooks, tmp_path):
    assert list_studies(notebooks) == ["01-other", "02-fake"]
    assert list_studies(tmp_path / "missing") == []


def test_parameter_sets_are_the_yaml_files_of_the_study(notebooks):
    assert param_sets("02-fake", notebooks) == ["default", "smoke"]
    assert param_sets("01-other", notebooks) == ["smoke"]
    assert param_sets("09-none", notebooks) == []
    assert params_path("02-fake", "smoke", notebooks) == notebooks / "params" / "02-fake" / "smoke.yaml"
    with pytest.raises(ValueError, match=r"'01-other' has no parameter set 'default'.*exist: smoke"):
        params_path("01-other", "default", notebooks)


def test_unknown_study_is_named_with_the_known_ones(notebooks):
    check_study("02-fake", notebooks)
    with pytest.raises(ValueError, match=r"unknown study '03-unpaired'.*studies: 01-other, 02-fake"):
        check_study("03-unpaired", notebooks)


def test_unknown_parameter_set_is_named(notebooks, tmp_path):
    with pytest.raises(ValueError, match=r"'02-fake'.*'nope'.*default, smoke"):
        render_study("02-fake", "nope", notebooks_dir=notebooks, reports_dir=tmp_path / "reports")
    assert not (tmp_path / "reports").exists()  # refused before anything ran


def test_folders_default_to_the_project(tmp_path, monkeypatch):
    assert notebooks_dir_or_default() == paths.project_root() / "notebooks"
    assert notebooks_dir_or_default(tmp_path / "nb") == (tmp_path / "nb").resolve()
    monkeypatch.delenv("ANALYSIS_LIB_REPORTS", raising=False)
    assert reports_dir_or_default() == (paths.project_root() / "reports").resolve()
    monkeypatch.setenv("ANALYSIS_LIB_REPORTS", str(tmp_path / "published"))
    assert reports_dir_or_default() == (tmp_path / "published").resolve()
    assert reports_dir_or_default(tmp_path / "given") == (tmp_path / "given").resolve()
