"""The step-time history handed to github-action-benchmark: only per-step step-time entries.

    python -m benchmarks.gate.history output.json steps.json

Reads a pytest-benchmark JSON run (`--benchmark-json output.json`) and writes the same file with
only the entries whose `extra_info` says kind "step", status "ok" and stats_unit "step" (their
stats are per training step). Accuracy and parity entries are left out: their "timing" is a
training run or a cache lookup, not a step. Exit status 2, with the reason, when the input is not
a pytest-benchmark run or holds no such entry.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.record import is_step_history_entry
from benchmarks.store import ResultFileError, read_json, write_json


def is_step(bench) -> bool:
    return isinstance(bench, dict) and is_step_history_entry(bench.get("extra_info"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gate.history", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="pytest-benchmark JSON (--benchmark-json)")
    p.add_argument("output", help="where to write the step-time entries")
    args = p.parse_args(argv)
    try:
        run = read_json(args.input)
    except ResultFileError as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 2
    if not isinstance(run, dict) or not isinstance(run.get("benchmarks"), list):
        print(f"{p.prog}: {args.input}: not a pytest-benchmark JSON file (no 'benchmarks' list)", file=sys.stderr)
        return 2
    kept = [b for b in run["benchmarks"] if is_step(b)]
    if not kept:
        print(f"{p.prog}: {args.input}: no ok step-time entry with per-step stats (extra_info.kind 'step', "
              f"stats_unit 'step') among {len(run['benchmarks'])}", file=sys.stderr)
        return 2
    dropped = len(run["benchmarks"]) - len(kept)
    write_json(args.output, {**run, "benchmarks": kept,
                             "xfbench_history_filter": {"kept": len(kept), "dropped": dropped}})
    print(f"{p.prog}: {len(kept)} step-time entries to {args.output} ({dropped} other entries left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
