"""The command line: sweeps, the run listing and rendering one study with a parameter file.

A sweep from a YAML grid, the run listing, and one study rendered with a parameter file (one kernel start, on a
two-cell fake study); bad files are rejected with one message naming the file, the key and what is allowed,
before anything runs.
"""

from __future__ import annotations

import json

import jupytext
import nbformat
import pandas as pd
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from analysis_lib.__main__ import main
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import expand_grid

BASE = {"data": {"name": "gaussian_mixture", "n_train": 120, "n_test": 60, "n_classes": 3, "n_features": 5},
        "model": {"kind": "mlp", "depth": 2, "width": 8},
        "train": {"optimizer": "sgd", "lr": 0.1, "batch_size": 30, "steps": 12},
        "probes": {"schedule": "every", "every": 3}}
CONDITIONS = {"train.lr": [0.05, 0.1]}


@pytest.fixture
def sweep_file(tmp_path):
    spec = {"base": BASE, "conditions": CONDITIONS, "seeds": [0, 1], "workers": 1,
            "store": str(tmp_path / "runs"), "output": str(tmp_path / "out" / "metrics.parquet")}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_prints_the_run_table_and_writes_tidy_metrics(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file)]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 4 finished, 0 diverged, 0 failed (0 reused from the store)" in out
    written = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    expected = run_grid(expand_grid(BASE, CONDITIONS, [0, 1]), store_root=str(tmp_path / "ref"), progress=False)
    pd.testing.assert_frame_equal(written, expected.metrics, check_exact=True)
    assert main(["sweep", str(sweep_file), "--output", str(tmp_path / "again.parquet")]) == 0
    assert "(4 reused from the store)" in capsys.readouterr().out  # a second call resumes/reuses
    assert main(["runs", "--store", str(tmp_path / "runs")]) == 0
    assert f"4 runs in {tmp_path / 'runs'}: 4 finished" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"seeds": None, "seed": [0]}, "missing keys ['seeds'], unknown keys ['seed']"),
    ({"conditions": {"train.lr": 0.1}}, "conditions['train.lr']=0.1: must be a non-empty list"),
    ({"workers": 0}, "workers=0: must be an integer >= 1"),
    ({"base": {**BASE, "train": {**BASE["train"], "lr": -1}}}, "lr=-1"),
])
def test_bad_sweep_file_is_rejected_before_any_run(sweep_file, tmp_path, capsys, change, message):
    spec = {**yaml.safe_load(sweep_file.read_text()), **change}
    sweep_file.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    assert main(["sweep", str(sweep_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: invalid ") and message in err, err
    assert not (tmp_path / "runs").exists()


STUDY = "99-fake"


@pytest.fixture
def fake_study(tmp_path):
    """A study whose one code cell writes its ``title`` parameter to summary.json."""
    nb = new_notebook(cells=[
        new_markdown_cell("# Fake study"),
        new_code_cell('output_dir = ""\ntitle = "from the set"\nn = 1', metadata={"tags": ["parameters"]}),
        new_code_cell("import json, pathlib\n"
                      "(pathlib.Path(output_dir) / 'summary.json').write_text(json.dumps({'title': title, 'n': n}))"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder = tmp_path / "notebooks"
    (folder / "params" / STUDY).mkdir(parents=True)
    nbformat.write(nb, folder / f"{STUDY}.ipynb")
    (folder / f"{STUDY}.py").write_text(jupytext.writes(nb, fmt="py:percent"))
    (folder / "params" / STUDY / "default.yaml").write_text("title: from the set\nn: 2\n")
    return folder


def test_report_renders_one_study_with_a_parameter_file(fake_study, tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text("title: from my file\n")
    reports = tmp_path / "reports"
    assert main(["report", "--study", STUDY, "--params-file", str(params), "--notebooks-dir",
                 str(fake_study), "--reports-dir", str(reports)]) == 0
    summary = json.loads((reports / STUDY / "summary.json").read_text())
    assert summary == {"title": "from my file", "n": 2}  # the file on top of the default set
    assert (reports / "index.html").exists() and (reports / f"{STUDY}.html").exists()
    assert (reports / "claims.html").exists()  # the claims the verdicts cite, beside the index


@pytest.mark.parametrize("text, message", [
    ("titel: typo\n", "unknown parameters ['titel'] for study 99-fake; allowed: output_dir, title, n"),
    ("- a list\n", "must hold a non-empty mapping of parameter names to values, not list"),
    ("title: [unclosed\n", "not valid YAML"),
])
def test_report_rejects_a_bad_parameter_file(fake_study, tmp_path, capsys, text, message):
    params = tmp_path / "bad.yaml"
    params.write_text(text)
    assert main(["report", "--study", STUDY, "--params-file", str(params), "--notebooks-dir",
                 str(fake_study), "--reports-dir", str(tmp_path / "reports")]) == 1
    err = capsys.readouterr().err
    assert f"error: invalid parameter --params-file='{params}': {message}" in err, err
    assert not (tmp_path / "reports").exists()  # rejected before any kernel started


def test_parameter_file_needs_exactly_one_study(fake_study, tmp_path, capsys):
    params = tmp_path / "mine.yaml"
    params.write_text("title: x\n")
    assert main(["report", "--params-file", str(params), "--notebooks-dir", str(fake_study)]) == 1
    assert "--params-file needs exactly one --study" in capsys.readouterr().err


def test_a_value_a_study_refuses_is_one_error_line_and_the_index_is_rebuilt(fake_study, tmp_path, capsys):
    check = new_code_cell("from analysis_lib.validation import check_int\ncheck_int('n', n, 1)")
    nb = nbformat.read(fake_study / f"{STUDY}.ipynb", as_version=4)
    nb.cells.insert(2, check)
    nbformat.write(nb, fake_study / f"{STUDY}.ipynb")
    params = tmp_path / "bad-n.yaml"
    params.write_text("n: 0\n")
    reports = tmp_path / "reports"
    assert main(["report", "--study", STUDY, "--params-file", str(params), "--notebooks-dir", str(fake_study),
                 "--reports-dir", str(reports)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "ConfigError: invalid parameter n=0" in err[0], err
    assert (reports / "index.html").exists() and "Traceback" not in "\n".join(err)


def test_runs_lists_conditions_status_and_the_error_of_failed_runs(tmp_path, capsys, monkeypatch):
    from analysis_lib.training import classifier

    store = tmp_path / "runs"
    run_grid(expand_grid(BASE, {"train.lr": [0.1]}, seeds=[0]), store_root=str(store), progress=False)
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    run_grid(expand_grid(BASE, {"train.lr": [0.2]}, seeds=[0]), store_root=str(store), progress=False)
    assert main(["runs", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "mlp w8 d2 | gaussian_mixture | sgd lr=0.1 bs=30 steps=12" in out and "RuntimeError: boom" in out
    assert main(["runs", "--store", str(store), "--failed"]) == 0
    failed = capsys.readouterr().out
    assert "lr=0.2" in failed and "lr=0.1 " not in failed


def test_runs_into_a_closed_pipe_says_nothing(tmp_path):
    import subprocess
    import sys

    store = tmp_path / "runs"
    run_grid(expand_grid(BASE, {"train.lr": [0.01 * i for i in range(1, 30)]}, seeds=[0]), store_root=str(store),
             progress=False)
    cmd = f"{sys.executable} -m analysis_lib runs --store {store} | head -2"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert len(out.stdout.splitlines()) == 2 and "BrokenPipeError" not in out.stderr, out.stderr


def test_an_unreachable_scheduler_fails_within_seconds_naming_it():
    import time

    from analysis_lib.runs.executors import grid_executor
    from analysis_lib.validation import ConfigError

    start = time.perf_counter()
    with pytest.raises(ConfigError, match="scheduler='tcp://127.0.0.1:9'.*no Dask scheduler answered"):
        with grid_executor(scheduler="tcp://127.0.0.1:9"):
            pass
    assert time.perf_counter() - start < 15


def test_replicate_without_a_published_report_is_one_error_line(fake_study, tmp_path, capsys):
    (fake_study / "params" / STUDY / "default.yaml").write_text("title: t\nseeds: [0, 1]\n")
    argv = ["replicate", "--study", STUDY, "--notebooks-dir", str(fake_study), "--reports-dir", str(tmp_path / "r")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: invalid study 99-fake for replicate: no published report")
    assert main(argv[:1] + argv[3:]) == 0  # every study: the unrendered one is skipped, and says so
    assert f"skip     {STUDY}: invalid study" in capsys.readouterr().out
