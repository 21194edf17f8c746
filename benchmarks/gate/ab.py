"""The A/B runner: per cell, a baseline and a head worker, timed in interleaved blocks of steps.

A worker that fails -- at start, or crashing, hanging or answering nonsense while timed -- fails its
side of that cell only: the cell is recorded as failed, naming the side, and the other cells go on.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import registry
from benchmarks.gate import GateInputError, baseline, worktree
from benchmarks.gate.stats import SequentialTest
from benchmarks.harness import DataChoice, home, payload
from benchmarks.profiles import Cell
from benchmarks.worker_client import CellSkipped, Protocol, Worker, WorkerError
from shared_data import DataError


@dataclass
class Side:
    """One worker (base or head) of a cell: what it gets, and once started, its warm-up estimate and timings."""

    name: str
    root: Path
    payload: dict | None = None
    error: str | None = None
    worker: Worker | None = None
    step_est: float = math.nan
    times: list[float] = field(default_factory=list)


class SideFailed(Exception):
    """A worker call failed: `side` ("base" or "head") says whose, `reason` why."""

    def __init__(self, side: str, reason: str):
        super().__init__(f"{side}: {reason}")
        self.side, self.reason = side, reason


def call(side: Side, op: str, **args):
    """One call to the side's worker; any failure of it (died, hung, error, skip) is that side's."""
    try:
        return side.worker.call(op, **args)
    except Exception as e:  # whatever the worker did, it failed this side, not the gate
        raise SideFailed(side.name, str(e) if isinstance(e, WorkerError) else f"{type(e).__name__}: {e}") from e


class Workers:
    """What every worker of one gate run shares: data, logs, timeout."""

    def __init__(self, timeout_s: float):
        # step time does not depend on pixel values: the synthetic stand-in needs no image folder
        self.data = DataChoice(source="synthetic", data_dir=None, cache_dir=str(home() / "cache" / "data"))
        self.logs = home() / "gate" / "logs"
        self.timeout_s = timeout_s

    def payload(self, cell: Cell) -> dict:
        try:
            self.data.prepare(cell.spec.image_size, cell.protocol, log=lambda m: None)
        except DataError as e:
            raise GateInputError(f"cannot prepare the synthetic step data: {e}") from None
        return payload(cell, self.data.kwargs(cell.spec.image_size, cell.protocol))

    def speaks(self, roots: dict[str, Path]) -> dict[str, Protocol | str]:
        """Per tree, what its worker understands, or why it could not say; one short-lived worker each."""

        def ask(name: str) -> Protocol | str:
            try:
                with Worker(self.logs / f"hello-{name}.log", None, self.timeout_s, root=roots[name]) as w:
                    return w.speaks()
            except WorkerError as e:
                return f"cannot say what it speaks: {e}"

        with ThreadPoolExecutor(max_workers=len(roots)) as ex:
            return dict(zip(roots, ex.map(ask, roots), strict=True))

    def start(self, cell: Cell, side: Side) -> Side:
        """Start, set up and warm up the side's worker; a failure becomes side.error."""
        if side.error:
            return side
        try:
            side.worker = Worker(self.logs / f"{baseline.key(cell)}-{side.name}.log",
                                 registry.entry(cell.impl).keras_backend, self.timeout_s, root=side.root)
            call(side, "setup", cell=side.payload)
            call(side, "first_step")
            warm = call(side, "warmup", n=3)
            side.step_est = float(np.median(warm[1:]))
        except SideFailed as e:
            side.error = e.reason
        except Exception as e:  # noqa: BLE001 -- e.g. the worker process could not be started
            side.error = f"{type(e).__name__}: {e}"
        return side

    def start_all(self, pairs: list[tuple[Cell, tuple[Side, ...]]]) -> None:
        """Set up every worker at once (nothing is timed yet): imports and compiles overlap."""
        jobs = [(c, s) for c, sides in pairs for s in sides]
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as ex:
            list(ex.map(lambda job: self.start(*job), jobs))


