"""`xfbench gate`: fail when the train step got slower than the committed baseline.

How it decides (A/B in the same run, as asv's `continuous`):

* The committed baseline file `benchmarks/baselines/<machine_class>.json` names
  the baseline commit and keeps reference figures per cell. The gate checks
  that commit out in a temporary `git worktree` and, for each cell of the quick
  profile's step config (32x32 origin spec, batch 32, cpu), starts two fresh
  workers: one importing the baseline tree, one the working tree (uncommitted
  changes count).
* After set-up and warm-up it alternates timed blocks of k synchronised steps
  between the two workers -- never both at once -- in pairs whose order is
  drawn at random (a fixed base-then-head order would give one side a
  systematic position effect). Each pair gives r = log(head / base).
* Under H0 "head is no slower than base x (1 + margin)", and with the order
  randomised, r - log(1 + margin) is symmetric about a value <= 0, so the
  one-sided Wilcoxon signed-rank test (exact null distribution) has a known
  false-alarm rate. The margin (default 3%) absorbs small systematic
  differences between two processes running the same code.
* While a cell is timed, its two workers run at raised priority where allowed
  (nice -15): other jobs on a shared machine then interfere less (pair-to-pair
  spread of the log ratio here: ~0.18 -> ~0.12).
* Pairs are taken in looks (at 12, 18, 26, 36, 50, 70, 100 pairs). The cell's
  alpha (0.01 / number of cells, Bonferroni) is split over the looks
  (Bonferroni again: half over the interim looks, the rest at the last), so
  stopping early when the evidence is clear keeps the false-alarm rate
  <= alpha. A cell also stops early, as a pass, once the 98% interval of the
  median ratio lies below 1 + margin + 0.05: that only ever lowers the
  false-alarm rate. On a quiet machine a cell takes a dozen pairs; on a loaded
  one more, up to --pairs or its share of the time budget (--budget-s).
* Reported per cell: ratio = median of the pair ratios with a distribution-free
  (order-statistic) 95% interval, confidence = 1 - p.
* As information only, the calibration-normalised step (step seconds x the
  matmul rate measured in the same worker) is compared with the baseline
  file's reference figure.

`--results FILE` reads a pytest-benchmark JSON run instead and compares its
calibration-normalised step times with the reference figures; with no pairs
there is no A/B test, so that mode uses a plain threshold (--results-threshold,
default 25%) and says so.

Exit status: 0 no regression, 1 a cell regressed (a head worker that crashes
counts as regressed), 2 bad input (no or wrong baseline, corrupt file, unknown
implementation, git trouble, a baseline commit that cannot be measured).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import machine, registry
from benchmarks.store import ResultFileError, now_iso, read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
BASELINE_DIR = ROOT / "benchmarks" / "baselines"
FORMAT = 1
LOOKS = (12, 18, 26, 36, 50, 70, 100)
# what a worker tree must contain to be measured (else the editable install would fill the gap silently)
TREE_NEEDS = ("benchmarks/worker.py", "benchmarks/registry.py", "benchmarks/spec.py", "shared_data/__init__.py")


class GateInputError(Exception):
    """Bad input: exit status 2 with this message."""


# =========================================================================== statistics


def _signed_rank_null(n: int) -> np.ndarray:
    """P(W+ = w) for w = 0..n(n+1)/2 under H0 (exact, by dynamic programming)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    top = 0
    for k in range(1, n + 1):
        counts[k : top + k + 1] += counts[: top + 1].copy()
        top += k
    return counts / 2.0**n


def signed_rank_p(d) -> float:
    """One-sided exact Wilcoxon signed-rank p-value for H1: d is shifted above 0."""
    d = np.asarray([x for x in d if x != 0.0], dtype=float)
    n = len(d)
    if n == 0:
        return 1.0
    ranks = np.argsort(np.argsort(np.abs(d))) + 1  # ties have probability ~0 for timings
    w_plus = int(ranks[d > 0].sum())
    null = _signed_rank_null(n)
    return float(min(1.0, null[w_plus:].sum()))


def sign_test_p(d) -> float:
    """One-sided exact sign test p-value for H1: median of d > 0."""
    d = [x for x in d if x != 0.0]
    n, k = len(d), sum(x > 0 for x in d)
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n) if n else 1.0


