"""`xfbench gate --self-test`: how far this machine lets the gate be trusted.

As in the gate, the base side runs HEAD's tree from a worktree and the head side the working tree,
whose code must be HEAD's (so the base's other paths are part of what is measured). In each fresh
pair the step cell is first tested as is (A/A: any regression found is a false alarm), then the
head worker is given each requested slowdown in turn -- real extra compute in every timed block,
per step in it, not a sleep (the worker's `inject`) -- and tested again. Over `trials` pairs this
gives, per slowdown, one pair's detection rate p, and one pair's false-alarm rate q. The gate calls
a cell regressed only when all of its n process pairs do, so on this machine a cell's power is about
p^n and its false-alarm rate about q^n (pairs are independent in what each process brings; an
offset shared by every pair, such as the base tree's own paths, is in q but not divided by n).
"""

from __future__ import annotations

import random
import time

from benchmarks.gate import GateInputError, ab, baseline, worktree
from benchmarks.gate.stats import wilson


def run(args, impl: str, slowdowns: list[float], say) -> dict:
    """Trials of the implementation's stride-1 step cell, HEAD's tree (in a worktree, as the gate's
    base) against the working tree, whose code for that implementation must be HEAD's."""
    head = worktree.resolve_commit("HEAD")
    if impl in baseline.changed_impls(head):
        raise GateInputError(f"--self-test compares HEAD with the working tree, and {impl}'s code, or the harness "
                             f"code its workers run, differs from HEAD: commit or stash first")
    workers = ab.Workers(args.timeout_s)
    gc = ab.gate_cells([impl], strides=(1,), metrics=("step",))[0]
    fitted = workers.payload(gc.cell)
    rng = random.Random(args.seed)
    trials = []
    t0 = time.monotonic()
    with worktree.worktree(head) as base_root:
        roots = {"base": base_root, "head": worktree.ROOT}
        for t in range(args.trials):
            trials.append(trial(args, workers, roots, gc, fitted, slowdowns, rng, say, t))
            if "failed" not in trials[-1]:
                found = ", ".join(f"+{x['requested']:.0%} {'caught' if x['regressed'] else 'missed'} "
                                  f"(x{x['ratio']:.3f})" for x in trials[-1]["slowdowns"])
                say(f"trial {t + 1}/{args.trials} ({time.monotonic() - t0:.0f} s): A/A "
                    f"{'FALSE ALARM' if trials[-1]['aa']['regressed'] else 'quiet'} (x{trials[-1]['aa']['ratio']:.3f}); "
                    f"{found}")
    return summarise(impl, gc.key, slowdowns, trials, args)


def trial(args, workers, roots, gc, fitted, slowdowns, rng, say, t: int) -> dict:
    """One fresh process pair: A/A, then each slowdown injected into the head worker."""
    sides = {name: ab.Side(name, roots[name]) for name in ab.SIDES}
    try:
        workers.ready_pair(sides, gc.cell, {name: fitted for name in ab.SIDES})
        _, details = ab.pair_test("step", sides["base"], sides["head"], args, float("inf"), rng)
        out = {"aa": details, "slowdowns": []}
        for s in slowdowns:
            sides["head"].worker.timeout_s = args.timeout_s  # calibrating takes longer than a timed call
            got = ab.call(sides["head"], "inject", fraction=s, steps=ab.steps_per_block(sides.values(), args.block_s))
            if not isinstance(got, dict) or not isinstance(got.get("injected_fraction"), (int, float)):
                raise ab.SideFailed("head", f"nonsense from inject: {got!r}")
            _, details = ab.pair_test("step", sides["base"], sides["head"], args, float("inf"), rng)
            out["slowdowns"].append({"requested": s, "injected": got["injected_fraction"], **details})
        return out
    except ab.SideFailed as e:
        say(f"trial {t + 1}: {e.side}: {e.reason.splitlines()[0]}")
        return {"failed": f"{e.side}: {e.reason}"}
    finally:
        ab.close_all(sides.values())


def summarise(impl: str, key: str, slowdowns: list[float], trials: list[dict], args) -> dict:
    ok = [t for t in trials if "failed" not in t]
    n, P = len(ok), args.process_pairs
    alarms = sum(t["aa"]["regressed"] for t in ok)
    lo, hi = wilson(alarms, n)
    out = {
        "impl": impl, "cell": key, "trials": len(trials), "failed_trials": len(trials) - n, "process_pairs": P,
        "alpha_per_pair": args.alpha, "margin": args.margin,
        "aa": {"false_alarms": alarms, "pairs": n, "rate": alarms / n if n else None, "rate_ci95": [lo, hi],
               "cell_rate": (alarms / n) ** P if n else None, "cell_rate_upper95": hi ** P},
        "slowdowns": [],
    }
    for i, s in enumerate(slowdowns):
        hits = sum(t["slowdowns"][i]["regressed"] for t in ok)
        lo, hi = wilson(hits, n)
        injected = sorted(t["slowdowns"][i]["injected"] for t in ok)
        ratios = sorted(t["slowdowns"][i]["ratio"] for t in ok)
        out["slowdowns"].append({
            "requested": s, "injected_median": injected[len(injected) // 2] if n else None,
            "measured_ratio_median": ratios[len(ratios) // 2] if n else None,
            "caught": hits, "pairs": n, "rate": hits / n if n else None, "rate_ci95": [lo, hi],
            "cell_power": (hits / n) ** P if n else None, "cell_power_lower95": lo ** P,
        })
    caught = [x for x in out["slowdowns"] if x["cell_power"] is not None and x["cell_power"] >= 0.95]
    out["smallest_caught_95"] = caught[0]["requested"] if caught else None
    out["smallest_caught_95_measured"] = caught[0]["measured_ratio_median"] if caught else None
    out["trials_detail"] = trials
    return out


def describe(summary: dict) -> list[str]:
    """The self-test's table, as printed."""
    P, aa = summary["process_pairs"], summary["aa"]
    lines = [f"self-test of {summary['cell']}: {aa['pairs']} fresh process pair(s)"
             + (f" ({summary['failed_trials']} failed)" if summary["failed_trials"] else "")
             + f"; the gate needs all {P} pairs of a cell to agree"]
    if not aa["pairs"]:
        return lines + ["no trial completed: nothing to report"]
    lines.append(f"  A/A: {aa['false_alarms']}/{aa['pairs']} pairs false-alarmed (95% {aa['rate_ci95'][0]:.2f}-"
                 f"{aa['rate_ci95'][1]:.2f}); a cell's false-alarm rate ~ {aa['cell_rate']:.2g} "
                 f"(at most {aa['cell_rate_upper95']:.2g})")
    for x in summary["slowdowns"]:
        lines.append(f"  +{x['requested']:.0%} (injected {x['injected_median']:+.1%}, measured x{x['measured_ratio_median']:.3f}): "
                     f"caught by {x['caught']}/{x['pairs']} pairs (95% {x['rate_ci95'][0]:.2f}-{x['rate_ci95'][1]:.2f}); "
                     f"a cell's power ~ {x['cell_power']:.2f} (at least {x['cell_power_lower95']:.2f})")
    small = summary["smallest_caught_95"]
    lines.append("  smallest slowdown tried that a cell catches >= 95% of the time: "
                 + (f"+{small:.0%} (measured x{summary['smallest_caught_95_measured']:.3f})" if small is not None
                    else "none of those tried"))
    return lines