def fit_sides(cell: Cell, full: dict, speaks: dict[str, Protocol | str], roots: dict[str, Path],
              commit: str) -> tuple[Side, Side]:
    """The cell's (base, head) sides, each with the payload its tree understands or why it cannot run it.

    Raises CellSkipped when the baseline tree lacks the implementation or a field this cell sets:
    nothing to compare with, which is no regression. The head lacking either is a head failure.
    """
    out = []
    for name in ("base", "head"):
        said, side = speaks[name], Side(name, roots[name])
        who = f"baseline commit {commit[:7]}" if name == "base" else "the working tree"
        try:
            if isinstance(said, str):
                side.error = said
            elif cell.impl not in said.impls:
                side.error = f"{who} lacks {cell.impl}"
            else:
                side.payload = said.fit(full)
        except CellSkipped as e:
            side.error = f"{who}: {e}"
        if name == "base" and isinstance(said, Protocol) and side.error:
            raise CellSkipped(side.error)
        out.append(side)
    return tuple(out)


def raise_priority(side: Side, niceness: int) -> bool:
    """Best effort: every thread of the worker at `niceness`, so other jobs on a shared machine interfere less.

    Both workers of a cell get the same, and only while that cell is timed; without the
    permission (not root, no CAP_SYS_NICE) it changes nothing and says so in the verdict.
    """
    try:
        for tid in os.listdir(f"/proc/{side.worker.proc.pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
        return True
    except (OSError, ValueError, AttributeError):
        return False


def get_ready(sides: tuple[Side, ...], args) -> tuple[int, bool]:
    """Right before timing: a short warm-up each (other cells ran in between), priority raised, and
    from now on a call that takes longer than --hang-s is a hang (set-up and compiling had longer).
    Returns the steps per timed block and whether every side got the raised priority."""
    for s in sides:
        s.worker.timeout_s = min(s.worker.timeout_s, getattr(args, "hang_s", s.worker.timeout_s))
        call(s, "warmup", n=2)
    reniced = args.nice is not None and all([raise_priority(s, args.nice) for s in sides])  # a list: try every side
    step = min(s.step_est for s in sides)
    k = max(1, round(args.block_s / step)) if math.isfinite(step) and step > 0 else 1
    return k, reniced


def timed_block(side: Side, k: int) -> float:
    t0 = time.perf_counter()
    loss = call(side, "steps", n=k)
    dt = (time.perf_counter() - t0) / k
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        raise SideFailed(side.name, f"non-finite loss {loss!r} while timed")
    return dt


def ab_cell(cell: Cell, base: Side, head: Side, args, alpha_cell: float, deadline: float, say) -> dict:
    """Interleave timed blocks of the two workers until the decision is clear or time is up."""
    k, reniced = get_ready((base, head), args)
    test = SequentialTest(alpha_cell, args.margin, args.pairs)
    rng = random.Random(args.seed)
    stop = None
    while stop is None:
        order = (base, head) if rng.random() < 0.5 else (head, base)
        t = {s.name: timed_block(s, k) for s in order}
        base.times.append(t["base"])
        head.times.append(t["head"])
        stop = test.add(math.log(t["head"] / t["base"]))
        if stop is None and len(test.r) in test.looks and time.monotonic() > deadline:
            stop = test.stop("time budget")
    dec = test.decision()
    say(f"{baseline.key(cell)}: {dec.n} pairs x {k} step(s), ratio {dec.ratio:.3f} "
        f"[{dec.ci[0]:.3f}, {dec.ci[1]:.3f}], p {dec.p:.2g} (alpha at this look {dec.alpha:.2g}) -- {stop}")
    return {
        "pairs": dec.n,
        "steps_per_block": k,
        "ratio": dec.ratio,
        "ratio_ci95": list(dec.ci),
        "p": dec.p,
        "confidence": dec.confidence,
        "alpha": dec.alpha,
        "regressed": dec.regressed,
        "stopped": stop,
        "priority_raised": reniced,
        "base_step_s": float(np.median(base.times)),
        "head_step_s": float(np.median(head.times)),
        "log_ratios": [round(x, 5) for x in test.r],
    }


def calibrate(side: Side, cell: Cell) -> float | None:
    """The head worker's float32 matmul rate (1024 x 1024, best of 5, as the reference figures were)."""
    try:
        rate = call(side, "matmul_rate", backend=registry.entry(cell.impl).backend, device=cell.device,
                    n=1024, repeats=5)
        return float(rate["flops"])
    except (SideFailed, KeyError, TypeError, ValueError):
        return None


def close_all(sides) -> None:
    for s in sides:
        if s.worker is not None:
            with contextlib.suppress(Exception):
                s.worker.close()


def run_ab(args, commit: str, reference: dict | None, cells: list[Cell], say) -> list[dict]:
    """One record per cell: skipped (the baseline lacks it), failed (a worker failed) or the A/B verdict.
    `reference`: this machine class's reference figures (information only), or None."""
    t_start = time.monotonic()
    workers = Workers(args.timeout_s)
    records = {}
    with worktree.worktree(commit) as base_root:
        say(f"baseline {commit[:12]} (worktree {base_root}) vs working tree {worktree.ROOT}; {len(cells)} cell(s)")
        roots = {"base": base_root, "head": worktree.ROOT}
        speaks = workers.speaks(roots)
        pairs = []
        for c in cells:
            try:
                pairs.append((c, fit_sides(c, workers.payload(c), speaks, roots, commit)))
            except CellSkipped as e:
                say(f"{baseline.key(c)}: skipped -- {e}")
                records[c] = {**baseline.describe(c), "key": baseline.key(c), "status": "skipped", "regressed": False,
                              "reason": str(e)}
        records.update(measure_pairs(args, (reference or {}).get("cells", {}), workers, pairs, t_start, say))
    return [records[c] for c in cells]


def measure_pairs(args, refs: dict, workers: Workers, pairs, t_start: float, say) -> dict[Cell, dict]:
    alpha_cell = args.alpha / max(1, len(pairs))  # Bonferroni over the cells measured
    out = {}
    try:
        workers.start_all(pairs)
        say(f"workers ready in {time.monotonic() - t_start:.0f} s")
        for i, (c, (base, head)) in enumerate(pairs):
            left = args.budget_s - (time.monotonic() - t_start)
            deadline = time.monotonic() + max(10.0, left / (len(pairs) - i) - 8)
            out[c] = measure_cell(c, base, head, args, refs, alpha_cell, deadline, say)
            close_all((base, head))
    finally:
        close_all(s for _, pair in pairs for s in pair)
    return out


def failed(rec: dict, side: str, reason: str, say) -> dict:
    """A cell whose `side` failed: the head's failure is the head's regression; the base's leaves the
    gate unable to vouch for the cell (exit 2)."""
    rec.update(status="failed", side=side, regressed=side == "head", reason=f"{side}: {reason}")
    say(f"{rec['key']}: {side} worker failed -- {reason.splitlines()[0] if reason else '?'}")
    return rec


def measure_cell(c: Cell, base: Side, head: Side, args, refs: dict, alpha: float, deadline: float, say) -> dict:
    rec = {**baseline.describe(c), "key": baseline.key(c)}
    if base.error:  # both failing is more likely the machine than the head: the base's failure wins
        return failed(rec, "base", base.error, say)
    if head.error:
        return failed(rec, "head", head.error, say)
    try:
        rec.update(status="ok", **ab_cell(c, base, head, args, alpha, deadline, say))
    except SideFailed as e:
        rec.update(pairs_before_failure=len(head.times))
        return failed(rec, e.side, f"while timed: {e.reason}", say)
    if args.calibrate:
        rec["head_peak_flops"] = calibrate(head, c)
        ratio = baseline.normalised_ratio(refs.get(rec["key"]), rec["head_step_s"], rec["head_peak_flops"])
        if ratio is not None:
            rec["normalised_vs_reference"] = ratio
    return rec


def measure_reference(args, cells: list[Cell], say) -> dict[str, dict]:
    """The working tree's reference figures per cell (for --update-baseline): median step and calibration."""
    workers = Workers(args.timeout_s)
    pairs = [(c, (Side("head", worktree.ROOT, workers.payload(c)),)) for c in cells]
    figures = {}
    try:
        workers.start_all(pairs)
        for c, (s,) in pairs:
            if s.error:
                raise GateInputError(f"{baseline.key(c)}: cannot measure: {s.error}")
            try:
                k, _ = get_ready((s,), args)
                times = [timed_block(s, k) for _ in range(args.reference_blocks)]
            except SideFailed as e:
                raise GateInputError(f"{baseline.key(c)}: cannot measure: {e.reason}") from None
            peak = calibrate(s, c)
            step = float(np.median(times))
            figures[baseline.key(c)] = {
                **baseline.describe(c), "step_s": round(step, 6),
                "step_s_q1": round(float(np.percentile(times, 25)), 6),
                "step_s_q3": round(float(np.percentile(times, 75)), 6),
                "peak_flops": round(peak, -6) if peak else None,
                "normalised_step": round(step * peak, -3) if peak else None,
            }
            say(f"{baseline.key(c)}: step {step * 1e3:.1f} ms, calibration {peak / 1e9 if peak else float('nan'):.1f} GFLOP/s")
    finally:
        close_all(s for _, pair in pairs for s in pair)
    return figures
