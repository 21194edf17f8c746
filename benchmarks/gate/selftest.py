"""`xfbench gate --self-test`: how far this machine lets the gate be trusted.

Both sides of every process pair run the working tree. In each fresh pair the step cell is first
tested as is (A/A: any regression found is a false alarm), then the head worker is given each
requested slowdown in turn -- real extra compute inside every timed step, not a sleep (the worker's
`inject`) -- and tested again. Over `trials` pairs this gives, per slowdown, one pair's detection
rate p, and one pair's false-alarm rate q. The gate calls a cell regressed only when all of its
process pairs do, so on this machine a cell's power is p^n and its false-alarm rate q^n.
"""

from __future__ import annotations

import random
import time

from benchmarks.gate import ab, worktree
from benchmarks.gate.stats import wilson


def run(args, impl: str, slowdowns: list[float], say) -> dict:
    workers = ab.Workers(args.timeout_s)
    gc = ab.gate_cells([impl], strides=(1,), metrics=("step",))[0]
    fitted = workers.payload(gc.cell)
    rng = random.Random(args.seed)
    trials = []
    t0 = time.monotonic()
    for t in range(args.trials):
        sides = {name: ab.Side(name, worktree.ROOT) for name in ab.SIDES}
        try:
            workers.ready_pair(sides, gc.cell, {name: fitted for name in ab.SIDES})
            _, details = ab.pair_test("step", sides["base"], sides["head"], args, float("inf"), rng)
            trial = {"aa": details, "slowdowns": []}
            for s in slowdowns:
                k = max(1, round(args.block_s / sides["head"].step_est))
                injected = ab.call(sides["head"], "inject", fraction=s, steps=k)
                _, details = ab.pair_test("step", sides["base"], sides["head"], args, float("inf"), rng)
                trial["slowdowns"].append({"requested": s, "injected": injected["injected_fraction"], **details})
        except ab.SideFailed as e:
            trial = {"failed": f"{e.side}: {e.reason}"}
            say(f"trial {t + 1}: {trial['failed'].splitlines()[0]}")
        finally:
            ab.close_all(sides.values())
        trials.append(trial)
        if "failed" not in trial:
            found = ", ".join(f"+{x['requested']:.0%} {'caught' if x['regressed'] else 'missed'} "
                              f"(x{x['ratio']:.3f})" for x in trial["slowdowns"])
            say(f"trial {t + 1}/{args.trials} ({time.monotonic() - t0:.0f} s): A/A "
                f"{'FALSE ALARM' if trial['aa']['regressed'] else 'quiet'} (x{trial['aa']['ratio']:.3f}); {found}")
    return summarise(impl, gc.key, slowdowns, trials, args)


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
    caught = [x["requested"] for x in out["slowdowns"] if x["cell_power"] is not None and x["cell_power"] >= 0.95]
    out["smallest_caught_95"] = min(caught) if caught else None
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
    lines.append(f"  smallest slowdown tried that a cell catches >= 95% of the time: "
                 + (f"+{small:.0%}" if small is not None else "none of those tried"))
    return lines
