"""The benchmark session: data preparation, workers, result records, the accuracy cache."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import statistics
import time

import pytest

from benchmarks import peaks, registry
from benchmarks import record
from benchmarks.inputs import COMPILE_ENV, TUNED_ENV, DataChoice, data_choice, home, payload
from benchmarks.profiles import Cell, Profile, step_precisions
from benchmarks.store import ResultFileError, RunFolder, read_json, write_json
from benchmarks.weights import reference_weights_file
from benchmarks.workloads import ORIGIN
from benchmarks.worker_client import CellSkipped, Worker, WorkerError

class Session:
    def __init__(self, config, profile: Profile, gpus: list[str], impls: list[str], machine: dict, code: str,
                 data: DataChoice | None = None, deadline: float | None = None):
        """`machine`: machine.info(); `code`: code_fingerprint() -- both part of every reuse key.
        `data`: the session's data, where it was already checked and prepared; `deadline`: the
        time.monotonic() by which every cell started must have finished."""
        self.config = config
        self.profile = profile
        self.gpus = gpus
        self.impls = impls
        self.machine = machine
        self.code = code
        self.home = home(config.getoption("xf_home"))
        self.data = data or data_choice(config)
        self.step_source = config.getoption("xf_step_source")
        self.run: RunFolder | None = None
        self.resumable: dict[str, tuple[str, dict]] = {}
        self.config_steps: dict[tuple, int] = {}  # configuration -> steps per timed call
        self.cells_done = 0
        self.matmul_rates: dict[str, dict] = {}
        self.deadline = deadline
        self.left_out: list[str] = []  # cells not started for the deadline
        self.took: list[tuple[Cell, float]] = []  # finished cells and their seconds, for the deadline's estimates
        self.started_at = 0.0  # when the current cell started
        self.open_worker: tuple[tuple, Worker] | None = None  # (worker_key, the worker) kept for the next cell
        self.current = ""  # the id of the cell the open worker measures

    # ---- output

    def say(self, msg: str) -> None:
        """Progress straight to the terminal, past pytest's capture."""
        capman = self.config.pluginmanager.getplugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with ctx:
            print(f"[xfbench] {msg}", flush=True)

    # ---- the device's matmul rate: once per device and run, in its own process

    def matmul_rate(self, device: str) -> dict:
        """The measured matmul rate of `device` (one method, whatever implementations run: the
        worker's `matmul_rate`): the one figure every cell of this device and run is rated against."""
        if device not in self.matmul_rates:
            bf16 = "bf16" in step_precisions(self.profile)
            with Worker(self.run.log_path(f"matmul-rate-{device}"), None, self.profile.cell_timeout_s) as w:
                self.matmul_rates[device] = rate = w.call("matmul_rate", device=device, bf16=bf16)
            default = (f"; {rate['default_flops'] / 1e9:.1f} GFLOP/s at {rate['default_precision']}"
                       if "default_flops" in rate else "")
            if "bf16_flops" in rate:
                default += f"; {rate['bf16_flops'] / 1e9:.1f} GFLOP/s in bfloat16"
            self.say(f"measured matmul rate on {device}: {rate['flops'] / 1e9:.1f} GFLOP/s ({rate['method']}){default}")
        return self.matmul_rates[device]

    # ---- cells

    def payload(self, cell: Cell) -> dict:
        source = self.step_source if cell.kind == "step" else None
        return payload(cell, self.data.kwargs(cell.spec.image_size, cell.protocol, source))

    def reference_weights(self, cell: Cell, seed: int) -> str:
        """Path of the reference's initial weights for this cell's spec and seed (paired training)."""
        return str(reference_weights_file(cell.workload, cell.spec, seed, self.home / "cache" / "weights", self.code))

    def data_summary(self, cell: Cell) -> dict:
        source = self.step_source if cell.kind == "step" else None
        return self.data.prepare(cell.spec.image_size, cell.protocol, self.say, source)

    def base_info(self, cell: Cell) -> dict:
        data = self.data_summary(cell)
        return {
            "kind": cell.kind,
            "status": "ok",
            "reason": None,
            "impl": cell.impl,
            "replicate": cell.replicate,
            "replicates": self.profile.replicates if cell.kind == "step" else 1,
            "aa_copy": cell.aa_copy,
            "tuned": cell.tuned,
            "tuned_env": TUNED_ENV if cell.tuned else None,
            "command": self.reproduce(cell),
            "backend": registry.entry(cell.impl).backend,
            "device": cell.device,
            "device_kind": cell.device,
            "batch_size": cell.train.batch_size,
            "precision": cell.train.precision,
            "image_size": cell.spec.image_size,
            "pool_stride": getattr(cell.spec, "pool_stride", None),  # the origin's spec alone has one
            "spec_is_origin": getattr(cell.spec, "is_origin", False),
            "data": "synthetic" if data["source"] == "synthetic" else "real",
            "data_source": data["source"],
            "dataset_fingerprint": data["fingerprint"],
            "machine_class": self.machine["machine_class"],
            **({} if cell.workload == ORIGIN else {"workload": cell.workload}),  # the origin's records as they were
        }

    def reproduce(self, cell: Cell) -> str:
        """The command that measures this cell again (data given as on this run's command line)."""
        parts = ["pytest --benchmark-only", f"--xf-profile={self.profile.name}", f"--xf-impls={cell.impl}",
                 f"--xf-devices={cell.device}"]
        if source := self.data.source_for(cell.spec.image_size):
            parts.append(f"--xf-source={source}")
        if cell.aa_copy:
            parts.append(f"--xf-aa={cell.impl}")
        if cell.tuned:
            parts.append(f"--xf-tuned={cell.impl}")
        if cell.train.precision != "float32":
            parts.append(f"--xf-precision={cell.train.precision}")
        if cell.workload != ORIGIN:
            parts.append(f"--xf-workloads={cell.workload}")
        return " ".join(parts + [f"-k '{record.select_expression(cell.id)}'"])

    @contextlib.contextmanager
    def worker(self, cell: Cell, info: dict):
        """The cell's worker: the open one where it shares the cell's `worker_key` (one process measures
        each configuration of its series and replicate, or each accuracy protocol of its implementation,
        in turn), else a fresh one. Failures and skips become recorded cells, and end that worker."""
        if self.open_worker is not None and self.open_worker[0] != cell.worker_key:
            self.close_worker()
        try:
            if self.open_worker is None:
                self.open_worker = (cell.worker_key, Worker(
                    self.run.log_path("-".join(map(str, cell.worker_key))),
                    registry.entry(cell.impl).keras_backend,
                    self.profile.cell_timeout_s,
                    on_progress=lambda m: self.say(f"{self.current}: {m}"),
                    env=TUNED_ENV if cell.tuned else None,
                ))
            self.current = cell.id
            yield self.open_worker[1]
        except CellSkipped as e:
            self.close_worker()
            self.record(cell, info, status="skipped", reason=str(e))
            pytest.skip(str(e))
        except WorkerError as e:
            self.close_worker()
            self.record(cell, info, status="failed", reason=str(e))
            pytest.fail(f"{cell.id} failed: {e}", pytrace=False)
        except BaseException:
            self.close_worker()
            raise

    def close_worker(self) -> None:
        if self.open_worker is not None:
            self.open_worker[1].close()
            self.open_worker = None

    # ---- the deadline

    def start(self, cell: Cell, info: dict) -> None:
        """Before a cell is measured: under --xf-deadline, leave it out (recorded, and skipped) where it would
        not finish in time, by the estimate below, and every cell after it, so the plan runs in its order."""
        self.started_at = time.monotonic()
        if self.deadline is None:
            return
        left, need = self.deadline - self.started_at, self.estimate(cell)
        if not self.left_out and need <= left:
            return
        why = (f"left out by --xf-deadline: about {need:.0f} s needed, {max(left, 0):.0f} s left" if not self.left_out
               else f"left out by --xf-deadline, as every cell after {self.left_out[0]}")
        self.left_out.append(cell.id)
        self.record(cell, info, status="skipped", reason=why)
        pytest.skip(why)

    def past_deadline(self, need_s: float) -> bool:
        """Whether a piece of work of about `need_s` seconds, not a cell (parity), would miss the deadline
        or come after cells left out for it."""
        return self.deadline is not None and (bool(self.left_out) or time.monotonic() + need_s > self.deadline)

    def estimate(self, cell: Cell) -> float:
        """Seconds the cell should take: the longest finished cell of its kind, scaled up (never down) by
        the ratio of their FLOPs per step; 0 before any finished. Process start-up is in the estimate, since
        a worker's first cell includes it."""
        work = cell.spec.train_flops(cell.train.batch_size)
        return max((took * max(1.0, work / done.spec.train_flops(done.train.batch_size)) if cell.kind == "step" else took
                    for done, took in self.took if done.kind == cell.kind), default=0.0)

    def record(self, cell: Cell, info: dict, status="ok", reason=None, stats=None) -> None:
        if status == "ok" and self.started_at:
            self.took.append((cell, time.monotonic() - self.started_at))
        self.started_at = 0.0
        info.update(status=status, reason=reason)
        self.run.write_cell(record.run_file(cell.id, cell.kind, status, reason, stats, info))
        self.cells_done += 1
        planned = len(self.run.meta()["planned"])
        self.say(f"{cell.id}: {status}{' -- ' + reason.splitlines()[0] if reason else ''} ({self.cells_done}/{planned} cells)")

    # ---- steps per timed call: one per configuration

    @staticmethod
    def configuration(cell: Cell) -> tuple:
        return (cell.workload, cell.device, cell.spec.image_size, cell.spec.variant, cell.train.batch_size,
                cell.train.precision)

    def steps_per_call(self, cell: Cell, steady_s: float, rtt_s: float) -> int:
        """The same number of steps per timed call for every implementation and process of a
        configuration (so their spreads describe the same thing): set by its first cell to run, for
        an implementation FASTEST_MARGIN times faster than it to reach min_call_s (the round-trip rule
        is that cell's own); cells reused from an interrupted run keep theirs."""
        config = self.configuration(cell)
        if config not in self.config_steps:
            self.config_steps[config] = calls_steps(steady_s, rtt_s, self.profile.min_call_s * FASTEST_MARGIN)
        return self.config_steps[config]

    def reuse_steps_per_call(self, cell: Cell, n: int) -> None:
        self.config_steps.setdefault(self.configuration(cell), n)

    # ---- reuse: cached figures, and cells finished by an interrupted run

    def key(self, **parts) -> str:
        """Fingerprint of code, machine and whatever else decides a cell's figures."""
        parts.update(code=self.code, machine=self.machine["machine_class"], gpus=self.gpus,
                     versions=self.machine.get("versions"), env={k: os.environ.get(k) for k in COMPILE_ENV})
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def cell_key(self, cell: Cell) -> str:
        p = self.profile
        return self.key(
            kind=cell.kind, augment=cell.augment, replicate=cell.replicate, aa_copy=cell.aa_copy, tuned=cell.tuned,
            payload=self.payload(cell), data=self.data_summary(cell)["fingerprint"],
            seeds=list(p.seeds), epochs=p.epochs, rounds=p.rounds, warmup=p.warmup_steps, min_call_s=p.min_call_s,
        )

    def cached_figures(self, key: str) -> dict | None:
        if self.config.getoption("xf_fresh"):
            return None
        path = self.home / "cache" / "figures" / f"{key}.json"
        if not path.exists():
            return None
        try:
            return read_json(path)
        except ResultFileError as e:
            self.say(f"ignoring a corrupt cache entry: {e}")
            return None

    def store_figures(self, key: str, figures: dict) -> None:
        write_json(self.home / "cache" / "figures" / f"{key}.json", figures)

    def interrupted_run(self, planned: list[str]) -> RunFolder | None:
        """The newest interrupted run of this very plan (same profile and cells): resumed in place, so
        that it keeps its run id and its cells stay one run."""
        if self.config.getoption("xf_fresh"):
            return None
        for run_dir in sorted((self.home / "runs").glob("*/"), reverse=True):
            run = RunFolder(run_dir)
            try:
                meta = run.meta()
                if (run.interrupted() and meta.get("planned") == planned and meta.get("profile") == self.profile.name
                        and run.claim()):
                    return run
            except ResultFileError:
                continue
        return None

    def interrupted_cells(self, cells: list[Cell]) -> dict[str, tuple[str, dict]]:
        """cell_key -> (run id, record) for the ok cells of earlier runs that never finished (this run's
        own where it resumes one). A step configuration is reused whole or not at all: none is split
        between two calls, so its implementations stay compared within one interleaved order."""
        found = {}
        if self.config.getoption("xf_fresh"):
            return found
        for run_dir in sorted((self.home / "runs").glob("*/")):
            run = RunFolder(run_dir)
            try:
                if run_dir != self.run.path and not run.interrupted():
                    continue
                records = run.cells().values()
            except ResultFileError as e:
                self.say(f"skipping an unreadable earlier run: {e}")
                continue
            for rec in records:  # the earliest measurement of a cell wins; copies reused from elsewhere are skipped
                info = rec.get("extra_info", {})
                key = info.get("cell_key")
                if rec.get("status") == "ok" and key and key not in found \
                        and info.get("reused_from") in (None, run.run_id):
                    found[key] = (info.get("reused_from") or run.run_id, rec)
        by_config: dict[tuple, list[str]] = {}
        for cell in cells:
            if cell.kind == "step":
                by_config.setdefault(self.configuration(cell), []).append(self.cell_key(cell))
        for keys in by_config.values():
            if not all(k in found for k in keys):
                for k in keys:
                    found.pop(k, None)
        return found


