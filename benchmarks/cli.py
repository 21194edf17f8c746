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
    "gate": ("benchmarks.gate.cli", "fail when step time regressed against the committed baseline"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="xfbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {name: sub.add_parser(name, help=h, description=h) for name, (_, h) in COMMANDS.items()}
    # import only the chosen command's module: one broken subsystem never takes down the others
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    if chosen in COMMANDS:
        module = importlib.import_module(COMMANDS[chosen][0])
        module.add_arguments(subparsers[chosen])
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("xfbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
