"""What the report knows after loading: machines, cells, step-time history, skipped inputs.

Pure data: no file access, no rendering. Result files may lack a key or hold the
wrong shape, so every read of their contents goes through `as_dict` and `num`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


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
    def impl(self) -> str:
        return str(self.x("impl", "?"))

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
        """A statistic of one step: recorded per step, else the per-call statistic ÷ steps per call."""
        v = num(self.extra.get(f"step_s_{which}"))
        if v is None and self.stats:
            q = num(self.stats.get(which))
            spc = num(self.extra.get("steps_per_call")) or 1
            v = q / spc if q is not None else None
        return v

    @property
    def images_per_s(self) -> float | None:
        v = num(self.extra.get("images_per_s"))
        if v is None:
            s, b = self.step_s, num(self.extra.get("batch_size"))
            v = b / s if s and b else None
        return v


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
