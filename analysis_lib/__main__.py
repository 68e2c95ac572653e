"""Command line: ``python -m analysis_lib {report,replicate,index,sweep,runs,clear-cache}``.

python -m analysis_lib report [--params default] [--study 01-layer-dynamics ...]
python -m analysis_lib report --study 01-layer-dynamics --params-file my-params.yaml
python -m analysis_lib replicate [--study 03-hessian-spectrum ...] [--params default] [--seeds 10 11 12]
python -m analysis_lib index
python -m analysis_lib sweep grid.yaml [--workers 2] [--scheduler tcp://host:8786] [--output m.parquet]
python -m analysis_lib runs [--store data/runs]
python -m analysis_lib clear-cache [--yes]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from analysis_lib.paths import runs_dir
from analysis_lib.validation import ConfigError


def _report(args: argparse.Namespace) -> int:
    """Render the chosen studies and the index (:func:`analysis_lib.report.render.render_all`), or one with a file."""
    from analysis_lib.report.render import render_all  # imports papermill; only this command needs it

    if args.params_file is not None:
        return _report_with_file(args)
    index = render_all(args.params, studies=args.study or None, reports_dir=args.reports_dir,
                       notebooks_dir=args.notebooks_dir, skip_missing=args.skip_missing, workers=args.workers)
    print(f"index: {index}")
    return 0


def _replicate(args: argparse.Namespace) -> int:
    """Render studies again on disjoint seeds and compare verdicts (:mod:`analysis_lib.report.replicate`)."""
    from analysis_lib.report.render import error_summary
    from analysis_lib.report.replicate import replicate_study, replication_summary
    from analysis_lib.report.studies import list_studies, notebooks_dir_or_default, param_sets

    nb_dir = notebooks_dir_or_default(args.notebooks_dir)
    studies = args.study or [s for s in list_studies(nb_dir) if args.params in param_sets(s, nb_dir)]
    failures = 0
    for study in studies:
        try:
            record = replicate_study(study, args.params, args.seeds, reports_dir=args.reports_dir,
                                     notebooks_dir=nb_dir)
        except ConfigError as err:  # bad seeds, or no report to compare with
            if args.study:
                raise
            print(f"skip     {study}: {err}", flush=True)
            continue
        except Exception as exc:  # a failing render: say which, go on with the others
            failures += 1
            print(f"FAILED   {study} replication: {error_summary(exc)}", file=sys.stderr)
            continue
        print(f"ok       {study} ({args.params}) replication on {replication_summary(record)}")
    return 1 if failures else 0


def _report_with_file(args: argparse.Namespace) -> int:
    """Render one study with the values of ``--params-file`` on top of the ``--params`` set."""
    from analysis_lib.report.params import read_params_file
    from analysis_lib.report.render import build_index, render_study

    if not args.study or len(args.study) != 1:
        raise ConfigError(f"invalid parameter --study={args.study!r}: --params-file needs exactly "
                          "one --study")
    from analysis_lib.report.render import error_summary

    study = args.study[0]
    extra = read_params_file(args.params_file, study, args.notebooks_dir)
    try:
        record = render_study(study, args.params, notebooks_dir=args.notebooks_dir,
                              reports_dir=args.reports_dir, extra_parameters=extra)
    except Exception as exc:  # a failing cell (e.g. a ConfigError from a bad value): one line, index rebuilt
        index = build_index(args.reports_dir, notebooks_dir=args.notebooks_dir)
        print(f"error: {study} ({args.params} + {args.params_file}) failed: {error_summary(exc)}; the executed "
              f"notebook beside {index} shows it", file=sys.stderr)
        return 1
    print(f"ok       {study} ({args.params} + {args.params_file}) {record['seconds']:7.1f} s")
    print(f"index: {build_index(args.reports_dir, notebooks_dir=args.notebooks_dir)}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """Run a sweep file's grid, print the run table, write tidy metrics to parquet."""
    from analysis_lib.runs.executors import check_executor_parameters
    from analysis_lib.runs.sweep import load_sweep, run_sweep, run_table_text

    # Dask logs every worker start and stop at INFO; read from the environment when dask loads.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    spec = load_sweep(args.file)
    overrides = {"workers": args.workers, "scheduler": args.scheduler, "output": args.output,
                 "store": args.store}
    spec.update({k: v for k, v in overrides.items() if v is not None})
    check_executor_parameters(spec["workers"], spec["scheduler"])  # overrides are checked too
    result = run_sweep(spec, force=args.force)
    print(run_table_text(result))
    print(f"metrics: {spec['output']} ({len(result.metrics)} rows)")
    failed = result.status_counts()["failed"]
    if failed:
        print(f"error: {failed} runs failed (their errors: python -m analysis_lib runs); run the "
              "same command again to retry them", file=sys.stderr)
    return 1 if failed else 0


