"""`xfbench gate` on the command line: arguments, the four modes (A/B, --results, --update-baseline,
--self-test) and the verdict, which is written (last.json, and --json) whatever the exit status."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

from benchmarks import machine, registry, workloads
from benchmarks.gate import GateInputError, ab, baseline, selftest, worktree
from benchmarks.gate.stats import LOOKS, T975
from benchmarks.inputs import home
from benchmarks.store import now_iso, write_json
from shared_data.cli import bounded

BASELINE_DIR = worktree.ROOT / "benchmarks" / "baselines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impls", default=",".join(registry.NAMES),
                   help="comma-separated implementations (default: all), or 'changed': those whose code, or the "
                        "harness code every worker runs, differs from the base")
    p.add_argument("--strides", default="1,2", help="pool strides whose step time is gated (default 1,2)")
    p.add_argument("--workloads", default=workloads.ORIGIN, metavar="NAMES",
                   help="built-in workloads gated, comma-separated, or all (default: origin, whose budget and "
                        "measured power the defaults hold); one the baseline commit lacks is listed as skipped")
    p.add_argument("--metrics", default=",".join(ab.METRICS), help="step, compile or both (default)")
    p.add_argument("--process-pairs", type=bounded(int, 1, max(T975) + 1), default=3,
                   help="fresh base/head process pairs a cell needs, all agreeing, to count as regressed "
                        f"(1..{max(T975) + 1}, default 3; a passing cell stops at its first quiet pair)")
    p.add_argument("--samples", type=bounded(int, LOOKS[0], 10_000), default=70,
                   help=f"most A/B step samples per process pair, >= {LOOKS[0]} (default 70; fewer when clear)")
    p.add_argument("--compile-samples", type=bounded(int, 8, 100), default=8,
                   help="A/B compile-time samples per process pair, one look (default 8: the smallest exact "
                        "p-value, 2^-8, is below the default alpha)")
    p.add_argument("--base", default=None, metavar="REV|pin|auto",
                   help="the commit to compare with: a revision, 'pin' (the commit in benchmarks/baselines/pin.json) "
                        "or 'auto' (a pull request: the merge base with origin/$GITHUB_BASE_REF; a push: "
                        "$XF_GATE_BEFORE, the commit before it; else the pin, else HEAD). Default: the pin where "
                        "the file exists, else auto")
    p.add_argument("--pin", default=None, metavar="FILE", help="the pin file (default: benchmarks/baselines/pin.json)")
    p.add_argument("--json", default=None, help="also write the verdict to this file (atomically)")
    p.add_argument("--results", default=None, help="read this pytest-benchmark JSON run instead of measuring")
    p.add_argument("--update-baseline", action="store_true",
                   help="measure HEAD, rewrite this machine class's reference figures and pin HEAD")
    p.add_argument("--why", default=None, help="with --update-baseline: why HEAD is the new baseline (kept in the pin)")
    p.add_argument("--allow-dirty", action="store_true", help="with --update-baseline: accept uncommitted changes")
    p.add_argument("--baseline", default=None,
                   help="reference figures (default: benchmarks/baselines/<machine class>.json, optional)")
    p.add_argument("--baseline-dir", default=str(BASELINE_DIR), help=argparse.SUPPRESS)
    p.add_argument("--alpha", type=bounded(float, 0.0, 0.5, low_open=True), default=0.01,
                   help="false-alarm rate of one process pair's test, in (0, 0.5] (default 0.01)")
    p.add_argument("--margin", type=bounded(float, 0.0, 1.0), default=0.03,
                   help="step-time slow-down tolerated before it counts, in [0, 1] (default 0.03)")
    p.add_argument("--compile-margin", type=bounded(float, 0.0, 1.0), default=0.05,
                   help="compile-time slow-down tolerated before it counts, in [0, 1] (default 0.05)")
    p.add_argument("--self-test", action="store_true",
                   help="measure this machine's false alarms and the gate's power for --slowdown (no baseline)")
    p.add_argument("--slowdown", default="0.15", help="--self-test: injected slow-downs, comma-separated (default 0.15)")
    p.add_argument("--trials", type=bounded(int, 1, 1000), default=8,
                   help="--self-test: fresh process pairs to try (default 8)")
    p.add_argument("--nice", type=bounded(int, -20, 19), default=-15,
                   help="niceness of the two workers while timed, where allowed, -20..19 (default -15)")
    p.add_argument("--no-nice", dest="nice", action="store_const", const=None, help="leave the workers' priority alone")
    p.add_argument("--budget-s", type=bounded(float, 0.0, low_open=True), default=200.0,
                   help="soft time budget of the whole gate (default 200 s)")
    p.add_argument("--block-s", type=bounded(float, 0.0, 60.0, low_open=True), default=0.15,
                   help="target seconds per timed block (default 0.15)")
    p.add_argument("--results-threshold", type=bounded(float, 0.0, low_open=True), default=0.25,
                   help="--results mode: normalised slow-down that fails (default 0.25)")
    p.add_argument("--reference-blocks", type=bounded(int, 1, 10_000), default=15, help=argparse.SUPPRESS)
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false", help="skip the calibration (information only)")
    p.add_argument("--seed", type=bounded(int, 0), default=None, help="seed of the A/B order (default: random)")
    p.add_argument("--timeout-s", type=bounded(float, 0.0, low_open=True), default=300.0, help=argparse.SUPPRESS)
    p.add_argument("--hang-s", type=bounded(float, 0.0, low_open=True), default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--last", default=None, help=argparse.SUPPRESS)


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args) -> int:
    with contextlib.suppress(ValueError):  # only the main thread may set it
        signal.signal(signal.SIGTERM, _terminate)
    t0 = time.monotonic()
    say = lambda m: print(f"[gate] {m}", flush=True)  # noqa: E731
    mode = ("update-baseline" if args.update_baseline else "results" if args.results
            else "self-test" if args.self_test else "ab")
    verdict = {"mode": mode, "alpha": args.alpha, "margin": args.margin}
    try:
        if 0.5 ** args.compile_samples > args.alpha:
            raise GateInputError(f"--compile-samples {args.compile_samples} can never reach --alpha {args.alpha}: "
                                 f"the smallest exact p-value is 2^-{args.compile_samples}; take more samples")
        impls = parse_impls(args.impls)
        gated = parse_workloads(args.workloads)
        strides, metrics = parse_list(args.strides, "--strides", int, (1, 2)), parse_list(args.metrics, "--metrics", str, ab.METRICS)
        mc = baseline.this_machine()
        path = baseline.path_for(args.baseline, args.baseline_dir, mc["machine_class"])
        pin = Path(args.pin) if args.pin else Path(args.baseline_dir) / baseline.PIN_NAME
        if args.update_baseline:
            return update_baseline(args, path, pin, ab.gate_cells(impls or registry.NAMES, strides, ("step",)), mc, say)
        if args.self_test:
            return self_test(args, impls, verdict, say, t0)
        reference, note = baseline.load_reference(path, mc["machine_class"], explicit=args.baseline is not None)
        verdict.update(machine_class=mc["machine_class"], reference_file=str(path) if reference else None,
                       reference_commit=reference["commit"] if reference else None, reference_note=note)
        if args.results:
            if reference is None:
                raise GateInputError(f"--results compares with this machine class's reference figures, and there "
                                     f"are none: {note}")
            records = baseline.compare_results(args.results, args.results_threshold, reference, impls or registry.NAMES)
        else:
            commit, how = baseline.choose_base(args.base, pin)
            verdict["base"] = {"commit": commit, "chosen_by": how}
            say(f"base {commit[:12]}: {how}")
            if note:
                say(note)
            if impls is None:
                impls = baseline.changed_impls(commit)
                verdict["changed_impls"] = impls
                say(f"--impls changed: {', '.join(impls) or 'no implementation'} (code differs from the base)")
                if not impls:
                    print("xfbench gate: no implementation's code, nor the harness code, differs from the base: "
                          "nothing to gate")
                    return finish(args, verdict, 0, "pass", "no code changed since the base", time.monotonic() - t0)
            records = ab.run_ab(args, commit, reference, ab.gate_cells(impls, strides, metrics, gated), say)
    except GateInputError as e:
        print(f"xfbench gate: {e}", file=sys.stderr)
        return finish(args, verdict, 2, "error", str(e), time.monotonic() - t0)
    except KeyboardInterrupt:
        finish(args, verdict, 130, "interrupted", "interrupted before a verdict", time.monotonic() - t0)
        raise
    return report(args, records, verdict, time.monotonic() - t0)


def parse_workloads(text: str) -> tuple[str, ...]:
    """--workloads: built-in workloads only (an installed package's is not gated)."""
    try:
        names = workloads.parse(text)
    except ValueError as e:
        raise GateInputError(f"--workloads: {e}") from None
    foreign = [n for n in names if n not in workloads.BUILT_IN]
    if foreign:
        raise GateInputError(f"--workloads: {', '.join(foreign)} come(s) from an installed package, and the gate "
                             f"measures built-in workloads only ({', '.join(workloads.BUILT_IN)})")
    return names


def parse_impls(text: str) -> list[str] | None:
    """The named implementations; None for 'changed' (decided once the base is known)."""
    if text.strip() == "changed":
        return None
    impls = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    for name in impls:
        try:
            registry.entry(name)
        except ValueError as e:
            raise GateInputError(f"--impls: {e}") from None
    if not impls:
        raise GateInputError("--impls: no implementation named")
    return impls


def parse_list(text: str, option: str, kind, allowed) -> tuple:
    try:
        values = tuple(dict.fromkeys(kind(s.strip()) for s in text.split(",") if s.strip()))
    except ValueError:
        values = ()
    if not values or any(v not in allowed for v in values):
        raise GateInputError(f"{option}: {text!r}; choose from {', '.join(map(str, allowed))}, comma-separated")
    return values


def self_test(args, impls, verdict: dict, say, t0: float) -> int:
    """Exit 0 with the table; 2 when no trial could run."""
    try:
        slowdowns = sorted({float(s) for s in args.slowdown.split(",") if s.strip()})
    except ValueError:
        slowdowns = []
    if not slowdowns or not all(0 < s <= 2 for s in slowdowns):
        raise GateInputError(f"--slowdown: {args.slowdown!r}; give fractions in (0, 2], e.g. 0.05,0.1,0.15")
    impl = (impls or [registry.REFERENCE])[0]
    summary = selftest.run(args, impl, slowdowns, say)
    verdict["self_test"] = summary
    for line in selftest.describe(summary):
        print(line, flush=True)
    if not summary["aa"]["pairs"]:
        return finish(args, verdict, 2, "error", "no self-test trial completed", time.monotonic() - t0)
    return finish(args, verdict, 0, "measured", None, time.monotonic() - t0)


def update_baseline(args, path: Path, pin: Path, step_cells, mc: dict, say) -> int:
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
    baseline.write_pin(pin, commit, args.why or f"set by {baseline.HOW_TO_CREATE} on {mc['machine_class']}")
    say(f"wrote {path} and pinned {commit[:12]} in {pin}; review them with `git diff {path.parent}` and commit them")
    return 0


def finish(args, verdict: dict, status: int, outcome: str, reason: str | None, elapsed: float) -> int:
    """Write the verdict (last.json, and --json) and return the exit status."""
    verdict.update(exit_status=status, verdict=outcome, reason=reason, finished=now_iso(), elapsed_s=round(elapsed, 1))
    verdict.setdefault("regressions", [])
    verdict.setdefault("cells", [])
    for path in (Path(args.last) if args.last else home() / "gate" / "last.json", args.json):
        if path:
            write_json(Path(path), verdict)
    return status


def report(args, records, verdict: dict, elapsed: float) -> int:
    """Print and write the verdict. Exit status: 1 a cell regressed or its head worker failed; 2 the gate
    cannot vouch (a base worker failed, or no cell was compared); else 0."""
    regressed = [r for r in records if r.get("regressed")]
    for r in records:
        if "normalised_vs_reference" in r:
            print(f"[gate] {r['key']}: calibration-normalised step vs the reference figures: "
                  f"{r['normalised_vs_reference']:.3f} (information)", flush=True)
    verdict.update(cells=records, regressions=[
        {k: r.get(k) for k in ("impl", "metric", "device", "batch_size", "image_size", "pool_stride", "ratio",
                               "confidence", "reason")}
        for r in regressed])
    base_failed = [r for r in records if r.get("status") == "failed" and not r.get("regressed")]
    compared = [r for r in records if r.get("status") == "ok"]
    skipped = [r for r in records if r.get("status") == "skipped"]
    if regressed:
        print_regressions(regressed, elapsed)
        for r in base_failed:
            print(f"  and the gate cannot vouch for {where(r)}: {r['reason'].splitlines()[0]}")
        why = "; ".join(f"{where(r)}: " + (f"ratio {r['ratio']:.3f}" if r.get("ratio") is not None
                                            else r.get("reason", "?").splitlines()[0]) for r in regressed)
        return finish(args, verdict, 1, "regressed", why, elapsed)
    if base_failed:
        print(f"xfbench gate: the gate cannot vouch: the baseline commit's worker failed in {len(base_failed)} "
              f"cell(s):", file=sys.stderr)
        for r in base_failed:
            print(f"  {where(r)}: {r['reason'].splitlines()[0]}", file=sys.stderr)
        print("Pass --base REV, or pin another baseline (`xfbench gate --update-baseline`).", file=sys.stderr)
        return finish(args, verdict, 2, "cannot vouch",
                      "; ".join(f"{where(r)}: {r['reason'].splitlines()[0]}" for r in base_failed), elapsed)
    if not compared:
        why = "no comparable cell: " + ("; ".join(f"{r['key']}: {r.get('reason') or r['status']}" for r in records)
                                        or "no cell selected")
        print(f"xfbench gate: the gate cannot vouch: {why}", file=sys.stderr)
        return finish(args, verdict, 2, "cannot vouch", why, elapsed)
    also = f"; {len(skipped)} skipped ({', '.join(r['key'] for r in skipped)})" if skipped else ""
    print(f"xfbench gate: no regression in {len(compared)} cell(s){also} ({elapsed:.0f} s)")
    return finish(args, verdict, 0, "pass", None, elapsed)


def where(r: dict) -> str:
    """e.g. "flax step time (cpu, 32px, pool stride 2, batch 32)"."""
    stride = f", pool stride {r['pool_stride']}" if r.get("pool_stride") is not None else ""
    return (f"{r['impl']} {r.get('metric', 'step')} time ({r['device']}, {r['image_size']}px{stride}, "
            f"batch {r['batch_size']})")


def print_regressions(regressed, elapsed: float) -> None:
    print(f"xfbench gate: REGRESSED in {len(regressed)} cell(s) ({elapsed:.0f} s):")
    for r in regressed:
        if r.get("status") == "failed":
            print(f"  {where(r)}: the working tree's worker failed ({r['reason'].splitlines()[0]})")
            continue
        conf = (f"{r['confidence'] * 100:.3f}% (p = {r['p']:.2g}, alpha {r['alpha']:.2g} per process pair, "
                f"{r['process_pairs']} pairs agreeing)" if r.get("process_pairs") else "n/a (single run)")
        ci = f" [{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}]" if r.get("ratio_ci95") else ""
        ratio = f"{r['ratio']:.3f}x{ci}" if r.get("ratio") is not None else "n/a"
        print(f"  {where(r)}: ratio {ratio}, confidence {conf}")
