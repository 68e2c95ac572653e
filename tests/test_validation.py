"""The parameter checks every config and study uses: one ConfigError naming parameter, value and what is allowed."""

from __future__ import annotations

import pytest

from analysis_lib.validation import (
    ConfigError,
    check_choice,
    check_fraction,
    check_int,
    check_number,
    check_seeds,
    check_subset,
    read_yaml,
)


def test_study_level_checks():
    check_subset("main_arms", ["a"], {"a": 1, "b": 2})
    with pytest.raises(ConfigError, match="main_arms.*'c' is not one of"):
        check_subset("main_arms", ["c"], {"a": 1})
    with pytest.raises(ConfigError, match="main_arms"):
        check_subset("main_arms", [], {"a": 1})
    check_fraction("alpha", 0.05)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="alpha"):
            check_fraction("alpha", bad)


@pytest.mark.parametrize("check, args, fragment", [
    (check_int, ("n_boot", 0, 1), r"invalid parameter n_boot=0: must be an integer >= 1"),
    (check_int, ("n_boot", True, 1), r"n_boot=True"),
    (check_int, ("n_boot", 2.0, 1), r"n_boot=2.0"),
    (check_number, ("train.lr", float("inf")), r"train.lr=inf: must be a finite number"),
    (check_choice, ("kind", "x", ("a", "b")), r"kind='x': must be one of 'a', 'b'"),
])
def test_messages_name_parameter_value_and_allowed(check, args, fragment):
    with pytest.raises(ConfigError, match=fragment):
        check(*args)


@pytest.mark.parametrize("seeds", [[], "0", None, [0, 0], [0, -1], [0, 1.5], [True]])
def test_seeds_must_be_a_nonempty_list_of_distinct_integers(seeds):
    with pytest.raises(ConfigError, match="seeds"):
        check_seeds("seeds", seeds)


def test_seeds_accept_any_sequence_of_integers():
    check_seeds("seeds", [0, 1, 2])
    check_seeds("seeds", range(3))


def test_read_yaml_turns_file_problems_into_config_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: [x, y]\n")
    assert read_yaml(good, "ctx") == {"a": 1, "b": ["x", "y"]}
    with pytest.raises(ConfigError, match=r"^ctx: no such file"):
        read_yaml(tmp_path / "missing.yaml", "ctx")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"^ctx: not valid YAML"):
        read_yaml(bad, "ctx")
