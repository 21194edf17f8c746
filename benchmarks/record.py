"""The result format, defined once: how cells are named and what a cell's record holds.

The harness writes records through `run_file` (every `extra_info` key is checked against `Info`);
the report and the gate read them through `CellRecord.from_run_file`, `CellRecord.from_benchmark_entry`
and the typed `CellRecord.info`. Records written by earlier versions still load: every figure may be
missing (None), a value of the wrong type reads as missing, and kinds and statuses are normalised.

Standard library only, so readers never import pytest or a framework.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Kind = Literal["step", "accuracy", "parity", "unknown"]
Status = Literal["ok", "failed", "skipped", "missing"]
KINDS: tuple[str, ...] = ("step", "accuracy", "parity")
STATS_UNIT = "step"  # step cells' stats are per training step (files before it: per timed call)

# the two copies of an implementation that are series of their own: how ids and labels name them
AA_TAG, TUNED_TAG = "~aa", "~tuned"
AA_SUFFIX, TUNED_SUFFIX = " (A/A copy)", " (tuned)"

_OK = {"ok", "passed", "pass", "success"}
_FAILED = {"failed", "fail", "error", "errored"}
SELECT = re.compile(r" -k '([^']*)'")  # how a recorded command selects its cell (`select_expression`)


# ---- names -------------------------------------------------------------------------------
def series_id(impl: str, aa_copy: bool = False, tuned: bool = False) -> str:
    """The series a cell's figures are compared under, as cell ids spell it: "flax", "flax~aa"."""
    return impl + (AA_TAG if aa_copy else TUNED_TAG if tuned else "")


def series_label(impl: str, aa_copy: bool = False, tuned: bool = False) -> str:
    """The same series as the report names it: "flax", "flax (A/A copy)", "flax (tuned)"."""
    return impl + (AA_SUFFIX if aa_copy else TUNED_SUFFIX if tuned else "")


def cell_id(kind: str, series: str, device: str, image_size: int, variant: str, batch_size: int,
            precision: str = "float32", replicate: int = 0, protocol: str = "original", augment: bool = False,
            workload: str = "origin") -> str:
    """"step-flax-cpu-s64-p2-b32[-bf16][-r1]" or "acc-flax-cpu-s64-p1-b32[-bf16]-original-noaug"; `variant`
    is the spec's ("p2": the origin's pool stride; "" for none). The origin's float32 ids and replicate 0
    are spelled as they were before precisions, replicates and workloads existed, so the step-time
    history across commits stays one series; another workload's ids start with "<workload>."."""
    base = f"{series}-{device}-s{image_size}" + (f"-{variant}" if variant else "") + f"-b{batch_size}"
    if precision != "float32":
        base += f"-{precision}"
    prefix = "" if workload == "origin" else f"{workload}."
    if kind == "step":
        return f"{prefix}step-{base}" + (f"-r{replicate}" if replicate else "")
    return f"{prefix}acc-{base}-{protocol}-{'aug' if augment else 'noaug'}"


def parity_id(image_size: int, variant: str, precision: str = "float32", workload: str = "origin") -> str:
    return ("" if workload == "origin" else f"{workload}.") + f"parity-s{image_size}" + \
        (f"-{variant}" if variant else "") + ("" if precision == "float32" else f"-{precision}")


def test_name(kind: str, cell_id_: str) -> str:
    """pytest's name of the cell's test, as the benchmark JSON records it."""
    return f"test_{kind}[{cell_id_}]"


def parameter_of(name: str) -> str | None:
    """The parameter of a test name `test_name` made (a run's planned id before it planned record ids)."""
    return name[name.index("[") + 1:-1] if name.endswith("]") and "[" in name else None


def select_expression(cell_id_: str) -> str:
    """A `pytest -k` expression for the cell: its id, whose "~" (a copy's) -k cannot parse, becomes the
    halves around it, both required."""
    return " and ".join(cell_id_.split("~"))


# ---- values ------------------------------------------------------------------------------
def as_dict(v: Any) -> dict:
    """v where it is a dict, else {}."""
    return v if isinstance(v, dict) else {}


