"""`xfbench` console script: one subcommand per job, each owned by its package."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module providing add_arguments(parser) and run(args) -> int, help)
COMMANDS = {
    "data": ("shared_data.cli", "prepare (or reuse) the preprocessed dataset cache and summarise it"),
    "parity": ("benchmarks.parity", "prove the implementations compute the same network"),
    "report": ("reports.cli", "build the HTML report from result files or run folders"),
    "gate": ("benchmarks.gate", "fail when step time regressed against the committed baseline"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xfbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        modules[name] = importlib.import_module(module)
        modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("xfbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