def median_ci(x, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median from order statistics (binomial)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = len(x)
    if n < 6:
        return float(x[0]), float(x[-1])
    tail = (1 - level) / 2
    cdf = np.cumsum([math.comb(n, i) / 2.0**n for i in range(n + 1)])
    lo = int(np.searchsorted(cdf, tail, side="right"))  # P(B <= lo-1) <= tail
    lo = max(lo - 1, 0)
    return float(x[lo]), float(x[n - 1 - lo])


@dataclass
class Decision:
    n: int
    ratio: float
    ci: tuple[float, float]
    p: float
    regressed: bool
    alpha: float
    margin: float

    @property
    def confidence(self) -> float:
        return 1.0 - self.p


def decide(log_ratios, margin: float, alpha: float) -> Decision:
    """Is head slower than base x (1 + margin)? One-sided Wilcoxon signed-rank at level alpha."""
    r = np.asarray(log_ratios, dtype=float)
    p = signed_rank_p(r - math.log1p(margin))
    lo, hi = median_ci(r)
    return Decision(len(r), float(math.exp(np.median(r))), (math.exp(lo), math.exp(hi)), p, p <= alpha, alpha, margin)


def looks_upto(max_pairs: int) -> list[int]:
    looks = [n for n in LOOKS if n < max_pairs] + [max_pairs]
    return sorted(set(looks))


def clearly_fine(log_ratios, margin: float) -> bool:
    """The 99% upper bound of the median ratio is below 1 + margin + 5%: no regression worth finding."""
    if len(log_ratios) < LOOKS[0]:
        return False
    _, hi = median_ci(log_ratios, level=0.98)
    return math.exp(hi) < 1 + margin + 0.05


# =========================================================================== baselines


def this_machine() -> dict:
    return {"machine_class": machine.machine_class([]), "cpu": machine.cpu_model(), "cpu_count": os.cpu_count()}


def cell_key(impl: str, device: str, image_size: int, pool_stride: int, batch_size: int) -> str:
    return f"{impl}-{device}-s{image_size}-p{pool_stride}-b{batch_size}"


def baseline_path(args, machine_class: str) -> Path:
    if args.baseline:
        return Path(args.baseline)
    return Path(args.baseline_dir) / f"{machine_class}.json"


def load_baseline(path: Path, machine_class: str) -> dict:
    if not path.exists():
        others = sorted(p.name for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise GateInputError(
            f"no step-time baseline for this machine class ({machine_class}): {path} does not exist.\n"
            f"Create it with `xfbench gate --update-baseline` on a clean, committed tree, then commit the file."
            + (f"\nBaselines exist for other machine classes: {', '.join(others)}" if others else "")
        )
    try:
        base = read_json(path)
    except ResultFileError as e:
        raise GateInputError(f"corrupt baseline file: {e}") from None
    if not isinstance(base, dict) or base.get("format") != FORMAT or not isinstance(base.get("cells"), dict):
        raise GateInputError(f"corrupt baseline file: {path}: not an xfbench baseline (format {FORMAT}); "
                             f"recreate it with `xfbench gate --update-baseline`")
    for key in ("commit", "machine_class"):
        if not isinstance(base.get(key), str) or not base[key]:
            raise GateInputError(f"corrupt baseline file: {path}: missing {key!r}; recreate it with `xfbench gate --update-baseline`")
    for name, cell in base["cells"].items():
        if not isinstance(cell, dict) or not isinstance(cell.get("step_s"), (int, float)):
            raise GateInputError(f"corrupt baseline file: {path}: cell {name!r} has no step_s")
    if base["machine_class"] != machine_class:
        raise GateInputError(
            f"baseline file {path} is for machine class {base['machine_class']!r} "
            f"(CPU {base.get('cpu')!r}), but this machine is {machine_class!r}.\n"
            f"Step times do not transfer between machine classes: create this machine's baseline with "
            f"`xfbench gate --update-baseline` (it writes {Path(path).parent / (machine_class + '.json')})."
        )
    return base


# =========================================================================== git


def git(*args, cwd: Path | None = None, check=True) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GateInputError(f"git {' '.join(args)} failed: {e}") from None
    if check and out.returncode != 0:
        raise GateInputError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.rstrip()


def resolve_commit(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except GateInputError:
        raise GateInputError(f"baseline commit {rev!r} is not in this repository (fetch it, or pass --base REV)") from None


def dirty_paths() -> list[str]:
    out = git("status", "--porcelain", "--untracked-files=all")
    return [line[3:] for line in out.splitlines() if line.strip()]


def tree_needs(impls) -> list[str]:
    """Files a worker tree must hold for these implementations.

    A missing package would not fail: the editable install would quietly import
    the working tree's copy instead, and the gate would compare head with itself.
    """
    pkgs = sorted({registry.entry(i).target.split(":")[0].split(".")[0] for i in impls})
    return list(TREE_NEEDS) + [f"{p}/__init__.py" for p in pkgs]


@contextlib.contextmanager
def worktree(commit: str, needs=TREE_NEEDS):
    """A detached worktree of `commit` in a temp folder; always removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="xfbench-gate-base-"))
    path = tmp / "tree"
    try:
        git("worktree", "add", "--detach", str(path), commit)
        missing = [p for p in needs if not (path / p).exists()]
        if missing:
            raise GateInputError(f"baseline commit {commit[:12]} lacks {', '.join(missing)}: it predates the harness; "
                                 f"pass --base REV or update the baseline")
        yield path
    finally:
        git("worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        git("worktree", "prune", check=False)


# =========================================================================== measuring


@dataclass
class CellSpec:
    impl: str
    device: str = "cpu"
    image_size: int = 32
    pool_stride: int = 1
    batch_size: int = 32

    @property
    def key(self) -> str:
        return cell_key(self.impl, self.device, self.image_size, self.pool_stride, self.batch_size)


def quick_cells(impls) -> list[CellSpec]:
    from benchmarks.profiles import profile

    p = profile("quick")
    return [CellSpec(impl, "cpu", s, st, b) for s in p.image_sizes for st in p.pool_strides for b in p.batch_sizes for impl in impls]


def payload(cell: CellSpec, cache_dir: str) -> dict:
    from benchmarks.spec import ModelSpec, TrainConfig

    return {
        "impl": cell.impl,
        "device": cell.device,
        "spec": ModelSpec(cell.image_size, pool_stride=cell.pool_stride).to_dict(),
        "train": TrainConfig(batch_size=cell.batch_size).to_dict(),
        "seed": 0,
        # step time does not depend on pixel values: the synthetic stand-in needs no image folder
        "data": {"source": "synthetic", "data_dir": None, "image_size": cell.image_size, "protocol": "original",
                 "seed": 0, "cache_dir": cache_dir},
    }


@dataclass
class Side:
    """One worker (base or head) of a cell, started and warmed up."""

    name: str
    worker: object = None
    error: str | None = None
    step_est: float = math.nan
    times: list = field(default_factory=list)


def start_side(cell: CellSpec, name: str, root: Path, logs: Path, cache_dir: str, timeout_s: float) -> Side:
    from benchmarks.worker import CellSkipped, Worker, WorkerError

    side = Side(name)
    try:
        side.worker = Worker(logs / f"{cell.key}-{name}.log", registry.entry(cell.impl).keras_backend, timeout_s, root=root)
        side.worker.call("setup", cell=payload(cell, cache_dir))
        side.worker.call("first_step")
        warm = side.worker.call("warmup", n=3)
        side.step_est = float(np.median(warm[1:]))
    except (WorkerError, CellSkipped) as e:
        side.error = str(e)
    return side


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


def timed_block(side: Side, k: int) -> float:
    t0 = time.perf_counter()
    loss = side.worker.call("steps", n=k)
    dt = (time.perf_counter() - t0) / k
    if not math.isfinite(loss):
        raise RuntimeError(f"{side.name}: non-finite loss {loss}")
    return dt


class SequentialTest:
    """The per-cell rule: looks at fixed pair counts, alpha split over them (Bonferroni).

    Each interim look may reject at alpha / (2 x number of interim looks); the
    final look -- at max_pairs, or earlier when the time budget ends the cell --
    gets all the alpha not yet spent (at least alpha / 2). The total over the
    looks never exceeds alpha, so the false-alarm rate of the cell stays <=
    alpha however it stops; stopping as a pass ("clearly no regression") only
    lowers it.

    `add(r)` takes one pair's log ratio and returns the stop reason once the
    cell is decided, else None; `stop()` ends it early (time budget).
    """

    def __init__(self, alpha: float, margin: float, max_pairs: int):
        self.alpha = alpha
        self.margin = margin
        self.max_pairs = max_pairs
        self.looks = looks_upto(max_pairs)
        self.alpha_interim = alpha / (2 * max(1, len(self.looks) - 1))
        self.spent = 0.0
        self.r: list[float] = []
        self._dec: Decision | None = None

    @property
    def alpha_final(self) -> float:
        return self.alpha - self.spent

    def add(self, r: float) -> str | None:
        self.r.append(float(r))
        n = len(self.r)
        if n >= self.max_pairs:
            return self.stop("max pairs")
        if n not in self.looks:
            return None
        self._dec = decide(self.r, self.margin, self.alpha_interim)
        self.spent += self.alpha_interim
        if self._dec.regressed:
            return "regression evident"
        if clearly_fine(self.r, self.margin):
            return "clearly no regression"
        return None

    def stop(self, reason: str) -> str:
        """The final look: all the alpha left."""
        self._dec = decide(self.r, self.margin, self.alpha_final)
        self.spent = self.alpha
        return reason

    def decision(self) -> Decision:
        if self._dec is None or self._dec.n != len(self.r):
            self.stop("asked")
        return self._dec


def ab_cell(cell, base: Side, head: Side, args, alpha_cell: float, deadline: float, say) -> dict:
    """Interleave timed blocks of the two workers until the decision is clear or time is up."""
    # one more short warm-up each, right before timing (the other cells' set-up ran in between)
    for s in (base, head):
        s.worker.call("warmup", n=2)
    reniced = args.nice is not None and all([raise_priority(s, args.nice) for s in (base, head)])
    step = min(base.step_est, head.step_est)
    k = max(1, round(args.block_s / step)) if math.isfinite(step) and step > 0 else 1
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
    say(f"{cell.key}: {dec.n} pairs x {k} step(s), ratio {dec.ratio:.3f} "
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


def calibrate(side: Side) -> float | None:
    from benchmarks.worker import WorkerError

    try:
        return float(side.worker.call("finish", loop_steps=1)["peak_flops"])
    except WorkerError:
        return None


def close_all(sides) -> None:
    for s in sides:
        if s is not None and s.worker is not None:
            with contextlib.suppress(Exception):
                s.worker.close()


def prepare_data(cells, cache_dir: str, say) -> None:
    from shared_data import load_dataset

    for size in sorted({c.image_size for c in cells}):
        load_dataset(source="synthetic", image_size=size, protocol="original", seed=0, cache_dir=cache_dir, log=lambda m: None)


# =========================================================================== modes


def home() -> Path:
    h = Path(os.environ.get("XFBENCH_HOME", ".xfbench"))
    return h if h.is_absolute() else ROOT / h


def run_ab(args, base_file: dict, cells: list[CellSpec], say) -> list[dict]:
    t_start = time.monotonic()
    commit = resolve_commit(args.base or base_file["commit"])
    cache_dir = str(home() / "cache" / "data")
    logs = home() / "gate" / "logs"
    prepare_data(cells, cache_dir, say)
    out = []
    with worktree(commit, tree_needs(c.impl for c in cells)) as base_root:
        say(f"baseline {commit[:12]} (worktree {base_root}) vs working tree {ROOT}; {len(cells)} cell(s)")
        alpha_cell = args.alpha / len(cells)
        sides: dict[str, tuple[Side, Side]] = {}
        try:
            # set-up of every worker at once (nothing is timed yet): imports and compiles overlap
            with ThreadPoolExecutor(max_workers=2 * len(cells)) as ex:
                futs = {
                    c.key: (ex.submit(start_side, c, "base", base_root, logs, cache_dir, args.timeout_s),
                            ex.submit(start_side, c, "head", ROOT, logs, cache_dir, args.timeout_s))
                    for c in cells
                }
                sides = {key: (fb.result(), fh.result()) for key, (fb, fh) in futs.items()}
            say(f"workers ready in {time.monotonic() - t_start:.0f} s")
            for i, c in enumerate(cells):
                base, head = sides[c.key]
                rec = {"impl": c.impl, "device": c.device, "image_size": c.image_size, "pool_stride": c.pool_stride,
                       "batch_size": c.batch_size, "key": c.key}
                if base.error or head.error:
                    rec.update(status="failed", regressed=head.error is not None and base.error is None,
                               reason=f"base: {base.error}" if base.error else f"head: {head.error}")
                    say(f"{c.key}: {rec['reason'].splitlines()[0]}")
                    out.append(rec)
                    continue
                left = args.budget_s - (time.monotonic() - t_start)
                deadline = time.monotonic() + max(10.0, left / (len(cells) - i) - 8)
                rec.update(status="ok", **ab_cell(c, base, head, args, alpha_cell, deadline, say))
                if args.calibrate:
                    peak = calibrate(head)
                    ref = base_file["cells"].get(c.key)
                    rec["head_peak_flops"] = peak
                    if peak and ref and ref.get("peak_flops"):
                        rec["normalised_vs_reference"] = (rec["head_step_s"] * peak) / (ref["step_s"] * ref["peak_flops"])
                close_all((base, head))
                out.append(rec)
        finally:
            close_all(s for pair in sides.values() for s in pair)
    return out


def run_results(args, base_file: dict, impls) -> list[dict]:
    try:
        data = read_json(args.results)
    except ResultFileError as e:
        raise GateInputError(str(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise GateInputError(f"{args.results}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    try:
        out = _compare_results(args, data, base_file, impls)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise GateInputError(f"{args.results}: a step cell lacks a figure the gate needs ({type(e).__name__}: {e})") from None
    if not out:
        raise GateInputError(f"{args.results}: no ok step cell for {', '.join(impls)} in it")
    return out


def _compare_results(args, data: dict, base_file: dict, impls) -> list[dict]:
    out = []
    for b in data["benchmarks"]:
        info = b.get("extra_info") or {}
        if info.get("kind") != "step" or info.get("status", "ok") != "ok" or info.get("impl") not in impls:
            continue
        key = cell_key(info["impl"], info.get("device_kind", info.get("device")), info["image_size"],
                       info.get("pool_stride", 1), info["batch_size"])
        ref = base_file["cells"].get(key)
        rec = {"impl": info["impl"], "device": info.get("device_kind", info.get("device")), "image_size": info["image_size"],
               "pool_stride": info.get("pool_stride", 1), "batch_size": info["batch_size"], "key": key,
               "head_step_s": info.get("step_s_median"), "head_peak_flops": info.get("peak_flops")}
        if ref is None:
            rec.update(status="no reference", regressed=False)
        elif ref.get("peak_flops") and info.get("peak_flops"):
            ratio = (info["step_s_median"] * info["peak_flops"]) / (ref["step_s"] * ref["peak_flops"])
            rec.update(status="ok", ratio=ratio, normalised_vs_reference=ratio, confidence=None,
                       regressed=ratio > 1 + args.results_threshold,
                       rule=f"normalised step > reference x {1 + args.results_threshold:.2f} (single run: no A/B test)")
        else:
            ratio = info["step_s_median"] / ref["step_s"]
            rec.update(status="ok", ratio=ratio, confidence=None, regressed=ratio > 1 + args.results_threshold,
                       rule="raw step vs reference (no calibration figure)")
        out.append(rec)
    return out


def update_baseline(args, path: Path, cells: list[CellSpec], mc: dict, say) -> int:
    dirty = dirty_paths()
    if dirty and not args.allow_dirty:
        raise GateInputError(
            "refusing to update the baseline from a dirty working tree (the baseline names a commit, so it must "
            f"measure exactly that commit): {', '.join(dirty[:8])}{' ...' if len(dirty) > 8 else ''}\n"
            "Commit or stash first, or pass --allow-dirty."
        )
    commit = git("rev-parse", "HEAD")
    cache_dir = str(home() / "cache" / "data")
    logs = home() / "gate" / "logs"
    prepare_data(cells, cache_dir, say)
    with ThreadPoolExecutor(max_workers=len(cells)) as ex:
        heads = list(ex.map(lambda c: start_side(c, "head", ROOT, logs, cache_dir, args.timeout_s), cells))
    figures = {}
    try:
        for c, s in zip(cells, heads):
            if s.error:
                raise GateInputError(f"{c.key}: cannot measure: {s.error}")
            s.worker.call("warmup", n=2)
            if args.nice is not None:
                raise_priority(s, args.nice)
            k = max(1, round(args.block_s / s.step_est)) if s.step_est > 0 else 1
            times = [timed_block(s, k) for _ in range(args.reference_blocks)]
            peak = calibrate(s)
            step = float(np.median(times))
            figures[c.key] = {
                "impl": c.impl, "device": c.device, "image_size": c.image_size, "pool_stride": c.pool_stride,
                "batch_size": c.batch_size, "step_s": round(step, 6), "step_s_q1": round(float(np.percentile(times, 25)), 6),
                "step_s_q3": round(float(np.percentile(times, 75)), 6),
                "peak_flops": round(peak, -6) if peak else None,
                "normalised_step": round(step * peak, -3) if peak else None,
            }
            say(f"{c.key}: step {step * 1e3:.1f} ms, calibration {peak / 1e9 if peak else float('nan'):.1f} GFLOP/s")
    finally:
        close_all(heads)
    old = read_json(path) if path.exists() else {}
    cells_out = dict(old.get("cells", {})) if isinstance(old, dict) and old.get("machine_class") == mc["machine_class"] else {}
    cells_out.update(figures)
    write_json(path, {
        "format": FORMAT,
        "machine_class": mc["machine_class"],
        "cpu": mc["cpu"],
        "cpu_count": mc["cpu_count"],
        "commit": commit,
        "dirty": bool(dirty),
        "updated": now_iso(),
        "versions": machine.versions(),
        "note": "reference figures are information; the gate's verdict comes from A/B pairs against `commit`",
        "cells": cells_out,
    })
    say(f"wrote {path} for commit {commit[:12]}; review it with `git diff {path}` and commit it")
    return 0


# =========================================================================== CLI


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
    import signal

    with contextlib.suppress(ValueError):  # only the main thread may set it
        signal.signal(signal.SIGTERM, _terminate)
    t0 = time.monotonic()
    say = lambda m: print(f"[gate] {m}", flush=True)  # noqa: E731
    try:
        impls = [s.strip() for s in args.impls.split(",") if s.strip()]
        for name in impls:
            try:
                registry.entry(name)
            except ValueError as e:
                raise GateInputError(f"--impls: {e}") from None
        if not impls:
            raise GateInputError("--impls: no implementation named")
        if args.pairs < LOOKS[0]:
            raise GateInputError(f"--pairs must be at least {LOOKS[0]}")
        mc = this_machine()
        path = baseline_path(args, mc["machine_class"])
        cells = quick_cells(impls)
        if args.update_baseline:
            return update_baseline(args, path, cells, mc, say)
        base_file = load_baseline(path, mc["machine_class"])
        if args.results:
            records = run_results(args, base_file, impls)
            mode = "results"
        else:
            records = run_ab(args, base_file, cells, say)
            mode = "ab"
    except GateInputError as e:
        print(f"xfbench gate: {e}", file=sys.stderr)
        return 2
    return report(args, records, mode, path, time.monotonic() - t0, say)


def report(args, records, mode, path, elapsed, say) -> int:
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
    last = Path(args.last) if args.last else home() / "gate" / "last.json"
    write_json(last, verdict)
    if args.json:
        write_json(Path(args.json), verdict)
    if regressed:
        print(f"xfbench gate: step time REGRESSED in {len(regressed)} cell(s) ({elapsed:.0f} s):")
        for r in regressed:
            conf = (f"{r['confidence'] * 100:.3f}% (p = {r['p']:.2g}, alpha {r['alpha']:.2g})"
                    if r.get("confidence") is not None and r.get("p") is not None else "n/a (single run)")
            ratio = f"{r['ratio']:.3f}x" if r.get("ratio") is not None else "n/a"
            why = f" ({r['reason'].splitlines()[0]})" if r.get("reason") else ""
            print(f"  {r['impl']} on {r['device']} (batch {r['batch_size']}, {r['image_size']}px): "
                  f"ratio {ratio}, confidence {conf}{why}")
        return 1
    failed = [r for r in records if r.get("status") == "failed"]
    if failed:
        # the baseline commit itself could not be measured: the gate cannot vouch for these cells
        print(f"xfbench gate: the baseline commit could not be measured for {len(failed)} cell(s):", file=sys.stderr)
        for r in failed:
            print(f"  {r['impl']} on {r['device']}: {r['reason'].splitlines()[0]}", file=sys.stderr)
        print("Pass --base REV, or update the baseline (`xfbench gate --update-baseline`).", file=sys.stderr)
        return 2
    print(f"xfbench gate: no step-time regression in {len(records)} cell(s) ({elapsed:.0f} s)")
    return 0
