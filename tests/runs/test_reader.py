"""Reading many stored runs: the batched reader gives the table the per-run pandas reader gave.

The reference below reads each grid position's ``metrics.parquet`` with pandas and labels it, one
run at a time, as ``run_grid`` did before the batched reader; the tests compare the two exactly on
grids with shared runs (two arms), diverged and failed runs, and filters, and check that runs
damaged behind a good footer are set aside and trained again, that names are validated before
any training, and that a metric no run recorded is refused by name.
"""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import expand_grid
from analysis_lib.runs.reader import complete_metas, read_metrics
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.training.config import with_overrides
from analysis_lib.validation import ConfigError
from tests.cases import fail_seed


def eager_metrics(result) -> pd.DataFrame:
    """Each position's run read with pandas and labelled by hand, positions in grid order."""
    frames = []
    label_columns = list(result.runs.columns[: list(result.runs.columns).index("seed") + 1])
    for row in result.runs.itertuples(index=False):
        if row.status == "failed":
            continue
        tidy = pd.read_parquet(result.store.path(row.run_id) / "metrics.parquet")[["step", "layer", "metric", "value"]]
        for i, column in enumerate(label_columns):
            tidy.insert(i, column, getattr(row, column))
        frames.append(tidy)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def mixed_grid(tiny_config, store_root, monkeypatch):
    """Two arms sharing a run, a diverging learning rate, and a failing seed."""
    fail_seed(monkeypatch, 2)
    arms = {"main": {"train.lr": [0.1, 1e30]}, "again": {"train.lr": [0.1], "train.optimizer": ["sgd", "adam"]}}
    configs = expand_grid(tiny_config, arms, [0, 1, 2])
    return configs, run_grid(configs, store_root=store_root, progress=False)


def test_the_batched_reader_gives_the_per_run_table(mixed_grid, store_root):
    configs, first = mixed_grid
    assert first.status_counts() == {"finished": 6, "diverged": 2, "failed": 4}
    assert len(set(first.runs["run_id"])) < len(first.runs)  # lr 0.1 with sgd is in both arms
    again = run_grid(configs, store_root=store_root, progress=False)
    assert again.runs.loc[again.runs["status"] != "failed", "cached"].all()
    for result in (first, again):
        pd.testing.assert_frame_equal(result.metrics, eager_metrics(result), check_exact=True)


def test_filters_keep_exactly_the_rows_asked_for(mixed_grid, store_root):
    configs, first = mixed_grid
    full = eager_metrics(first)
    only = run_grid(configs, store_root=store_root, progress=False, metrics=["test_loss", "grad_norm"])
    expected = full[full["metric"].isin(["test_loss", "grad_norm"])].reset_index(drop=True)
    assert len(expected) and set(expected["metric"]) == {"test_loss", "grad_norm"}
    pd.testing.assert_frame_equal(only.metrics, expected, check_exact=True)
    layer = first.read_metrics(["grad_norm"], layers=["fc1"])
    expected = full[(full["metric"] == "grad_norm") & (full["layer"] == "fc1")].reset_index(drop=True)
    assert len(expected)
    pd.testing.assert_frame_equal(layer, expected, check_exact=True)


def test_a_layer_column_of_nulls_reads_beside_named_layers(tiny_config, store_root):
    result = run_grid(expand_grid(tiny_config, {"train.lr": [0.1]}, [0, 1]), store_root=store_root, progress=False)
    rid = result.runs["run_id"].iloc[0]
    path = result.store.path(rid) / "metrics.parquet"
    stored = pd.read_parquet(path)
    stored["layer"] = None  # an object column of None: written with parquet's null type
    stored.to_parquet(path, index=False)
    # pandas joins a column of None and one of strings as objects; the reader keeps strings.
    pd.testing.assert_frame_equal(result.read_metrics(), eager_metrics(result), check_exact=True, check_dtype=False)
    assert result.read_metrics()["layer"].isna().sum() == len(stored)


def test_names_are_checked_before_any_training(tiny_config, store_root):
    with pytest.raises(ConfigError, match=r"invalid parameter metrics='test_loss': must be a list of names"):
        run_grid(expand_grid(tiny_config, {"train.lr": [0.1]}, [0]), store_root=store_root, metrics="test_loss")
    assert RunStore(store_root).run_ids() == []


def test_a_metric_no_run_recorded_is_refused_by_name(tiny_config, store_root):
    result = run_grid(expand_grid(tiny_config, {"train.lr": [0.1]}, [0]), store_root=store_root, progress=False)
    with pytest.raises(ConfigError, match=r"no run of the grid recorded \['test_accuracy'\]; recorded metrics "
                                          r"are \[.*'test_acc'"):
        result.read_metrics(["test_loss", "test_accuracy"])


def test_damaged_pages_behind_a_good_footer_are_set_aside_and_retrained(tiny_config, store_root):
    configs = expand_grid(tiny_config, {"train.lr": [0.1]}, [0, 1])
    first = run_grid(configs, store_root=store_root, progress=False)
    path = first.store.path(run_id(configs[1])) / "metrics.parquet"
    chunk = pq.read_metadata(path).row_group(0).column(3)  # the values
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size  # footer intact
    path.write_bytes(bytes(data))
    assert dict(complete_metas(first.store, [run_id(configs[1])]))  # the footer still checks out
    with pytest.warns(RuntimeWarning, match="damaged run"):
        again = run_grid(configs, store_root=store_root, progress=False)
    assert again.runs["cached"].tolist() == [True, False]
    pd.testing.assert_frame_equal(again.metrics, first.metrics, check_exact=True)  # seeded: same numbers


def test_a_truncated_file_is_caught_before_training(tiny_config, store_root):
    configs = expand_grid(tiny_config, {"train.lr": [0.1]}, [0, 1])
    first = run_grid(configs, store_root=store_root, progress=False)
    path = first.store.path(run_id(configs[0])) / "metrics.parquet"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.warns(RuntimeWarning, match="metrics.parquet does not open"):
        assert [rid for rid, _ in complete_metas(first.store, map(run_id, configs))] == [run_id(configs[1])]


def test_an_empty_selection_reads_an_empty_table(store_root):
    empty = read_metrics(RunStore(store_root), pd.DataFrame(columns=["run_id", "lr", "seed"]))
    assert empty.empty and list(empty.columns) == ["run_id", "lr", "seed", "step", "layer", "metric", "value"]


def test_runs_of_another_study_are_labelled_by_the_reading_grid(tiny_config, store_root):
    run_grid(expand_grid(tiny_config, {"train.lr": [0.1]}, [0]), store_root=store_root, progress=False)
    base = with_overrides(tiny_config, {"train.lr": 0.1})
    relabelled = run_grid(expand_grid(base, {"train.optimizer": ["sgd"]}, [0]), store_root=store_root, progress=False)
    assert relabelled.runs["cached"].all()
    assert list(relabelled.metrics.columns[:3]) == ["run_id", "optimizer", "seed"]
    assert set(relabelled.metrics["optimizer"]) == {"sgd"}
