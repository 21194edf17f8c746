"""What the report knows after loading: machines, cells, step-time history, skipped inputs.

Pure data: no file access, no rendering. A cell is a `benchmarks.record.CellRecord`, whose typed
`info` reads a result file's figures (missing or ill-typed: None); machine information, which
pytest-benchmark defines, goes through `as_dict`.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from benchmarks.record import SELECT, CellRecord, Info, as_dict, num
from reports.stats import geomean

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


def commands(cells: list[CellRecord]) -> list[str]:
    """The distinct commands recorded with `cells`, less any that another one already runs: pytest's `-k`
    matches substrings, so replicate 0's `-k '<id>'` also runs its replicates `<id>-r1`, `<id>-r2`, ..."""
    found = list(dict.fromkeys(str(c.info.command) for c in cells if c.info.command))
    return [cmd for cmd in found if not any(_runs(other, cmd) for other in found if other != cmd)]


def _runs(cmd: str, other: str) -> bool:
    """Whether `cmd` runs `other`'s cell too: the same command but for a `-k` pattern inside other's."""
    k, o = SELECT.search(cmd), SELECT.search(other)
    return bool(k and o) and k[1] in o[1] and SELECT.sub("", cmd) == SELECT.sub("", other)


@dataclass
class Replicates:
    """One step configuration as measured by its worker processes (one cell each), all from one run.

    Reads like a `CellRecord` (`info` agreed over its processes); `step_s` is the geometric mean of the
    per-process median step times.
    """

    cells: list[CellRecord]

    def __getattr__(self, name: str) -> Any:  # machine, device, impl, base_impl, aa_copy, kind, run_id ...
        if name.startswith("__") or name == "cells":
            raise AttributeError(name)
        return getattr(self.cells[0], name)

    @functools.cached_property
    def info(self) -> Info:
        """Each figure: the value every process agrees on, else the median over the processes that recorded
        a number (some figures, such as the epoch as users run it, only the first process records), else the
        first recorded value."""
        return Info(**{f: _agreed([getattr(c.info, f) for c in self.cells]) for f in Info.__dataclass_fields__})

    @property
    def run(self) -> str:
        """The run its processes belong to (a run folder's id, else the result file)."""
        return self.cells[0].measured_in

    def values(self, key: str) -> list[float]:
        """One value per process: "step_s" (its median step time) or a numeric extra_info figure."""
        vals = [c.step_s if key == "step_s" else num(getattr(c.info, key)) for c in self.cells]
        return [v for v in vals if v is not None]

    @property
    def n(self) -> int:
        """Processes with a step time."""
        return len(self.values("step_s"))

    @property
    def planned(self) -> int:
        """Processes the run planned (`replicates`), at least those found."""
        r = [v for v in (c.info.replicates for c in self.cells) if v is not None]
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
        s, b = self.step_s, self.info.batch_size
        return b / s if s and b else self.cells[0].images_per_s

    @property
    def mfu(self) -> float | None:
        """FLOPs per step ÷ step time ÷ the measured matmul rate of the precision the cell ran at (older
        results: the float32 rate)."""
        i = self.info
        flops, peak, s = i.flops_per_step, i.mfu_rate or i.peak_flops, self.step_s
        return flops / s / peak if flops and peak and s else i.mfu


def _agreed(vals: list) -> Any:
    if all(v == vals[0] for v in vals):
        return vals[0]
    nums = [num(v) for v in vals if num(v) is not None]
    if nums:
        return statistics.median(nums)
    return next((v for v in vals if v is not None), None)


def group_replicates(cells: list[CellRecord]) -> list[Replicates]:
    """Cells that differ only by replicate, each group from its newest run, in order of first appearance."""
    groups: dict[tuple, list[CellRecord]] = defaultdict(list)
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
    workload: str = "origin"


@dataclass
class Skipped:
    path: str
    why: str


@dataclass
class Model:
    machines: dict[str, Machine] = field(default_factory=dict)
    cells: list[CellRecord] = field(default_factory=list)  # latest per (machine, cell), in order of first appearance
    superseded: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)  # {"path", "kind", "machine", "commit", "when", "cells", "note"}
    history: list[HistoryPoint] = field(default_factory=list)
    regressions: list[dict] = field(default_factory=list)
    gate_source: str | None = None
    partial_runs: list[dict] = field(default_factory=list)

    def workloads(self) -> list[str]:
        """The workloads with a cell, the origin first, then in order of first appearance."""
        found = dict.fromkeys(c.workload for c in self.cells)
        return sorted(found, key=lambda w: w != "origin")

    def for_workload(self, name: str) -> Model:
        """This model narrowed to one workload's cells and step-time history."""
        return dataclasses.replace(self, cells=[c for c in self.cells if c.workload == name],
                                   history=[p for p in self.history if p.workload == name])

    def machine_list(self) -> list[Machine]:
        used = {c.machine for c in self.cells}
        return [m for m in self.machines.values() if m.key in used]

    def ok(self, kind: str) -> list[CellRecord]:
        return [c for c in self.cells if c.kind == kind and c.status == "ok"]

    def step_configs(self) -> list[Replicates]:
        """The finished step configurations with a step time, each with its worker processes."""
        return group_replicates([c for c in self.ok("step") if c.step_s is not None])