# the pipe round trip may cost at most this share of a timed call
MAX_OVERHEAD = 0.02
# every timed call runs at least this many steps: no call pays the round trip on each step
MIN_STEPS_PER_CALL = 2
# one configuration's first cell sizes its calls this many times min_call_s long, so that an implementation
# this much faster still reaches min_call_s (the frameworks were within 2x of each other so far)
FASTEST_MARGIN = 2.0


def warm_up(worker, n: int) -> tuple[float, float]:
    """n single-step calls to the worker: the steady step time, and what a call costs beyond the
    worker's own time of it (the round trip), at its least: what the pipe itself costs, since a busy
    moment would size every call of the configuration (the timed rounds' overhead is checked apart)."""
    steps, trips = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        (inner,) = worker.call("warmup", n=1)
        trips.append(time.perf_counter() - t0 - inner)
        steps.append(inner)
    return steady_step(steps), min(trips)


def calls_steps(step_s: float, rtt_s: float, min_call_s: float) -> int:
    """Steps per timed call: at least MIN_STEPS_PER_CALL, at least min_call_s long, and long enough
    that the round trip stays under half of MAX_OVERHEAD (headroom for a busy machine; each cell's
    overhead is measured on its own rounds, and a cell above MAX_OVERHEAD is flagged)."""
    return max(MIN_STEPS_PER_CALL, math.ceil(max(min_call_s, rtt_s / (MAX_OVERHEAD / 2)) / step_s))


