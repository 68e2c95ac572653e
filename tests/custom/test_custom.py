"""Your own model, data and loss through the kit: registry checks, run ids, the grid, the store, workers.

The factories live in ``tests/custom/user_code.py``, a module of the researcher's own (no analysis_lib
inside); the tests register them as a notebook would.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch

from analysis_lib.custom.config import CustomRunConfig
from analysis_lib.custom.registry import register_dataset, register_loss, register_model
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.executors import grid_executor
from analysis_lib.runs.grid import expand_grid
from analysis_lib.runs.store import run_id
from analysis_lib.training.config import config_from_dict, with_overrides
from analysis_lib.training.losses import CrossEntropy
from analysis_lib.validation import ConfigError
from tests.custom import user_code

TRAIN = {"lr": 0.05, "batch_size": 0, "steps": 6, "dtype": "float64"}


@pytest.fixture(autouse=True)
def registered():
    register_model("student", user_code.mlp, version="1")
    register_model("lm", user_code.tiny_lm, version="1")
    register_model("broken", user_code.not_a_module, version="1")
    register_dataset("teacher", user_code.teacher, version="1")
    register_dataset("copy", user_code.copy_task, version="1")


def regression(**sections):
    spec = {"model": {"name": "student", "width": 8}, "data": {"name": "teacher"}, "loss": {"name": "mse"},
            "train": TRAIN, "probes": {"names": ["eval", "grad_norm", "sharpness", "hessian_trace"], "every": 3}}
    return config_from_dict({**spec, **sections}, CustomRunConfig)


def token_lm(**sections):
    spec = {"model": {"name": "lm"}, "data": {"name": "copy"}, "loss": {"name": "token_cross_entropy"},
            "train": {**TRAIN, "lr": 0.5}, "probes": {"names": ["eval", "sharpness", "grad_overlap"], "every": 3}}
    return config_from_dict({**spec, **sections}, CustomRunConfig)


@pytest.mark.parametrize("spec, parameter", [
    ({"model": {"name": "student", "widht": 8}}, "model.widht"),
    ({"model": {"name": "resnet"}}, "model.name"),
    ({"data": {"name": "teacher", "n_train": torch.ones(2)}}, "data.n_train"),
    ({"loss": {"name": "huber"}}, "loss.name"),
    ({"model": {"name": "student", "activation": "relu", "depth": 2}}, "model.depth"),
])
def test_bad_parameters_are_refused_by_name_before_training(spec, parameter):
    with pytest.raises(ConfigError, match=parameter.replace(".", r"\.")):
        regression(**spec)


def test_registration_refuses_what_a_run_id_cannot_hold():
    with pytest.raises(ConfigError, match="version"):
        register_model("x", user_code.mlp, version="")
    with pytest.raises(ConfigError, match=r"\*\*kwargs"):
        register_model("x", lambda **kwargs: None, version="1")
    with pytest.raises(ConfigError, match="default of width"):
        register_model("x", lambda width=torch.ones(1): None, version="1")


def test_a_factory_that_does_not_return_a_module_is_named():
    config = regression(model={"name": "broken"})
    with pytest.raises(ConfigError, match="model.name.*list, not an nn.Module"):
        config.build_model()


def test_run_ids_hash_the_names_the_version_and_every_parameter():
    base = regression()
    assert run_id(base) == run_id(regression(model={"name": "student", "width": 8, "activation": "tanh"}))
    assert run_id(base) != run_id(regression(model={"name": "student", "width": 9}))
    assert run_id(base) != run_id(regression(loss={"name": "cross_entropy"}))
    before = run_id(base)
    register_model("student", user_code.mlp, version="2")  # the code behind the name changed
    assert run_id(regression()) != before
    assert base.identity()["model"] == {"name": "student", "version": "1",
                                        "params": {"activation": "tanh", "n_in": 4, "n_out": 1, "width": 8}}


def test_overrides_reach_the_factory_and_can_switch_components():
    config = with_overrides(regression(), {"model.width": 5, "data.n_train": 20})
    assert config.build_model()[0].out_features == 5
    assert len(config.splits()["train"][1]) == 20
    lm = with_overrides(regression(), {"model.name": "lm"})
    assert lm.model.spec() == {"name": "lm", "dim": 8, "vocab": 6}


def test_a_regression_grid_trains_caches_and_records_every_probe(tmp_path):
    grid = expand_grid(regression(), {"model.width": [4, 8]}, seeds=[0, 1])
    result = run_grid(grid, store_root=str(tmp_path))
    assert (result.runs["status"] == "finished").all() and not result.runs["cached"].any()
    metrics = set(result.metrics["metric"])
    assert {"train_loss", "test_loss", "grad_norm", "lambda_max", "hessian_trace"} <= metrics
    assert "train_acc" not in metrics  # no accuracy for a regression loss
    again = run_grid(grid, store_root=str(tmp_path))
    assert again.runs["cached"].all()
    assert sorted(result.metrics["value"]) == sorted(again.metrics["value"])


def test_the_recorded_sharpness_is_the_top_eigenvalue_of_the_dense_hessian(tmp_path):
    config = regression()
    result = run_grid([config], store_root=str(tmp_path))
    last = result.metrics.query("metric == 'lambda_max'").sort_values("step").iloc[-1]
    final = result.store.load_checkpoint(result.run_ids()[0], "final") if "weights" in config.probes.names else None
    assert final is None  # the run keeps no weights; retrain deterministically to get them
    model = config.build_model()
    data = config.splits()["train"]
    opt = torch.optim.SGD(model.parameters(), lr=config.train.lr)
    for _ in range(config.train.steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(data[0]), data[1]).backward()
        opt.step()
    x, y = data
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        w1, b1, w2, b2 = torch.split(theta, [p.numel() for p in model.parameters()])
        h = torch.tanh(x @ w1.view(8, 4).T + b1)
        return ((h @ w2.view(1, 8).T + b2 - y) ** 2).mean()
    top = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))[-1].item()
    assert last["value"] == pytest.approx(top, rel=1e-3)


def test_a_token_level_language_model_with_dict_inputs_and_ignored_targets(tmp_path):
    result = run_grid([token_lm()], store_root=str(tmp_path))
    assert (result.runs["status"] == "finished").all(), result.runs["error"].tolist()
    m = result.metrics
    assert {"train_loss", "test_loss", "train_acc", "lambda_max", "grad_overlap"} <= set(m["metric"])
    acc = m.query("metric == 'test_acc'")["value"]
    assert ((acc >= 0) & (acc <= 1)).all()
    problem = token_lm().problem()
    assert isinstance(problem.loss_fn, CrossEntropy) and set(problem.splits) == {"train", "test"}


def test_a_registered_loss_with_metrics_is_evaluated(tmp_path):
    register_loss("mae_tracked", torch.nn.functional.mse_loss, version="1",
                  metrics={"mae": lambda out, y: (out - y).abs().mean()})
    result = run_grid([regression(loss={"name": "mae_tracked"})], store_root=str(tmp_path))
    assert {"train_mae", "test_mae"} <= set(result.metrics["metric"])


def test_a_config_travels_to_a_process_that_cannot_import_the_users_module(tmp_path):
    blob = tmp_path / "config.pkl"
    blob.write_bytes(pickle.dumps(regression()))
    code = ("import pickle, sys; c = pickle.load(open(sys.argv[1], 'rb')); r = c.run(); "
            "print(r.status, 'tests' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["finished", "False"]


def test_a_grid_of_your_own_model_runs_on_a_dask_cluster(tmp_path):
    grid = expand_grid(regression(), {"model.width": [4, 8]}, seeds=[0])
    with grid_executor(workers=2) as executor:
        result = run_grid(grid, store_root=str(tmp_path), executor=executor)
    assert (result.runs["status"] == "finished").all(), result.runs["error"].tolist()
    local = run_grid(grid, store_root=str(tmp_path / "again"))
    merged = result.metrics.merge(local.metrics, on=["run_id", "step", "layer", "metric"])
    torch.testing.assert_close(torch.tensor(merged["value_x"].to_numpy()), torch.tensor(merged["value_y"].to_numpy()))


def test_final_weight_curvature_and_slices_of_your_own_runs(tmp_path):
    from analysis_lib.curvature.final import run_curvature
    from analysis_lib.curvature.hessian import HessianOperator
    from analysis_lib.landscape.surfaces import run_surfaces

    config = regression(probes={"names": ["eval", "weights"], "every": 3})
    result = run_grid([config], store_root=str(tmp_path))
    eigen, traces = run_curvature(result, k=2)
    rid = result.run_ids()[0]
    model = config.build_model(result.store.load_checkpoint(rid, "final"))
    x, y = config.splits()["train"]
    H = HessianOperator(model, torch.nn.functional.mse_loss, (x, y)).dense()
    top = torch.linalg.eigvalsh(H).flip(0)[:2]
    torch.testing.assert_close(torch.tensor(eigen["eigenvalue"].to_numpy()), top, rtol=1e-6, atol=0)
    model_trace = traces.set_index("layer").loc["model"]
    assert model_trace["estimate"] == pytest.approx(torch.trace(H).item(), rel=1e-9)
    slices = run_surfaces(result, seeds=[0], steps=5, splits=("train", "test"))
    assert set(slices["metric"]) == {"loss"} and set(slices["split"]) == {"train", "test"}


def test_load_module_finds_a_file_beside_the_notebooks_and_names_a_missing_one(tmp_path, monkeypatch):
    from analysis_lib.custom.modules import load_module
    from analysis_lib.custom.registry import registered_table

    monkeypatch.chdir(tmp_path)  # e.g. a papermill kernel in reports/<study>/
    module = load_module("your_model.py")
    assert callable(module.student) and callable(module.previous_token)
    with pytest.raises(ConfigError, match="user_module"):
        load_module("no_such_module.py")
    table = registered_table({"model": ["student"], "loss": ["mse"]})
    assert table[["kind", "name", "version"]].values.tolist() == [["model", "student", "1"], ["loss", "mse", "1"]]
    assert "width=16" in table.iloc[0]["parameters"]


def test_grad_noise_is_refused_where_samples_count_different_numbers_of_targets(tmp_path):
    result = run_grid([token_lm(probes={"names": ["grad_noise"], "every": 3})], store_root=str(tmp_path))
    assert result.runs["status"].tolist() == ["failed"]
    assert "grad_noise" in result.runs["error"][0] and "mean of each sample's own loss" in result.runs["error"][0]
    ok = run_grid([regression(probes={"names": ["grad_noise"], "every": 3})], store_root=str(tmp_path))
    assert ok.runs["status"].tolist() == ["finished"] and "grad_snr" in set(ok.metrics["metric"])


def test_your_model_that_cannot_fit_is_refused_before_training(tmp_path, monkeypatch):
    from analysis_lib.custom import training as custom_training
    from analysis_lib.runs.guards import size_estimate

    small = regression()
    built = sum(p.numel() for p in small.build_model().parameters())
    assert size_estimate(small)["n_params"] == built  # counted on the meta device, exactly
    monkeypatch.setattr(custom_training, "train_custom", lambda *a, **k: pytest.fail("trained before the check"))
    huge = regression(model={"name": "student", "width": 10**9})  # ~6e9 parameters, never allocated
    with pytest.raises(ConfigError, match=r"invalid parameter model=\{'name': 'student'.*'width': 1000000000\}: "
                                          r"the run has about 6e\+09 parameters"):
        run_grid([huge], store_root=str(tmp_path / "runs"), progress=False)
    lm = token_lm(model={"name": "lm", "dim": 10**6})  # embedding, norm and head: 6 x 1e6 each, plus 2e6
    assert size_estimate(lm)["n_params"] == 14 * 10**6 + 6


def test_a_grid_whose_weights_do_not_fit_on_disk_is_refused(tmp_path, monkeypatch):
    from analysis_lib.custom import training as custom_training
    from analysis_lib.runs import guards

    monkeypatch.setattr(custom_training, "train_custom", lambda *a, **k: pytest.fail("trained before the check"))
    monkeypatch.setenv("ANALYSIS_LIB_MEMORY_GB", "1e9")  # each run may use memory, but the grid's disk is short
    configs = expand_grid(regression(model={"name": "student", "width": 10**7}), {}, seeds=list(range(50)))
    # 50 runs x 6e7 parameters x 4 bytes x 2 checkpoints = 44.7 GiB
    usage = guards.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda root: usage._replace(free=10 * 2**30))
    with pytest.raises(ConfigError, match=r"invalid grid: its 50 runs to train would store about 44.7 GB of "
                                          r"weights, more than the 10 GB free"):
        run_grid(configs, store_root=str(tmp_path / "runs"), progress=False)


def test_the_language_model_size_is_counted_on_the_meta_device():
    from analysis_lib.runs.guards import size_estimate
    from tests.cases import tiny_lm_config

    config = tiny_lm_config()
    assert size_estimate(config)["n_params"] == sum(p.numel() for p in config.build_model().parameters())


def test_the_loss_unit_follows_the_registered_loss():
    from analysis_lib.runs.grid import GridResult

    assert regression().loss_unit() == "squared error" and token_lm().loss_unit() == "nats"
    mixed = GridResult(metrics=None, runs=None, configs={"a": regression(), "b": token_lm()})
    assert mixed.loss_unit() is None  # no one unit to print
    assert GridResult(metrics=None, runs=None, configs={"a": token_lm()}).loss_unit() == "nats"
