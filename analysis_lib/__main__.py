"""Command line: ``python -m analysis_lib {report,index,clear-cache}``.

    python -m analysis_lib report [--params default] [--study 01-layer-dynamics ...]
    python -m analysis_lib index
    python -m analysis_lib clear-cache [--yes]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from analysis_lib.paths import runs_dir


def _report(args: argparse.Namespace) -> int:
    """Render the chosen studies and the index (`report.render_all`)."""
    from analysis_lib.report import render_all  # imports papermill; only this command needs it

    index = render_all(args.params, studies=args.study or None, reports_dir=args.reports_dir,
                       skip_missing=args.skip_missing)
    print(f"index: {index}")
    return 0


def _index(args: argparse.Namespace) -> int:
    """Rebuild reports/index.html from what is already rendered (`report.build_index`)."""
    from analysis_lib.report import build_index

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
    index = commands.add_parser("index", help="rebuild reports/index.html only")
    for sub in (report, index):
        sub.add_argument("--reports-dir", type=Path, default=None,
                         help="output folder (default: reports/ in the project)")
        sub.set_defaults(func=_report if sub is report else _index)
    clear = commands.add_parser("clear-cache", help="delete the run store data/runs/")
    clear.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    clear.set_defaults(func=_clear_cache)
    return parser


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
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