def harness_overhead(outer: list[float], inner: list[float]) -> float:
    """Per round, pytest-benchmark's time (round trip included) minus the worker's own time of
    that call; the median of that, as a share of the median round."""
    return statistics.median(o - i for o, i in zip(outer, inner, strict=True)) / statistics.median(outer)


def steady_step(times: list[float]) -> float:
    """Median of the warm-up steps after the first (which may still settle)."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def step_figures(cell: Cell, stats, outer: list[float], steps_per_call: int, first: dict, fin: dict,
                 setup: dict, rate: dict) -> dict:
    """Everything a step cell reports beyond pytest-benchmark's own (per-step) statistics.
    `outer`: the timed calls as the harness saw them; `rate`: the run's measured matmul rate."""
    step = stats.median
    flops = cell.spec.train_flops(cell.train.batch_size)
    figures = {
        "device": setup["device"],
        "params": setup["params"],
        "timed_region": setup["timed_region"],
        "threads": setup["threads"],
        "platform_version": setup.get("platform_version"),
        "imported_versions": setup.get("imported_versions"),
        "stats_unit": record.STATS_UNIT,
        "steps_per_call": steps_per_call,
        "step_s_median": step,
        "step_s_q1": stats.q1,
        "step_s_q3": stats.q3,
        "images_per_s": cell.train.batch_size / step,
        "first_step_s": first["first_step_s"],
        "compile_s": first["first_step_s"] - step,
        "trace_s": first["trace_s"],
        "lower_s": first["lower_s"],
        "compile_only_s": first["compile_only_s"],
        "flops_per_step": flops,
        "flops_source": "analytic",
        "flops_xla": fin.get("flops_xla"),
        "flops_xla_to_analytic": fin["flops_xla"] / flops if fin.get("flops_xla") else None,
        "peak_flops": rate["flops"],
        "matmul_rate_precision": rate["precision"],
        "matmul_rate_framework": rate["framework"],
        "matmul_rate_method": rate["method"],
        "matmul_rate_default": rate.get("default_flops"),
        "matmul_rate_bf16": rate.get("bf16_flops"),
        "peak_memory_bytes": fin["peak_memory_bytes"],
        "memory_source": fin["memory_source"],
        "rss_growth_bytes": fin["rss_growth_bytes"] if cell.device == "cpu" else None,
        "framework_rss_bytes": fin["framework_rss_bytes"],
        "training_rss_bytes": fin["training_rss_bytes"] if cell.device == "cpu" else None,
        "device_bytes_in_use": fin.get("device_bytes_in_use"),
        "peak_spans_timed_steps_only": fin["peak_spans_timed_steps_only"],
        "page_faults_per_step": fin["page_faults_per_step"],
        "kernel_s_per_step": fin["kernel_s_per_step"],
        "busy_cores": fin["busy_cores"],
        "recompiles": fin["recompiles"],
        "harness_overhead": harness_overhead(outer, fin["inner_call_s"]),
    }
    figures.update(mfu_figures(cell, flops / step, rate, setup["device"]))
    figures.update({k: fin[k] for k in ("user_epoch_s", "user_epoch_steps", "user_images_per_s", "user_loop",
                                        "breakdown", "cells_before_in_process") if k in fin})
    if fin.get("user_epoch_s"):  # the user's loop over the same number of kernel steps: 1.0 = no overhead
        figures["user_overhead"] = fin["user_epoch_s"] / (fin["user_epoch_steps"] * step)
    return figures


