"""The library's cached analyses give the tables of the functions they wrap, and are stored once."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis_lib.landscape.surfaces import run_surfaces
from analysis_lib.runs.analyses import cached_surfaces, finished_runs
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import expand_grid
from analysis_lib.studies import loss_landscape
from analysis_lib.training.config import with_overrides

SURFACE_PARAMS = {"seeds": [0, 1], "normalizations": ["filter", "none"], "radius": {"filter": 1.0, "none": 0.1},
                  "steps": 5}


@pytest.fixture
def grid(tiny_config, store_root):
    base = with_overrides(tiny_config, {"probes.names": ["eval", "weights"]})
    return run_grid(expand_grid(base, {"a": {"train.lr": [0.1, 1e30]}, "b": {"train.lr": [0.1]}}, [0, 1]),
                    store_root=store_root, progress=False)


def test_cached_surfaces_are_the_surfaces_of_every_finished_run(grid):
    assert grid.status_counts()["diverged"] == 2
    direct = run_surfaces(grid, **SURFACE_PARAMS)
    cached = cached_surfaces(grid, **SURFACE_PARAMS)
    pd.testing.assert_frame_equal(cached, direct, check_exact=True)
    derived = list(grid.store.root.glob("*/derived/surfaces-*.parquet"))
    assert len(derived) == len(finished_runs(grid)) == 2  # lr 0.1 is one run per seed, shared by both arms
    again = cached_surfaces(grid, **SURFACE_PARAMS)
    pd.testing.assert_frame_equal(again, direct, check_exact=True)
    some = grid.run_ids(arm="b", seed=1)
    pd.testing.assert_frame_equal(cached_surfaces(grid, some, **SURFACE_PARAMS),
                                  run_surfaces(grid, some, **SURFACE_PARAMS), check_exact=True)


def test_cached_surfaces_of_no_finished_run_say_why_as_the_direct_ones_do(grid, tiny_config, store_root):
    diverged = grid.run_ids(lr=1e30)
    for surfaces in (run_surfaces, cached_surfaces):  # other runs of the grid finished: these are asked in error
        with pytest.raises(ValueError, match="no finished run has a 'final' checkpoint"):
            surfaces(grid, diverged, **SURFACE_PARAMS)
    base = with_overrides(tiny_config, {"probes.names": ["eval", "weights"]})
    all_diverged = run_grid(expand_grid(base, {"train.lr": [1e30]}, [0]), store_root=store_root, progress=False)
    with pytest.warns(RuntimeWarning, match="no run finished"):
        empty, direct = (f(all_diverged, **SURFACE_PARAMS) for f in (cached_surfaces, run_surfaces))
    assert empty.empty and list(empty.columns) == list(direct.columns)


def test_cached_rescaling_surfaces_are_the_direct_ones(grid):
    params = {"factor": 4.0, "radius": {"filter": 1.0, "none": 0.1}, "seeds": [0], "steps": 5}
    ids = grid.run_ids(arm="a")
    direct = loss_landscape.rescaling_surfaces(grid, ids, **params)
    pd.testing.assert_frame_equal(loss_landscape.cached_rescaling_surfaces(grid, ids, **params), direct,
                                  check_exact=True)
    assert loss_landscape.cached_rescaling_surfaces(grid, grid.run_ids(lr=1e30), **params).empty


def test_cached_pair_analyses_are_the_direct_ones(twin_runs):
    from analysis_lib.landscape.interpolation import pair_interpolations
    from analysis_lib.layers import layer_sizes
    from analysis_lib.studies.run_to_run import twin_pairs
    from analysis_lib.studies.run_to_run_pairs import cached_pair_distances, cached_pair_interpolations
    from analysis_lib.trajectories.distances import pair_distances

    pairs = twin_pairs(twin_runs.runs)
    assert len(pairs) >= 3 and set(pairs["pair"]) >= {"independent"}
    config = next(iter(twin_runs.configs.values()))
    net, dataset = config.build_model(), config.dataset()
    splits = {"train": (dataset.x_train, dataset.y_train), "test": (dataset.x_test, dataset.y_test)}
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    curves, barriers = pair_interpolations(pairs, twin_runs.checkpoints("final"), net, splits, alphas=alphas)
    cached_curves, cached_barriers = cached_pair_interpolations(twin_runs, pairs, alphas=alphas)
    pd.testing.assert_frame_equal(cached_curves, curves, check_exact=True)
    pd.testing.assert_frame_equal(cached_barriers, barriers, check_exact=True)
    distances = pair_distances(pairs, twin_runs.checkpoints("trajectory"), layer_sizes(net))
    pd.testing.assert_frame_equal(cached_pair_distances(twin_runs, pairs), distances, check_exact=True)
    none = pairs.iloc[:0]
    assert cached_pair_distances(twin_runs, none).empty
    assert cached_pair_interpolations(twin_runs, none, alphas=alphas)[0].empty


def test_cached_curvature_is_run_curvature_in_two_parts(grid):
    from analysis_lib.curvature.final import run_curvature
    from analysis_lib.runs.analyses import CURVATURE, cached_curvature
    from analysis_lib.runs.derived import derived_path, part_path

    params = {"k": 2, "n_matvecs": 8}
    eigen, traces = run_curvature(grid, **params)
    cached_eigen, cached_traces = cached_curvature(grid, **params)
    pd.testing.assert_frame_equal(cached_eigen, eigen, check_exact=True)
    pd.testing.assert_frame_equal(cached_traces, traces, check_exact=True)
    rid = finished_runs(grid)[0]
    path = derived_path(grid.store, CURVATURE, [rid], params)
    assert path.exists() and all(part_path(path, p).exists() for p in CURVATURE.parts)
    path.unlink()  # a task whose own file is missing (killed after its parts) is not done
    part_path(path, "traces").write_bytes(b"not parquet")
    again_eigen, again_traces = cached_curvature(grid, **params)
    pd.testing.assert_frame_equal(again_traces, traces, check_exact=True)
