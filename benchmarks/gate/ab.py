"""The A/B runner: per implementation, fresh pairs of a baseline and a head worker, each pair timing
every cell still open (compile time, then step time at each pool stride) in interleaved samples.

A worker that fails -- at start, or crashing, hanging or answering nonsense while timed -- fails its
side of that implementation's open cells only: they are recorded as failed, naming the side, and the
other implementations go on.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import registry
from benchmarks.gate import GateInputError, baseline, worktree
from benchmarks.gate.stats import Decision, ProcessPairs, SequentialTest
from benchmarks.inputs import DataChoice, home, payload
from benchmarks.profiles import Cell, profile
from benchmarks import workloads
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.worker_client import CellSkipped, Protocol, Worker, WorkerError
from shared_data import DataError

METRICS = ("step", "compile")
COMPILE_PROTOCOL = 3  # the first worker protocol with `recompile` (and `inject`)
SIDES = ("base", "head")


@dataclass(frozen=True)
class GateCell:
    """One gated figure: an implementation's step time at one spec, or its compile time."""

    cell: Cell
    metric: str  # "step" or "compile"

    @property
    def key(self) -> str:
        """e.g. "flax-cpu-s32-p1-b32" (step time, the name the reference figures use) or "...-compile"."""
        return baseline.key(self.cell) + ("-compile" if self.metric == "compile" else "")

    def describe(self) -> dict:
        return {**baseline.describe(self.cell), "metric": self.metric, "key": self.key}


def gate_cells(impls, strides=(1, 2), metrics=METRICS, workload_names=(workloads.ORIGIN,)) -> list[GateCell]:
    """Per workload and implementation, at the quick profile's size and batch (32 px, 32, cpu): compile
    time of the first spec's step, then step time at each spec (the origin's: one per pool stride)."""
    quick = profile("quick")
    out = []
    for name in workload_names:
        w = workloads.get(name)
        for impl in (i for i in impls if i in w.impls):
            for i, spec in enumerate(w.step_specs(quick.image_sizes[:1], strides)):
                cell = Cell("step", impl, "cpu", spec, TrainConfig(batch_size=quick.batch_sizes[0]), workload=name)
                if i == 0 and "compile" in metrics:
                    out.append(GateCell(cell, "compile"))
                if "step" in metrics:
                    out.append(GateCell(cell, "step"))
    return out


@dataclass
class Side:
    """One worker (base or head) of a process pair: its tree, the spec it is set up for and its warm-up
    estimate of a step."""

    name: str
    root: Path
    worker: Worker | None = None
    spec: ModelSpec | None = None
    step_est: float = math.nan


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
        self.started = 0
        self.rates: dict[str, dict | None] = {}  # device -> the worker's matmul_rate answer

    def payload(self, cell: Cell) -> dict:
        try:
            self.data.prepare(cell.spec.image_size, cell.protocol, log=lambda m: None)
        except DataError as e:
            raise GateInputError(f"cannot prepare the synthetic step data: {e}") from None
        return payload(cell, self.data.kwargs(cell.spec.image_size, cell.protocol))

    def calibration(self, device: str) -> float | None:
        """The device's measured matmul rate, by the very method of the pytest runs (the working tree's
        worker op, in a process of its own); once per gate run; None where it cannot be measured."""
        if device not in self.rates:
            try:
                with Worker(self.logs / f"matmul-rate-{device}.log", None, self.timeout_s) as w:
                    self.rates[device] = w.call("matmul_rate", device=device)
            except WorkerError:
                self.rates[device] = None
        return (self.rates[device] or {}).get("flops")

    def calibration_method(self, device: str) -> str | None:
        return (self.rates.get(device) or {}).get("method")

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

    def start(self, side: Side, impl: str) -> None:
        self.started += 1
        try:
            side.worker = Worker(self.logs / f"{impl}-{self.started}-{side.name}.log",
                                 registry.entry(impl).keras_backend, self.timeout_s, root=side.root)
        except OSError as e:  # the process could not be started
            raise SideFailed(side.name, f"cannot start the worker: {e}") from None

    def ready(self, side: Side, cell: Cell, fitted: dict) -> None:
        """The side's worker set up for the cell's spec (started, or moved from another spec) and warmed up."""
        if side.worker is None:
            self.start(side, cell.impl)
        side.worker.timeout_s = self.timeout_s  # set-up and compiling get longer than a timed call
        if side.spec != cell.spec:
            call(side, "setup", cell=fitted)
            call(side, "first_step")
            side.spec = cell.spec
        warm = call(side, "warmup", n=3)
        side.step_est = float(np.median(warm[1:]))

    def ready_pair(self, sides: dict[str, Side], cell: Cell, fitted: dict[str, dict]) -> None:
        """Both sides at once (nothing is timed yet: imports and compiles overlap); the base's failure wins."""
        with ThreadPoolExecutor(max_workers=len(sides)) as ex:
            jobs = {name: ex.submit(self.ready, s, cell, fitted[name]) for name, s in sides.items()}
        for name in sides:
            e = jobs[name].exception()
            if e is not None:
                raise e if isinstance(e, SideFailed) else SideFailed(name, f"{type(e).__name__}: {e}")