def mfu_figures(cell: Cell, achieved: float, rate: dict, device_name: str) -> dict:
    """MFU against the measured rate of the precision the cell's matmuls run at (`peaks.rated_precision`:
    TF32 for default-precision float32 on NVIDIA GPUs, bf16 for bf16 cells), and against the datasheet's
    dense peak for that precision where the device is listed (`peaks.DATASHEET`)."""
    rated = peaks.rated_precision(cell.device, cell.train.precision)
    measured = {"float32": rate["flops"], "tf32": rate.get("default_flops"), "bf16": rate.get("bf16_flops")}[rated]
    out = {"mfu_precision": rated, "mfu_rate": measured, "mfu": achieved / measured if measured else None}
    sheet = peaks.datasheet_peak(device_name, rated)
    if sheet:
        out.update(datasheet_flops=sheet[0], datasheet_source=sheet[1], mfu_datasheet=achieved / sheet[0])
    return out


def accuracy_figures(runs: list[dict], seeds, epochs: int) -> dict:
    accs = [r["history"][-1]["test_accuracy"] for r in runs]
    return {
        "seeds": list(seeds),
        "epochs": epochs,
        "test_accuracies": accs,
        "test_accuracy_mean": statistics.fmean(accs),
        "test_accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else None,  # one seed: no spread
        "history": [r["history"] for r in runs],
        "train_s": sum(r.get("train_s", math.nan) for r in runs),
    }


def per_step(stats, steps_per_call: int):
    """pytest-benchmark's statistics of the timed calls, turned into statistics of one step, so that
    its table, its JSON, `pytest-benchmark compare` and github-action-benchmark all read one training
    step. Its figures are computed lazily from `data`, so none is stale; any already read is dropped."""
    stats.data[:] = [t / steps_per_call for t in stats.data]
    for name in (*type(stats).fields, "sorted_data"):
        stats.__dict__.pop(name, None)
    return stats


def replay_rounds(benchmark, step_times: list[float], iterations: int) -> None:
    """Feed the per-step times measured by an earlier, interrupted run into pytest-benchmark's
    statistics. (No public call for this; _make_stats is what pedantic itself uses.)"""
    stats = benchmark._make_stats(iterations)
    for t in step_times:
        stats.update(t)
