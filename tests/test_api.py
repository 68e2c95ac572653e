"""The curated public API: every name in ``analysis_lib.__all__`` resolves to the object of its subject module."""

from __future__ import annotations

import importlib

import pytest

import analysis_lib


@pytest.mark.parametrize("name", analysis_lib.__all__)
def test_every_public_name_resolves_to_its_subject_module(name):
    obj = getattr(analysis_lib, name)
    module = importlib.import_module(analysis_lib._WHERE[name])
    assert obj is getattr(module, name)


def test_the_names_a_notebook_imports_are_there():
    from analysis_lib import HessianOperator, compare_conditions, expand_grid, layer_traces, run_grid, top_eigenpairs  # noqa: F401


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        analysis_lib.not_a_name  # noqa: B018


def test_names_are_unique():
    assert len(analysis_lib.__all__) == len(set(analysis_lib.__all__))