def fit_cell(gc: GateCell, full: dict, speaks: dict[str, Protocol | str], commit: str) -> dict[str, dict | str]:
    """Per side, the payload its tree understands, or why it cannot run the cell (a string).

    Raises CellSkipped when the baseline tree lacks the implementation, a field this cell sets, or
    (compile cells) the `recompile` op: nothing to compare with, which is no regression. The head
    lacking any of them is a head failure.
    """
    out = {}
    for name in SIDES:
        said = speaks[name]
        who = f"baseline commit {commit[:7]}" if name == "base" else "the working tree"
        try:
            if isinstance(said, str):
                out[name] = said
            elif gc.cell.impl not in said.impls:
                out[name] = f"{who} lacks {gc.cell.impl}"
            elif gc.metric == "compile" and said.version < COMPILE_PROTOCOL:
                out[name] = (f"{who} speaks worker protocol {said.version}, which cannot sample compile time "
                             f"(protocol {COMPILE_PROTOCOL} can)")
            else:
                out[name] = said.fit(full)
        except CellSkipped as e:
            out[name] = f"{who}: {e}"
        if name == "base" and isinstance(said, Protocol) and isinstance(out[name], str):
            raise CellSkipped(out[name])
    return out


def raise_priority(side: Side, niceness: int) -> bool:
    """Best effort: every thread of the worker at `niceness`, so other jobs on a shared machine interfere less.

    Both workers of a pair get the same, from their first timed sample to their end; without the
    permission (not root, no CAP_SYS_NICE) it changes nothing and says so in the verdict.
    """
    try:
        for tid in os.listdir(f"/proc/{side.worker.proc.pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
        return True
    except (OSError, ValueError, AttributeError):
        return False


def get_ready(sides, args) -> tuple[int, bool]:
    """Right before timing: from now on a call that takes longer than --hang-s is a hang (set-up and
    compiling had longer), priority raised. Returns the steps per timed block and whether every side
    got the raised priority."""
    for s in sides:
        s.worker.timeout_s = min(s.worker.timeout_s, getattr(args, "hang_s", s.worker.timeout_s))
    reniced = args.nice is not None and all([raise_priority(s, args.nice) for s in sides])  # a list: try every side
    return steps_per_block(sides, args.block_s), reniced


def steps_per_block(sides, block_s: float) -> int:
    """Steps in a timed block of about `block_s` seconds, from the faster side's warm-up estimate."""
    step = min(s.step_est for s in sides)
    return max(1, round(block_s / step)) if math.isfinite(step) and step > 0 else 1


def timed_block(side: Side, k: int) -> float:
    t0 = time.perf_counter()
    loss = call(side, "steps", n=k)
    dt = (time.perf_counter() - t0) / k
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        raise SideFailed(side.name, f"non-finite loss {loss!r} while timed")
    return dt


def compile_sample(side: Side) -> float:
    got = call(side, "recompile", n=1)
    try:
        seconds, compiles = float(got["compile_s"][0]), got["compiles"]
    except (KeyError, IndexError, TypeError, ValueError):
        raise SideFailed(side.name, f"nonsense from recompile: {got!r}") from None
    if not (seconds > 0 and compiles):
        raise SideFailed(side.name, f"recompile did not compile again ({compiles} compiles, {seconds:.3g} s)")
    return seconds


def pair_test(metric: str, base: Side, head: Side, args, deadline: float, rng: random.Random) -> tuple[Decision, dict]:
    """One process pair's sequential test of one cell: samples alternate between the two workers --
    never both at once -- in pairs whose order is drawn at random; r = log(head / base)."""
    k, reniced = get_ready((base, head), args)
    if metric == "compile":
        test = SequentialTest(args.alpha, args.compile_margin, args.compile_samples)
        sample = compile_sample
    else:
        test = SequentialTest(args.alpha, args.margin, args.samples)
        sample = lambda s: timed_block(s, k)  # noqa: E731
    times = {"base": [], "head": []}
    stop = None
    while stop is None:
        order = (base, head) if rng.random() < 0.5 else (head, base)
        t = {s.name: sample(s) for s in order}
        for name in SIDES:
            times[name].append(t[name])
        stop = test.add(math.log(t["head"] / t["base"]))
        if stop is None and len(test.r) in test.looks and time.monotonic() > deadline:
            stop = test.stop("time budget")
    dec = test.decision()
    return dec, {
        "samples": dec.n, "steps_per_block": k if metric == "step" else None, "ratio": dec.ratio,
        "ratio_ci95": list(dec.ci), "p": dec.p, "alpha": dec.alpha, "regressed": dec.regressed, "stopped": stop,
        "priority_raised": reniced, "base_s": float(np.median(times["base"])),
        "head_s": float(np.median(times["head"])), "log_ratios": [round(x, 5) for x in test.r],
    }


def close_all(sides) -> None:
    for s in sides:
        if s.worker is not None:
            with contextlib.suppress(Exception):
                s.worker.close()


def run_ab(args, commit: str, reference: dict | None, gcells: list[GateCell], say) -> list[dict]:
    """One record per cell: skipped (the baseline lacks it), failed (a worker failed) or the A/B verdict.
    `reference`: this machine class's reference figures (information only), or None."""
    t_start = time.monotonic()
    workers = Workers(args.timeout_s)
    records = {}
    with worktree.worktree(commit) as base_root:
        say(f"baseline {commit[:12]} (worktree {base_root}) vs working tree {worktree.ROOT}; {len(gcells)} cell(s), "
            f"up to {args.process_pairs} fresh process pair(s) each")
        roots = {"base": base_root, "head": worktree.ROOT}
        speaks = workers.speaks(roots)
        plan = {}
        for gc in gcells:
            try:
                plan[gc] = fit_cell(gc, workers.payload(gc.cell), speaks, commit)
            except CellSkipped as e:
                say(f"{gc.key}: skipped -- {e}")
                records[gc] = {**gc.describe(), "status": "skipped", "regressed": False, "reason": str(e)}
        measured = Measurement(args, workers, roots, (reference or {}).get("cells", {}), t_start, say)
        records.update(measured.run(plan))
    return [records[gc] for gc in gcells]


class Measurement:
    """The gate's cells, implementation by implementation, over fresh process pairs."""

    def __init__(self, args, workers: Workers, roots: dict[str, Path], refs: dict, t_start: float, say):
        self.args, self.workers, self.roots, self.refs, self.say = args, workers, roots, refs, say
        self.t_start = t_start
        self.rng = random.Random(args.seed)

    def deadline(self, tests_left: int) -> float:
        """When the test about to start should stop at its next look: an even share of the budget left
        (at least 10 s), `tests_left` counting it and the tests expected after it."""
        left = self.args.budget_s - (time.monotonic() - self.t_start)
        return time.monotonic() + max(10.0, left / max(1, tests_left) - 4)

    def run(self, plan: dict[GateCell, dict]) -> dict[GateCell, dict]:
        by_impl: dict[str, list[GateCell]] = {}
        for gc in plan:
            by_impl.setdefault(gc.cell.impl, []).append(gc)
        out = {}
        impls = list(by_impl)
        for i, impl in enumerate(impls):
            out.update(self.implementation(by_impl[impl], plan, sum(len(by_impl[k]) for k in impls[i + 1:])))
        return out

    def implementation(self, gcs: list[GateCell], plan: dict, left_after: int) -> dict[GateCell, dict]:
        """Every cell of one implementation: pair after pair while some cell is undecided."""
        rules = {gc: ProcessPairs(self.args.process_pairs) for gc in gcs}
        recs = {gc: {**gc.describe(), "pairs": []} for gc in gcs}
        done: dict[GateCell, str] = {}
        for gc in gcs:
            broken = [s for s in SIDES if isinstance(plan[gc][s], str)]
            if broken:
                done[gc] = self.failed(recs[gc], broken[0], plan[gc][broken[0]])
        for j in range(self.args.process_pairs):
            open_ = [gc for gc in gcs if gc not in done]
            if not open_:
                break
            sides = {name: Side(name, self.roots[name]) for name in SIDES}
            try:
                for n, gc in enumerate(open_):
                    stage = "while starting"
                    self.workers.ready_pair(sides, gc.cell, plan[gc])
                    stage = "while measured"
                    # this test and the rest of this pair's; from pair 2 on, every open cell has shown a
                    # regression so far and needs the pairs after this one too; then the later implementations
                    confirm = len(open_) * (self.args.process_pairs - j - 1) if j else 0
                    expected = len(open_) - n + confirm + left_after
                    dec, details = pair_test(gc.metric, sides["base"], sides["head"], self.args,
                                             self.deadline(expected), self.rng)
                    recs[gc]["pairs"].append(details)
                    if j == 0 and gc.metric == "step" and self.args.calibrate:
                        recs[gc]["head_peak_flops"] = self.workers.calibration(gc.cell.device)
                    self.say(f"{gc.key}: process pair {j + 1}: {details['samples']} samples, ratio {dec.ratio:.3f} "
                             f"[{dec.ci[0]:.3f}, {dec.ci[1]:.3f}], p {dec.p:.2g} (alpha {dec.alpha:.2g}) -- "
                             f"{'shows a regression' if dec.regressed else 'no regression'} ({details['stopped']})")
                    verdict = rules[gc].add(dec)
                    if verdict:
                        done[gc] = self.decided(recs[gc], rules[gc], verdict)
            except SideFailed as e:
                for gc in open_:
                    if gc not in done:
                        done[gc] = self.failed(recs[gc], e.side, f"{stage}: {e.reason}")
            finally:
                close_all(sides.values())
        return recs

    def decided(self, rec: dict, rule: ProcessPairs, verdict: str) -> str:
        ratio, ci = rule.ratio()
        last = rec["pairs"][-1]
        rec.update(status="ok", regressed=rule.regressed, ratio=ratio, ratio_ci95=list(ci), p=rule.p,
                   confidence=1 - rule.p, alpha=max(d.alpha for d in rule.decisions),
                   process_pairs=len(rule.decisions),
                   base_s=last["base_s"], head_s=last["head_s"],
                   stopped=(f"all {rule.n} process pairs showed a regression" if rule.regressed
                            else f"process pair {len(rule.decisions)} showed no regression"))
        if rec["metric"] == "step":
            ratio_ref = baseline.normalised_ratio(self.refs.get(rec["key"]), rec["head_s"], rec.get("head_peak_flops"),
                                                  self.workers.calibration_method(rec["device"]))
            if ratio_ref is not None:
                rec["normalised_vs_reference"] = ratio_ref
        self.say(f"{rec['key']}: {'REGRESSED' if rule.regressed else 'pass'} -- {rec['stopped']}; ratio {ratio:.3f} "
                 f"[{ci[0]:.3f}, {ci[1]:.3f}]")
        return verdict

    def failed(self, rec: dict, side: str, reason: str) -> str:
        """A cell whose `side` failed: the head's failure is the head's regression; the base's leaves the
        gate unable to vouch for the cell (exit 2)."""
        rec.update(status="failed", side=side, regressed=side == "head", reason=f"{side}: {reason}")
        self.say(f"{rec['key']}: {side} worker failed -- {reason.splitlines()[0] if reason else '?'}")
        return "failed"


def measure_reference(args, gcells: list[GateCell], say) -> dict[str, dict]:
    """The working tree's reference figures per step cell (for --update-baseline): median step and calibration."""
    workers = Workers(args.timeout_s)
    figures = {}
    for gc in gcells:
        if gc.metric != "step":
            continue
        side = Side("head", worktree.ROOT)
        try:
            workers.ready(side, gc.cell, workers.payload(gc.cell))
            k, _ = get_ready((side,), args)
            times = [timed_block(side, k) for _ in range(args.reference_blocks)]
            peak = workers.calibration(gc.cell.device)
        except SideFailed as e:
            raise GateInputError(f"{gc.key}: cannot measure: {e.reason}") from None
        finally:
            close_all((side,))
        step = float(np.median(times))
        figures[gc.key] = {
            **baseline.describe(gc.cell), "step_s": round(step, 6),
            "step_s_q1": round(float(np.percentile(times, 25)), 6),
            "step_s_q3": round(float(np.percentile(times, 75)), 6),
            "peak_flops": round(peak, -6) if peak else None,
            "calibration": workers.calibration_method(gc.cell.device),
            "normalised_step": round(step * peak, -3) if peak else None,
        }
        say(f"{gc.key}: step {step * 1e3:.1f} ms, calibration {peak / 1e9 if peak else float('nan'):.1f} GFLOP/s")
    return figures
