"""What the report knows after loading: machines, cells, step-time history, skipped inputs.

Pure data: no file access, no rendering. Result files may lack a key or hold the
wrong shape, so every read of their contents goes through `as_dict` and `num`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from reports.stats import geomean

AA_SUFFIX = " (A/A copy)"  # the series name of an A/A control: an identical second copy of an implementation
TUNED_SUFFIX = " (tuned)"  # the series name of a copy run with the tuned settings (`--xf-tuned`)
SELECT = re.compile(r" -k '([^']*)'")  # how a recorded command selects its cell (the harness's `reproduce`)


def as_dict(v: Any) -> dict:
    """v where it is a dict, else {}."""
    return v if isinstance(v, dict) else {}


def num(v: Any) -> float | None:
    """v as a finite float, else None (booleans are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass
class Machine:
    key: str
    info: dict
    label: str = ""
    sources: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # {"run_id", "started", "finished", "profile", "source"}
    latest: str = ""  # most recent timestamp seen for this machine

    @property
    def xf(self) -> dict:
        return as_dict(self.info.get("xfbench"))

    @property
    def node(self) -> str:
        return str(self.info.get("node") or "unknown host")

    @property
    def cpu(self) -> str:
        brand = as_dict(self.info.get("cpu")).get("brand_raw")
        return str(self.xf.get("cpu") or brand or self.info.get("processor") or "unknown CPU")

    @property
    def cpu_count(self) -> Any:
        return as_dict(self.info.get("cpu")).get("count")

    @property
    def gpus(self) -> list[str]:
        g = self.xf.get("gpus")
        return [str(x) for x in g] if isinstance(g, list) else []

    @property
    def versions(self) -> dict:
        return as_dict(self.xf.get("versions"))

    @property
    def dataset(self) -> dict:
        return as_dict(self.xf.get("dataset"))

    @property
    def spec(self) -> dict:
        return as_dict(self.xf.get("spec"))


@dataclass
class Cell:
    machine: str  # Machine.key
    source: str
    id: str
    name: str
    kind: str
    status: str  # ok | failed | skipped | missing
    reason: str | None
    stats: dict | None
    extra: dict
    run_id: str | None = None
    commit: str | None = None
    when: str = ""

    def x(self, key: str, default: Any = None) -> Any:
        v = self.extra.get(key)
        return default if v is None else v

    @property
    def measured_in(self) -> str:
        """The run that measured it: a cell reused from an interrupted run counts as that run's."""
        return str(self.extra.get("reused_from") or self.run_id or self.source)

    @property
    def base_impl(self) -> str:
        """The implementation as the result file names it (an A/A copy names its original)."""
        return str(self.x("impl", "?"))

    @property
    def aa_copy(self) -> bool:
        return self.extra.get("aa_copy") is True

    @property
    def tuned(self) -> bool:
        return self.extra.get("tuned") is True

    @property
    def copy(self) -> bool:
        """A second series of an implementation (A/A or tuned): shown against its original, ranked with no one."""
        return self.aa_copy or self.tuned

    @property
    def impl(self) -> str:
        """The series this cell belongs to: its implementation, "<impl> (A/A copy)" for an A/A control,
        "<impl> (tuned)" for the tuned copy."""
        return self.base_impl + (AA_SUFFIX if self.aa_copy else TUNED_SUFFIX if self.tuned else "")

    @property
    def replicate(self) -> int:
        """Which worker process (0-based) measured this cell; an old cell is replicate 0 of 1."""
        v = self.extra.get("replicate")
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    @property
    def config_key(self) -> tuple:
        """What a step cell measures; its replicates share it."""
        return (self.machine, self.kind, self.device, self.impl, self.x("image_size"), self.x("pool_stride"),
                self.x("batch_size"), self.precision)

    @property
    def precision(self) -> str:
        """What its layers computed in (results from before the field: float32)."""
        return str(self.x("precision", "float32"))

    @property
    def device(self) -> str:
        return str(self.x("device", "?"))

    @property
    def dedup_key(self) -> tuple:
        return (self.machine, self.name or self.id)

    @property
    def step_s(self) -> float | None:
        return self.step_q("median")

    def step_q(self, which: str) -> float | None:
        """A statistic of one step: recorded per step, else pytest-benchmark's statistic, which is per step
        where `stats_unit` is "step" and per timed call (÷ steps per call) in older files."""
        v = num(self.extra.get(f"step_s_{which}"))
        if v is None and self.stats:
            q = num(self.stats.get(which))
            per_call = self.extra.get("stats_unit") != "step"
            spc = (num(self.extra.get("steps_per_call")) or 1) if per_call else 1
            v = q / spc if q is not None else None
        return v

    @property
    def images_per_s(self) -> float | None:
        v = num(self.extra.get("images_per_s"))
        if v is None:
            s, b = self.step_s, num(self.extra.get("batch_size"))
            v = b / s if s and b else None
        return v


def commands(cells: list[Cell]) -> list[str]:
    """The distinct commands recorded with `cells`, less any that another one already runs: pytest's `-k`
    matches substrings, so replicate 0's `-k '<id>'` also runs its replicates `<id>-r1`, `<id>-r2`, ..."""
    found = list(dict.fromkeys(str(c.x("command")) for c in cells if c.x("command")))
    return [cmd for cmd in found if not any(_runs(other, cmd) for other in found if other != cmd)]


def _runs(cmd: str, other: str) -> bool:
    """Whether `cmd` runs `other`'s cell too: the same command but for a `-k` pattern inside other's."""
    k, o = SELECT.search(cmd), SELECT.search(other)
    return bool(k and o) and k[1] in o[1] and SELECT.sub("", cmd) == SELECT.sub("", other)


@dataclass
class Replicates:
    """One step configuration as measured by its worker processes (one cell each), all from one run.

    Reads like a Cell: `x(key)` is the value every process agrees on, else the median over the processes
    that recorded a numeric figure (else the first recorded value); `step_s` is the geometric mean of the
    per-process median step times.
    """

    cells: list[Cell]

    def __getattr__(self, name: str) -> Any:  # machine, device, impl, base_impl, aa_copy, kind, run_id ...
        if name.startswith("__") or name == "cells":
            raise AttributeError(name)
        return getattr(self.cells[0], name)

    def x(self, key: str, default: Any = None) -> Any:
        vals = [c.x(key) for c in self.cells]
        if all(v == vals[0] for v in vals):
            return default if vals[0] is None else vals[0]
        nums = [num(v) for v in vals if num(v) is not None]
        if nums:  # some figures (XLA's count, the epoch as users run it) only the first process records
            return statistics.median(nums)
        return next((v for v in vals if v is not None), default)

    @property
    def run(self) -> str:
        """The run its processes belong to (a run folder's id, else the result file)."""
        return self.cells[0].measured_in

    def values(self, key: str) -> list[float]:
        """One value per process: "step_s" (its median step time) or a numeric extra_info figure."""
        vals = [c.step_s if key == "step_s" else num(c.x(key)) for c in self.cells]
        return [v for v in vals if v is not None]

    @property
    def n(self) -> int:
        """Processes with a step time."""
        return len(self.values("step_s"))

    @property
    def planned(self) -> int:
        """Processes the run planned (`replicates`), at least those found."""
        r = [v for v in (c.extra.get("replicates") for c in self.cells) if isinstance(v, int)]
        return max(r + [len(self.cells)])

    @property
    def step_s(self) -> float | None:
        return geomean(self.values("step_s"))

    def step_q(self, which: str) -> float | None:
        """With one process, its quartile of step time; with several, the lowest/highest process median."""
        if len(self.cells) == 1:
            return self.cells[0].step_q(which)
        vals = self.values("step_s")
        return (min(vals) if which == "q1" else max(vals)) if vals else None

    @property
    def spread(self) -> str:
        return "IQR within the process" if len(self.cells) == 1 else f"range over {self.n} processes"

    @property
    def images_per_s(self) -> float | None:
        s, b = self.step_s, num(self.x("batch_size"))
        return b / s if s and b else self.cells[0].images_per_s

    @property
    def mfu(self) -> float | None:
        """FLOPs per step ÷ step time ÷ the measured matmul rate of the precision the cell ran at (older
        results: the float32 rate)."""
        flops, peak, s = num(self.x("flops_per_step")), num(self.x("mfu_rate")) or num(self.x("peak_flops")), self.step_s
        return flops / s / peak if flops and peak and s else num(self.x("mfu"))


def group_replicates(cells: list[Cell]) -> list[Replicates]:
    """Cells that differ only by replicate, each group from its newest run, in order of first appearance."""
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for c in cells:
        groups[c.config_key].append(c)
    out = []
    for cs in groups.values():
        newest = max(cs, key=lambda c: c.when)
        same = [c for c in cs if c.measured_in == newest.measured_in]
        out.append(Replicates(sorted(same, key=lambda c: c.replicate)))
    return out


@dataclass
class HistoryPoint:
    machine: str
    device: str
    impl: str
    batch_size: Any
    image_size: Any
    pool_stride: Any
    commit: str
    commit_time: str
    when: str
    dirty: bool
    step_s: float
    q1: float | None
    q3: float | None
    source: str


@dataclass
class Skipped:
    path: str
    why: str


@dataclass
class Model:
    machines: dict[str, Machine] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)  # latest per (machine, cell), in order of first appearance
    superseded: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)  # {"path", "kind", "machine", "commit", "when", "cells", "note"}
    history: list[HistoryPoint] = field(default_factory=list)
    regressions: list[dict] = field(default_factory=list)
    gate_source: str | None = None
    partial_runs: list[dict] = field(default_factory=list)

    def machine_list(self) -> list[Machine]:
        used = {c.machine for c in self.cells}
        return [m for m in self.machines.values() if m.key in used]

    def ok(self, kind: str) -> list[Cell]:
        return [c for c in self.cells if c.kind == kind and c.status == "ok"]

    def step_configs(self) -> list[Replicates]:
        """The finished step configurations with a step time, each with its worker processes."""
        return group_replicates([c for c in self.ok("step") if c.step_s is not None])