def num(v: Any) -> float | None:
    """v as a finite float, else None (booleans are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _typed(v: Any, kind: str) -> Any:
    """v if it has the declared type (int | float | str | bool | list | dict, each optional), else None."""
    if v is None:
        return None
    if "float" in kind:
        return num(v)
    if "int" in kind:
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    for name, t in (("bool", bool), ("str", str), ("list", list), ("dict", dict)):
        if name in kind:
            return v if isinstance(v, t) else None
    return v


# ---- the figures ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Info:
    """A cell's `extra_info`: every key the harness writes, typed. Missing or ill-typed: None."""

    # what the cell is
    workload: str | None = None  # absent for the origin CNN's cells
    kind: str | None = None
    status: str | None = None
    reason: str | None = None
    impl: str | None = None  # the implementation (a copy names its original)
    aa_copy: bool | None = None
    tuned: bool | None = None
    tuned_env: dict | None = None
    replicate: int | None = None  # which worker process (0-based)
    replicates: int | None = None
    command: str | None = None  # the command that measures it again
    backend: str | None = None
    device: str | None = None  # "cpu", or the accelerator's model name once measured
    device_kind: str | None = None  # "cpu" | "gpu"
    batch_size: int | None = None
    precision: str | None = None  # absent in files before bf16: float32
    image_size: int | None = None
    pool_stride: int | None = None
    spec_is_origin: bool | None = None
    data: str | None = None  # "real" | "synthetic"
    data_source: str | None = None
    dataset_fingerprint: str | None = None
    machine_class: str | None = None
    cell_key: str | None = None  # the reuse key
    cell_id: str | None = None
    reused_from: str | None = None  # the interrupted run that measured it
    warnings: list | None = None
    # the worker and its software
    params: int | None = None
    timed_region: str | None = None
    threads: dict | None = None
    platform_version: str | None = None
    imported_versions: dict | None = None
    cells_before_in_process: int | None = None
    # step time (seconds per training step)
    stats_unit: str | None = None
    steps_per_call: int | None = None
    warmup_steps: int | None = None
    step_s_median: float | None = None
    step_s_q1: float | None = None
    step_s_q3: float | None = None
    images_per_s: float | None = None
    round_trip_s: float | None = None
    harness_overhead: float | None = None
    # compile time
    first_step_s: float | None = None
    compile_s: float | None = None  # first step minus steady step
    trace_s: float | None = None
    lower_s: float | None = None
    compile_only_s: float | None = None
    recompiles: int | None = None
    # FLOPs and MFU
    flops_per_step: float | None = None
    flops_source: str | None = None  # "analytic" (older files: "xla")
    flops_analytic: float | None = None  # older files
    flops_xla: float | None = None
    flops_xla_to_analytic: float | None = None
    peak_flops: float | None = None  # the measured matmul rate
    matmul_rate_precision: str | None = None
    matmul_rate_framework: str | None = None
    matmul_rate_method: str | None = None
    matmul_rate_default: float | None = None
    matmul_rate_bf16: float | None = None
    mfu: float | None = None
    mfu_precision: str | None = None
    mfu_rate: float | None = None
    mfu_datasheet: float | None = None
    datasheet_flops: float | None = None
    datasheet_source: str | None = None
    # memory and the operating system
    peak_memory_bytes: float | None = None
    memory_source: str | None = None
    rss_growth_bytes: float | None = None
    framework_rss_bytes: float | None = None
    training_rss_bytes: float | None = None
    device_bytes_in_use: float | None = None
    peak_spans_timed_steps_only: bool | None = None
    page_faults_per_step: float | None = None
    kernel_s_per_step: float | None = None
    busy_cores: float | None = None
    breakdown: dict | None = None  # phase -> seconds per step
    # the epoch as users run it
    user_epoch_s: float | None = None
    user_epoch_steps: int | None = None
    user_images_per_s: float | None = None
    user_loop: str | None = None
    user_overhead: float | None = None
    # accuracy
    protocol: str | None = None
    augment: bool | None = None
    seeds: list | None = None
    epochs: int | None = None
    test_accuracies: list | None = None
    test_accuracy_mean: float | None = None
    test_accuracy_sd: float | None = None
    history: list | None = None
    train_s: float | None = None
    from_cache: bool | None = None
    # parity
    parity: dict | None = None

    @classmethod
    def read(cls, extra: Any) -> Info:
        """The declared fields of a stored `extra_info`, each of its type or None; other keys are ignored."""
        d = as_dict(extra)
        return cls(**{f: _typed(d.get(f), kind) for f, kind in _FIELD_TYPES.items()})

    @staticmethod
    def check(extra: dict) -> dict:
        """`extra` unchanged, after checking that it writes only declared fields (a harness bug otherwise)."""
        unknown = sorted(set(extra) - set(_FIELD_TYPES))
        if unknown:
            raise ValueError(f"extra_info keys not declared in benchmarks.record.Info: {', '.join(unknown)}")
        return extra


_FIELD_TYPES = {f.name: str(t) for f, t in zip(fields(Info), typing.get_type_hints(Info).values())}


# ---- the records -----------------------------------------------------------------------------
def run_file(cell_id_: str, kind: str, status: str, reason: str | None, stats: dict | None, info: dict,
             name: str | None = None) -> dict:
    """A run folder's record of one finished cell (`cells/<id>.json`); `name`: pytest's, where the test's
    parameter is not the cell id (parity's is its precision)."""
    return {"id": cell_id_, "name": name or test_name(kind, cell_id_), "kind": kind, "status": status,
            "reason": reason, "stats": stats, "extra_info": Info.check(info)}


