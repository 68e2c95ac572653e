"""Replication: verdicts compared on hand-made tables, the seed mapping, and one fake study.

The fake study is rendered on its seeds and again on disjoint ones (three kernel starts).
"""

from __future__ import annotations

import json

import pytest

from analysis_lib.report.render import build_index, render_study
from analysis_lib.report.replicate import classify, compare_verdicts, replicate_study, replication_seeds
from analysis_lib.validation import ConfigError
from tests.report.fake_studies import write_fake_study


@pytest.mark.parametrize("original, replication, expected", [
    ("yes", "yes", "replicates"), ("no", "no", "replicates"), ("inconclusive", "inconclusive", "replicates"),
    ("yes", "inconclusive", "weakens"), ("inconclusive", "no", "weakens"), ("partly", "yes", "weakens"),
    ("yes", "no", "contradicts"), ("no", "yes", "contradicts"),
    ("not tested", "yes", "not tested"), ("no", "not tested", "not tested"),
    (None, "yes", "missing"), ("yes", None, "missing"),
])
def test_each_pair_of_verdicts_is_classified(original, replication, expected):
    assert classify(original, replication) == expected


def test_rows_are_matched_by_claim_and_kept_in_the_originals_order():
    original = [{"claim": "a", "reproduced": "yes"}, {"claim": "b", "reproduced": "no"},
                {"claim": "c", "reproduced": "inconclusive"}]
    replication = [{"claim": "c", "reproduced": "no"}, {"claim": "a", "reproduced": "yes"},
                   {"claim": "d", "reproduced": "yes"}]
    rows = compare_verdicts(original, replication)
    assert [(r["claim"], r["class"]) for r in rows] == [("a", "replicates"), ("b", "missing"), ("c", "weakens"),
                                                        ("d", "missing")]


def test_new_seeds_are_disjoint_and_twins_follow_their_parents():
    assert replication_seeds({"seeds": [0, 1, 2]}, None) == {"seeds": [3, 4, 5]}
    assert replication_seeds({"seeds": [0, 1, 2, 3], "twin_seeds": [0, 2]}, [10, 11, 12, 13]) == \
        {"seeds": [10, 11, 12, 13], "twin_seeds": [10, 12]}
    for bad in ([1, 5], [5, 5], [-1, 4], [True, 7]):
        with pytest.raises(ConfigError, match="--seeds"):
            replication_seeds({"seeds": [0, 1]}, bad)
    with pytest.raises(ConfigError, match="twin_seeds"):
        replication_seeds({"seeds": [0, 1, 2], "twin_seeds": [2]}, [7, 8])
    with pytest.raises(ConfigError, match="no 'seeds'"):
        replication_seeds({"n_boot": 5}, [7])


SEEDED = """\
fragile = "yes" if max(seeds) < 5 else "inconclusive"
flips = "yes" if max(seeds) < 5 else "no"
summary["verdict"] = [{"claim": c, "source": "", "measured": "-", "n": 2, "reproduced": r}
                      for c, r in (("stable", "yes"), ("fragile", fragile), ("flips", flips))]
(out / "summary.json").write_text(json.dumps(summary))
"""


def test_a_study_replicated_on_new_seeds_says_which_verdicts_held(tmp_path):
    nb_dir, reports = tmp_path / "notebooks", tmp_path / "reports"
    write_fake_study(nb_dir, "01-seeded", {"default": {"seeds": [0, 1]}}, extra_cells=[SEEDED])
    with pytest.raises(ConfigError, match="no published report"):
        replicate_study("01-seeded", "default", [7, 8], reports_dir=reports, notebooks_dir=nb_dir)
    render_study("01-seeded", "default", notebooks_dir=nb_dir, reports_dir=reports)
    build_index(reports, notebooks_dir=nb_dir)
    with pytest.raises(ConfigError, match="disjoint"):
        replicate_study("01-seeded", "default", [1, 8], reports_dir=reports, notebooks_dir=nb_dir)
    record = replicate_study("01-seeded", "default", [7, 8], reports_dir=reports, notebooks_dir=nb_dir)
    assert [(r["claim"], r["class"]) for r in record["rows"]] == [
        ("stable", "replicates"), ("fragile", "weakens"), ("flips", "contradicts")]
    assert json.loads((reports / "01-seeded" / "replication.json").read_text())["seeds"] == [7, 8]
    assert (reports / "replications" / "01-seeded.html").is_file()
    index = (reports / "index.html").read_text()
    assert "seeds [7, 8]: 1 replicate, 1 weaken, 1 contradict" in index
    assert 'href="replications/01-seeded.html"' in index and '<td class="contradicts">contradicts</td>' in index
    render_study("01-seeded", "default", notebooks_dir=nb_dir, reports_dir=reports)  # a new render: no stale record
    assert not (reports / "01-seeded" / "replication.json").exists()