def _runs(args: argparse.Namespace) -> int:
    """Print one line per stored run and the counts by status."""
    from analysis_lib.runs.store import RunStore

    store = RunStore(args.store)
    table = store.runs()
    if args.failed:
        table = table[table["status"].isin(["failed", "damaged", "incomplete"])]
    if table.empty:
        print(f"no {'failed ' if args.failed else ''}runs in {store.root}")
        return 0
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}", na_rep=""))
    counts = ", ".join(f"{n} {status}" for status, n in table["status"].value_counts().items())
    print(f"{len(table)} runs in {store.root}: {counts}")
    return 0


def _index(args: argparse.Namespace) -> int:
    """Rebuild reports/index.html from what is already rendered (:func:`analysis_lib.report.render.build_index`)."""
    from analysis_lib.report.render import build_index

    print(f"index: {build_index(args.reports_dir)}")
    return 0


def _folder_size(folder: Path) -> int:
    """Total bytes of the files under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _clear_cache(args: argparse.Namespace) -> int:
    """Delete the run store (``data/runs/`` or $ANALYSIS_LIB_DATA/runs); without --yes, a dry run."""
    runs = runs_dir()
    if not runs.exists():
        print(f"nothing to delete: {runs} does not exist")
        return 0
    count = sum(1 for p in runs.iterdir())
    size_mb = _folder_size(runs) / 1e6
    if not args.yes:
        print(f"would delete {runs} ({count} entries, {size_mb:.1f} MB); add --yes to delete")
        return 0
    shutil.rmtree(runs)
    print(f"deleted {runs} ({count} entries, {size_mb:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with the report, index and clear-cache commands."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis_lib", description="Render study reports and manage the run cache."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser("report", help="render studies to reports/ and rebuild the index")
    report.add_argument("--params", default="default", help="parameter set (default: default)")
    report.add_argument("--study", action="append", metavar="NN-NAME",
                        help="study to render; repeat for several (default: all)")
    report.add_argument("--skip-missing", action="store_true",
                        help="skip studies without the parameter set instead of failing")
    report.add_argument("--workers", type=int, default=1, metavar="N",
                        help="N > 1: every study on one LocalCluster of N processes, started once")
    report.add_argument("--params-file", type=Path, default=None, metavar="YAML",
                        help="render one --study with these values on top of the --params set")
    replicate = commands.add_parser("replicate", help="render studies again on disjoint seeds and compare verdicts")
    replicate.add_argument("--params", default="default", help="parameter set (default: default)")
    replicate.add_argument("--study", action="append", metavar="NN-NAME",
                           help="study to replicate; repeat for several (default: all with the parameter set)")
    replicate.add_argument("--seeds", type=int, nargs="+", default=None,
                           help="the new seeds (default: as many as the study uses, after the largest)")
    index = commands.add_parser("index", help="rebuild reports/index.html only")
    for sub, func in ((report, _report), (replicate, _replicate), (index, _index)):
        sub.add_argument("--reports-dir", type=Path, default=None,
                         help="output folder (default: reports/ in the project)")
        sub.add_argument("--notebooks-dir", type=Path, default=None,
                         help="study notebooks folder (default: notebooks/ in the project)")
        sub.set_defaults(func=func)
    _add_sweep_and_runs(commands)
    clear = commands.add_parser("clear-cache", help="delete the run store data/runs/")
    clear.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    clear.set_defaults(func=_clear_cache)
    return parser


def _add_sweep_and_runs(commands) -> None:
    """The ``sweep`` and ``runs`` commands (run store and executors; no notebook involved)."""
    sweep = commands.add_parser("sweep", help="run a YAML grid of runs without a notebook")
    sweep.add_argument("file", type=Path, help="sweep file: base, conditions, seeds (see analysis_lib/runs/sweep.py)")
    sweep.add_argument("--workers", type=int, default=None, help="override the file's workers")
    sweep.add_argument("--scheduler", default=None,
                       help="override the file's scheduler: '' | tcp://host:port | slurm | pbs")
    sweep.add_argument("--output", type=Path, default=None, help="parquet file for the tidy metrics")
    sweep.add_argument("--store", default=None, help="run store folder (default: data/runs)")
    sweep.add_argument("--force", action="store_true", help="recompute runs already stored")
    sweep.set_defaults(func=_sweep)
    runs = commands.add_parser("runs", help="list the runs in the run store")
    runs.add_argument("--store", default=None, help="run store folder (default: data/runs)")
    runs.add_argument("--failed", action="store_true", help="only failed, damaged or incomplete runs")
    runs.set_defaults(func=_runs)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (1 on a failed render or bad input).

    Args:
        argv: arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        0 on success, 1 on error (the message goes to stderr).
    """
    args = build_parser().parse_args(argv)
    # papermill's log_output streams each cell's output through the "papermill" logger.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return status
    except BrokenPipeError:  # `runs | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept in the run store; the same command resumes",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
