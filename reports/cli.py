"""`xfbench report [RESULTS ...] [-o PATH] [--history DIR] [--no-published]`.

RESULTS are pytest-benchmark JSON files, run folders (`.xfbench/runs/<id>/`) or
folders holding either; several machines and commits merge into one page.
Without RESULTS, the latest run under `.xfbench/runs/` is used (if any).
Results committed under `reports/published/` are always included unless
`--no-published` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Keep this module light: benchmarks.cli imports it to build its parser.
DEFAULT_OUT = Path(__file__).resolve().parent / "index.html"
RUNS_DIR = Path(".xfbench/runs")
DEFAULT_HISTORY = Path(".benchmarks")


def _existing(text: str) -> Path:
    """argparse `type=` of RESULTS: a file or folder that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist; pass result files or run folders")
    return path


def _folder(text: str) -> Path:
    """argparse `type=` of --history: an existing folder."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder; pass pytest-benchmark's storage folder "
                                          f"(e.g. {DEFAULT_HISTORY}/)")
    return path


def _page(text: str) -> Path:
    """argparse `type=` of --output: a file path (its folder is created), not an existing folder."""
    path = Path(text)
    if path.is_dir() or text.endswith(("/", "\\")):
        raise argparse.ArgumentTypeError(f"{text} is a folder; pass the HTML file to write, e.g. {Path(text) / 'index.html'}")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results",
        nargs="*",
        type=_existing,
        metavar="RESULTS",
        help="pytest-benchmark JSON files, run folders or folders of them "
        "(default: the latest run under .xfbench/runs/)",
    )
    parser.add_argument(
        "-o", "--output", type=_page, default=DEFAULT_OUT, metavar="PATH",
        help=f"where to write the HTML page (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--history", type=_folder, default=None, metavar="DIR",
        help="pytest-benchmark storage folder for the step-time-across-commits plot "
        f"(default: {DEFAULT_HISTORY}/ when it exists)",
    )
    parser.add_argument(
        "--no-published", action="store_true",
        help="leave out the reference results committed under reports/published/",
    )


def latest_run(runs_dir: Path = RUNS_DIR) -> Path | None:
    if not runs_dir.is_dir():
        return None
    runs = [p for p in runs_dir.iterdir() if (p / "run.json").is_file()]
    return max(runs, key=lambda p: (p / "run.json").stat().st_mtime) if runs else None


def run(args: argparse.Namespace) -> int:
    from reports.build import ReportError, build_report

    inputs = list(args.results)
    if not inputs:
        last = latest_run()
        if last is not None:
            print(f"xfbench report: no RESULTS given, using the latest run {last}", file=sys.stderr)
            inputs = [last]
        elif args.no_published:
            print("xfbench report: no RESULTS given, no run under .xfbench/runs/, and --no-published: "
                  "nothing to report", file=sys.stderr)
            return 2
    history = args.history
    if history is None and DEFAULT_HISTORY.is_dir():
        history = DEFAULT_HISTORY
    t0 = time.perf_counter()
    try:
        out = build_report(inputs, args.output, history_dir=history, include_published=not args.no_published)
    except ReportError as e:
        print(f"xfbench report: error: {e}", file=sys.stderr)
        return 1
    size = out.stat().st_size
    print(f"xfbench report: wrote {out} ({size / 1024:.0f} KiB) in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xfbench report", description=__doc__)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad value: argparse said why; return its status (2) to the caller
        return int(e.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