@dataclass
class CellRecord:
    """One cell as read back, with where it came from (machine, file, run, commit, time)."""

    machine: str
    source: str
    id: str
    name: str
    kind: str  # Kind
    status: str  # Status
    reason: str | None
    stats: dict | None
    extra: dict  # the raw extra_info, for figures the declared fields do not cover
    run_id: str | None = None
    commit: str | None = None
    when: str = ""
    info: Info = field(init=False)

    def __post_init__(self):
        self.info = Info.read(self.extra)

    @classmethod
    def from_run_file(cls, d: dict, source: str, fallback_id: str, **origin) -> CellRecord:
        """A cell from a run folder's record `d` (file `source`; `fallback_id` where it names none)."""
        extra = as_dict(d.get("extra_info"))
        cid = str(d.get("id") or d.get("name") or fallback_id)
        return cls(**origin, source=source, id=cid, name=str(d.get("name") or cid),
                   kind=_kind(d.get("kind") or extra.get("kind"), cid, d.get("stats")),
                   status=_status(d.get("status") or extra.get("status")),
                   reason=d.get("reason") or extra.get("reason"),
                   stats=d.get("stats") if isinstance(d.get("stats"), dict) else None, extra=extra)

    @classmethod
    def from_benchmark_entry(cls, b: dict, source: str, **origin) -> CellRecord:
        """A cell from one entry of a pytest-benchmark JSON file's "benchmarks" list."""
        extra = as_dict(b.get("extra_info"))
        name = str(b.get("name") or b.get("fullname") or "?")
        stats = b.get("stats") if isinstance(b.get("stats"), dict) else None
        return cls(**origin, source=source, id=str(extra.get("cell_id") or b.get("fullname") or name), name=name,
                   kind=_kind(extra.get("kind"), name, stats), status=_status(extra.get("status") or ("ok" if stats else None)),
                   reason=extra.get("reason"), stats=stats, extra=extra)

    @classmethod
    def missing(cls, cid: str, source: str, reason: str, **origin) -> CellRecord:
        """A planned cell that has no record."""
        return cls(**origin, source=source, id=cid, name=cid, kind=_kind(None, cid, None), status="missing",
                   reason=reason, stats=None, extra={})

    @property
    def measured_in(self) -> str:
        """The run that measured it: a cell reused from an interrupted run counts as that run's."""
        return str(self.info.reused_from or self.run_id or self.source)

    @property
    def base_impl(self) -> str:
        """The implementation as the result file names it (a copy names its original)."""
        return self.info.impl or "?"

    @property
    def aa_copy(self) -> bool:
        return self.info.aa_copy is True

    @property
    def tuned(self) -> bool:
        return self.info.tuned is True

    @property
    def copy(self) -> bool:
        """A second series of an implementation (A/A or tuned): shown against its original, ranked with no one."""
        return self.aa_copy or self.tuned

    @property
    def impl(self) -> str:
        """The series this cell belongs to (`series_label`)."""
        return series_label(self.base_impl, self.aa_copy, self.tuned)

    @property
    def replicate(self) -> int:
        """Which worker process (0-based) measured this cell; an old cell is replicate 0 of 1."""
        return self.info.replicate or 0

    @property
    def precision(self) -> str:
        """What its layers computed in (results from before the field: float32)."""
        return self.info.precision or "float32"

    @property
    def device(self) -> str:
        return self.info.device or "?"

    @property
    def workload(self) -> str:
        """The model it measures (records of the origin CNN name none)."""
        return self.info.workload or "origin"

    @property
    def config_key(self) -> tuple:
        """What a step cell measures; its replicates share it."""
        i = self.info
        return (self.machine, self.kind, self.device, self.impl, i.image_size, i.pool_stride, i.batch_size,
                self.precision, self.workload)

    @property
    def dedup_key(self) -> tuple:
        return (self.machine, self.name or self.id)

    @property
    def step_s(self) -> float | None:
        return self.step_q("median")

    def step_q(self, which: str) -> float | None:
        """A statistic of one step: recorded per step, else pytest-benchmark's statistic, which is per step
        where `stats_unit` is "step" and per timed call (÷ steps per call) in older files."""
        v = getattr(self.info, f"step_s_{which}", None)
        if v is None and self.stats:
            q = num(self.stats.get(which))
            spc = (self.info.steps_per_call or 1) if self.info.stats_unit != STATS_UNIT else 1
            v = q / spc if q is not None else None
        return v

    @property
    def images_per_s(self) -> float | None:
        v = self.info.images_per_s
        if v is None:
            s, b = self.step_s, self.info.batch_size
            v = b / s if s and b else None
        return v


def is_step_history_entry(info: Any) -> bool:
    """Whether a benchmark entry's extra_info is a finished step cell with per-step stats (the gate's history)."""
    i = Info.read(info)
    return i.kind == "step" and (i.status or "ok") == "ok" and i.stats_unit == STATS_UNIT


def _kind(kind: Any, name: str, stats: Any) -> str:
    if kind in KINDS:
        return kind
    low = (name or "").lower()
    for k in ("parity", "accuracy"):
        if k in low:
            return k
    return "step" if stats or "step" in low else "unknown"


def _status(s: Any) -> str:
    s = str(s or "").lower()
    if s in _OK:
        return "ok"
    if s in _FAILED:
        return "failed"
    return s or "ok"
