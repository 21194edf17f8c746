"""`xfbench gate` on the command line: arguments, the three modes (A/B, --results, --update-baseline)
and the verdict."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

from benchmarks import machine, registry
from benchmarks.gate import GateInputError, ab, baseline, worktree
from benchmarks.gate.stats import LOOKS
from benchmarks.harness import home
from benchmarks.profiles import cells, profile
from benchmarks.store import now_iso, write_json

BASELINE_DIR = worktree.ROOT / "benchmarks" / "baselines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impls", default=",".join(registry.NAMES), help="comma-separated implementations (default: all)")
    p.add_argument("--pairs", type=int, default=100, help="most A/B pairs per cell (default 100; fewer when clear)")
    p.add_argument("--base", default=None, help="baseline commit to compare with (default: the baseline file's)")
    p.add_argument("--json", default=None, help="also write the verdict to this file (atomically)")
    p.add_argument("--results", default=None, help="read this pytest-benchmark JSON run instead of measuring")
    p.add_argument("--update-baseline", action="store_true", help="measure HEAD and rewrite this machine class's baseline file")
    p.add_argument("--allow-dirty", action="store_true", help="with --update-baseline: accept uncommitted changes")
    p.add_argument("--baseline", default=None, help="baseline file (default: benchmarks/baselines/<machine class>.json)")
    p.add_argument("--baseline-dir", default=str(BASELINE_DIR), help=argparse.SUPPRESS)
    p.add_argument("--alpha", type=float, default=0.01, help="false-alarm rate of the whole gate (default 0.01)")
    p.add_argument("--margin", type=float, default=0.03, help="slow-down tolerated before it counts (default 0.03)")
    p.add_argument("--nice", type=int, default=-15, help="niceness of the two workers while timed, where allowed (default -15)")
    p.add_argument("--no-nice", dest="nice", action="store_const", const=None, help="leave the workers' priority alone")
    p.add_argument("--budget-s", type=float, default=200.0, help="soft time budget of the whole gate (default 200 s)")
    p.add_argument("--block-s", type=float, default=0.15, help="target seconds per timed block (default 0.15)")
    p.add_argument("--results-threshold", type=float, default=0.25, help="--results mode: normalised slow-down that fails")
    p.add_argument("--reference-blocks", type=int, default=15, help=argparse.SUPPRESS)
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false", help="skip the calibration (information only)")
    p.add_argument("--seed", type=int, default=None, help="seed of the A/B order (default: random)")
    p.add_argument("--timeout-s", type=float, default=300.0, help=argparse.SUPPRESS)
    p.add_argument("--last", default=None, help=argparse.SUPPRESS)


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args) -> int:
    with contextlib.suppress(ValueError):  # only the main thread may set it
        signal.signal(signal.SIGTERM, _terminate)
    t0 = time.monotonic()
    say = lambda m: print(f"[gate] {m}", flush=True)  # noqa: E731
    try:
        impls = parse_impls(args.impls)
        if args.pairs < LOOKS[0]:
            raise GateInputError(f"--pairs must be at least {LOOKS[0]}")
        mc = baseline.this_machine()
        path = baseline.path_for(args.baseline, args.baseline_dir, mc["machine_class"])
        step_cells = [c for c in cells(profile("quick"), impls, ("cpu",)) if c.kind == "step"]
        if args.update_baseline:
            return update_baseline(args, path, step_cells, mc, say)
        base_file = baseline.load(path, mc["machine_class"])
        if args.results:
            records = baseline.compare_results(args.results, args.results_threshold, base_file, impls)
            mode = "results"
        else:
            records = ab.run_ab(args, base_file, step_cells, say)
            mode = "ab"
    except GateInputError as e:
        print(f"xfbench gate: {e}", file=sys.stderr)
        return 2
    return report(args, records, mode, path, time.monotonic() - t0, say)


def parse_impls(text: str) -> list[str]:
    impls = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    for name in impls:
        try:
            registry.entry(name)
        except ValueError as e:
            raise GateInputError(f"--impls: {e}") from None
    if not impls:
        raise GateInputError("--impls: no implementation named")
    return impls


def update_baseline(args, path: Path, step_cells, mc: dict, say) -> int:
    dirty = worktree.dirty_paths()
    if dirty and not args.allow_dirty:
        raise GateInputError(
            "refusing to update the baseline from a dirty working tree (the baseline names a commit, so it must "
            f"measure exactly that commit): {', '.join(dirty[:8])}{' ...' if len(dirty) > 8 else ''}\n"
            "Commit or stash first, or pass --allow-dirty."
        )
    commit = worktree.git("rev-parse", "HEAD")
    figures = ab.measure_reference(args, step_cells, say)
    baseline.write(path, mc, commit, bool(dirty), figures, machine.versions())
    say(f"wrote {path} for commit {commit[:12]}; review it with `git diff {path}` and commit it")
    return 0


def report(args, records, mode, path, elapsed, say) -> int:
    """Print and write the verdict; the exit status: 1 regressed, 2 the baseline could not be measured, else 0."""
    regressed = [r for r in records if r.get("regressed")]
    for r in records:
        if "normalised_vs_reference" in r:
            say(f"{r['key']}: calibration-normalised step vs the baseline file's reference: "
                f"{r['normalised_vs_reference']:.3f} (information)")
    verdict = {
        "mode": mode,
        "finished": now_iso(),
        "elapsed_s": round(elapsed, 1),
        "baseline_file": str(path),
        "alpha": args.alpha,
        "margin": args.margin,
        "regressions": [
            {k: r.get(k) for k in ("impl", "device", "batch_size", "image_size", "ratio", "confidence")}
            for r in regressed
        ],
        "cells": records,
    }
    write_json(Path(args.last) if args.last else home() / "gate" / "last.json", verdict)
    if args.json:
        write_json(Path(args.json), verdict)
    if regressed:
        print_regressions(regressed, elapsed)
        return 1
    failed = [r for r in records if r.get("status") == "failed"]
    if failed:
        # the baseline commit itself could not be measured: the gate cannot vouch for these cells
        print(f"xfbench gate: the baseline commit could not be measured for {len(failed)} cell(s):", file=sys.stderr)
        for r in failed:
            print(f"  {r['impl']} on {r['device']}: {r['reason'].splitlines()[0]}", file=sys.stderr)
        print("Pass --base REV, or update the baseline (`xfbench gate --update-baseline`).", file=sys.stderr)
        return 2
    skipped = [r for r in records if r.get("status") == "skipped"]
    also = f"; {len(skipped)} skipped ({', '.join(r['impl'] for r in skipped)})" if skipped else ""
    print(f"xfbench gate: no step-time regression in {len(records) - len(skipped)} cell(s){also} ({elapsed:.0f} s)")
    return 0


def print_regressions(regressed, elapsed: float) -> None:
    print(f"xfbench gate: step time REGRESSED in {len(regressed)} cell(s) ({elapsed:.0f} s):")
    for r in regressed:
        conf = (f"{r['confidence'] * 100:.3f}% (p = {r['p']:.2g}, alpha {r['alpha']:.2g})"
                if r.get("confidence") is not None and r.get("p") is not None else "n/a (single run)")
        ratio = f"{r['ratio']:.3f}x" if r.get("ratio") is not None else "n/a"
        why = f" ({r['reason'].splitlines()[0]})" if r.get("reason") else ""
        print(f"  {r['impl']} on {r['device']} (batch {r['batch_size']}, {r['image_size']}px): "
              f"ratio {ratio}, confidence {conf}{why}")
