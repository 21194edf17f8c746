"""Load every kind of xfbench result into one model, and render the page.

Inputs, each given as a path:

* a run folder ``.xfbench/runs/<run_id>/`` (``run.json`` + ``cells/*.json``);
  planned cells without a file are *missing* (the run was interrupted);
* a pytest-benchmark JSON file (``--benchmark-json`` or its storage folder);
* a folder holding any of the above (searched recursively).

Anything else -- corrupt JSON, the wrong shape -- is *skipped by name*: a warning
on stderr and a line on the page, never silently read as empty.

Results from several machines and commits are merged: a machine is identified
by its host name, CPU and GPUs; when the same cell of the same machine appears
more than once, the most recent result is shown and the older ones feed the
step-time history.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
PUBLISHED_DIR = PACKAGE_DIR / "published"
DEFAULT_OUT = PACKAGE_DIR / "index.html"
TEMPLATE_DIR = PACKAGE_DIR / "templates"

# Implementations in display order; unknown ones are appended alphabetically.
KNOWN_IMPLS = ("flax", "keras-jax", "keras-tf")
# The origin model as it runs: Flax's nn.max_pool without `strides` pools with stride 1.
ORIGIN_SPEC = {
    "filters": [16, 32],
    "kernel_size": 3,
    "pool_window": 2,
    "pool_stride": 1,
    "dense_units": 64,
    "num_classes": 2,
    "channels": 3,
}

_OK = {"ok", "passed", "pass", "success"}
_FAILED = {"failed", "fail", "error", "errored"}


# --------------------------------------------------------------------------- model


def _as_dict(v: Any) -> dict:
    """v where it is a dict, else {}: result files may lack a key or hold the wrong shape."""
    return v if isinstance(v, dict) else {}


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
        return _as_dict(self.info.get("xfbench"))

    @property
    def node(self) -> str:
        return str(self.info.get("node") or "unknown host")

    @property
    def cpu(self) -> str:
        brand = _as_dict(self.info.get("cpu")).get("brand_raw")
        return str(self.xf.get("cpu") or brand or self.info.get("processor") or "unknown CPU")

    @property
    def cpu_count(self) -> Any:
        return _as_dict(self.info.get("cpu")).get("count")

    @property
    def gpus(self) -> list[str]:
        g = self.xf.get("gpus")
        return [str(x) for x in g] if isinstance(g, list) else []

    @property
    def versions(self) -> dict:
        return _as_dict(self.xf.get("versions"))

    @property
    def dataset(self) -> dict:
        return _as_dict(self.xf.get("dataset"))

    @property
    def spec(self) -> dict:
        return _as_dict(self.xf.get("spec"))


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
        v = _num(self.extra.get("step_s_median"))
        if v is None and self.stats:
            med = _num(self.stats.get("median"))
            spc = _num(self.extra.get("steps_per_call")) or 1
            v = med / spc if med is not None else None
        return v

    def step_q(self, which: str) -> float | None:
        v = _num(self.extra.get(f"step_s_{which}"))
        if v is None and self.stats:
            q = _num(self.stats.get(which))
            spc = _num(self.extra.get("steps_per_call")) or 1
            v = q / spc if q is not None else None
        return v

    @property
    def images_per_s(self) -> float | None:
        v = _num(self.extra.get("images_per_s"))
        if v is None:
            s, b = self.step_s, _num(self.extra.get("batch_size"))
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
    cells: list[Cell] = field(default_factory=list)  # latest per (machine, cell)
    superseded: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)  # {"path", "kind", "machine", "commit", "when", "cells"}
    history: list[HistoryPoint] = field(default_factory=list)
    regressions: list[dict] = field(default_factory=list)
    gate_source: str | None = None
    partial_runs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # ---- views used by the template and the plots
    def machine_list(self) -> list[Machine]:
        used = {c.machine for c in self.cells}
        return [m for m in self.machines.values() if m.key in used]

    def ok(self, kind: str) -> list[Cell]:
        return [c for c in self.cells if c.kind == kind and c.status == "ok"]

    def impls(self) -> list[str]:
        seen = {c.impl for c in self.cells if c.impl != "?"}
        seen |= {p.impl for p in self.history}
        return impl_order(seen)


def impl_order(names) -> list[str]:
    names = set(names)
    return [n for n in KNOWN_IMPLS if n in names] + sorted(names - set(KNOWN_IMPLS))


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return f if f == f and f not in (float("inf"), float("-inf")) else None
    return None


def warn(msg: str) -> None:
    print(f"xfbench report: warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- loading


class _BadInput(Exception):
    pass


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _BadInput(f"cannot read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadInput(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def machine_key(info: dict) -> str:
    xf = _as_dict(info.get("xfbench"))
    cpu = _as_dict(info.get("cpu"))
    gpus = xf.get("gpus") if isinstance(xf.get("gpus"), list) else []
    parts = [
        str(info.get("node") or "?"),
        str(xf.get("cpu") or cpu.get("brand_raw") or info.get("processor") or "?"),
        ",".join(sorted(str(g) for g in gpus)),
    ]
    return " | ".join(parts)


class Loader:
    def __init__(self) -> None:
        self.model = Model()
        self._all_cells: list[Cell] = []
        self._seen_files: set[Path] = set()
        self._history_seen: set[tuple] = set()

    # ---- entry points
    def add(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            self.skip(path, "does not exist")
            return
        if path.is_dir():
            if (path / "run.json").exists():
                self.add_run(path)
                return
            found = False
            for run_json in sorted(path.rglob("run.json")):
                found = True
                self.add_run(run_json.parent)
            run_dirs = {p.parent for p in path.rglob("run.json")}
            for f in sorted(path.rglob("*.json")):
                if any(d in f.parents for d in run_dirs):
                    continue
                found = True
                self.add_file(f)
            if not found:
                self.skip(path, "folder holds no run.json and no .json result file")
            return
        self.add_file(path)

    def skip(self, path: Path, why: str) -> None:
        warn(f"skipped {path}: {why}")
        self.model.skipped.append(Skipped(str(path), why))

    def add_file(self, path: Path, for_history_only: bool = False) -> None:
        rp = path.resolve()
        if rp in self._seen_files and not for_history_only:
            return
        try:
            data = _read_json(path)
        except _BadInput as e:
            if rp not in self._seen_files:
                self.skip(path, str(e))
            self._seen_files.add(rp)
            return
        if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
            self._seen_files.add(rp)
            self.add_pytest_benchmark(path, data, for_history_only)
        elif isinstance(data, dict) and "run_id" in data and path.name == "run.json":
            if not for_history_only:
                self.add_run(path.parent)
        elif for_history_only:
            self.skip(path, "not a pytest-benchmark JSON file (no 'benchmarks' list)")
            self._seen_files.add(rp)
        else:
            self._seen_files.add(rp)
            self.skip(
                path,
                "unrecognised shape: neither a pytest-benchmark JSON (with a 'benchmarks' list) "
                "nor a run folder's run.json",
            )

    def machine(self, info: Any, source: str, when: str, commit: str | None) -> Machine:
        info = _as_dict(info)
        key = machine_key(info)
        m = self.model.machines.get(key)
        if m is None:
            m = self.model.machines[key] = Machine(key=key, info=info)
        elif when >= m.latest and info:
            m.info = info  # keep the most recent description
        if when > m.latest:
            m.latest = when
        if source not in m.sources:
            m.sources.append(source)
        if commit and commit not in m.commits:
            m.commits.append(commit)
        return m

    # ---- run folders
    def add_run(self, folder: Path) -> None:
        rp = (folder / "run.json").resolve()
        if rp in self._seen_files:
            return
        self._seen_files.add(rp)
        try:
            run = _read_json(folder / "run.json")
        except _BadInput as e:
            self.skip(folder / "run.json", str(e))
            return
        if not isinstance(run, dict):
            self.skip(folder / "run.json", "run.json is not a JSON object")
            return
        run_id = str(run.get("run_id") or folder.name)
        when = str(run.get("finished") or run.get("started") or "")
        commit = run.get("commit") if isinstance(run.get("commit"), str) else None
        m = self.machine(run.get("machine_info"), str(folder), when, commit)
        m.runs.append(
            {
                "run_id": run_id,
                "started": run.get("started"),
                "finished": run.get("finished"),
                "profile": run.get("profile"),
                "source": str(folder),
            }
        )
        found: dict[str, Cell] = {}
        cells_dir = folder / "cells"
        files = sorted(cells_dir.glob("*.json")) if cells_dir.is_dir() else []
        for f in files:
            self._seen_files.add(f.resolve())
            try:
                d = _read_json(f)
            except _BadInput as e:
                self.skip(f, str(e))
                continue
            if not isinstance(d, dict) or not (d.get("id") or d.get("name")):
                self.skip(f, "not a cell record (a JSON object with 'id' and 'kind')")
                continue
            extra = _as_dict(d.get("extra_info"))
            cid = str(d.get("id") or d.get("name") or f.stem)
            cell = Cell(
                machine=m.key,
                source=str(f),
                id=cid,
                name=str(d.get("name") or cid),
                kind=_kind(d.get("kind") or extra.get("kind"), cid, d.get("stats")),
                status=_status(d.get("status") or extra.get("status")),
                reason=d.get("reason") or extra.get("reason"),
                stats=d.get("stats") if isinstance(d.get("stats"), dict) else None,
                extra=extra,
                run_id=run_id,
                commit=commit,
                when=when,
            )
            found[cid] = cell
            self._all_cells.append(cell)
        planned = run.get("planned") if isinstance(run.get("planned"), list) else []
        missing = [str(p) for p in planned if str(p) not in found]
        interrupted = not run.get("finished")
        for cid in missing:
            self._all_cells.append(
                Cell(
                    machine=m.key,
                    source=str(folder),
                    id=cid,
                    name=cid,
                    kind=_kind(None, cid, None),
                    status="missing",
                    reason=(
                        f"planned in run {run_id}, which was interrupted before this cell finished"
                        if interrupted
                        else f"planned in run {run_id} but no result file was written"
                    ),
                    stats=None,
                    extra={},
                    run_id=run_id,
                    commit=commit,
                    when=when,
                )
            )
        if interrupted or missing:
            self.model.partial_runs.append(
                {
                    "run_id": run_id,
                    "machine": m.key,
                    "planned": len(planned),
                    "done": len(found),
                    "missing": len(missing),
                    "interrupted": interrupted,
                    "source": str(folder),
                }
            )
        self.model.sources.append(
            {"path": str(folder), "kind": "run folder", "machine": m.key, "commit": commit,
             "when": when, "cells": len(found), "note": "interrupted" if interrupted else ""}
        )

    # ---- pytest-benchmark JSON
    def add_pytest_benchmark(self, path: Path, data: dict, for_history_only: bool) -> None:
        ci = _as_dict(data.get("commit_info"))
        commit = ci.get("id") if isinstance(ci.get("id"), str) else None
        when = str(data.get("datetime") or ci.get("time") or "")
        info = _as_dict(data.get("machine_info"))
        if for_history_only:
            key = machine_key(info)
            if key not in self.model.machines:
                self.model.machines[key] = Machine(key=key, info=info)
            m = self.model.machines[key]
        else:
            m = self.machine(info, str(path), when, commit)
        n = 0
        for b in data["benchmarks"]:
            if not isinstance(b, dict):
                continue
            extra = _as_dict(b.get("extra_info"))
            name = str(b.get("name") or b.get("fullname") or "?")
            stats = b.get("stats") if isinstance(b.get("stats"), dict) else None
            cell = Cell(
                machine=m.key,
                source=str(path),
                id=str(extra.get("cell_id") or b.get("fullname") or name),
                name=name,
                kind=_kind(extra.get("kind"), name, stats),
                status=_status(extra.get("status") or ("ok" if stats else None)),
                reason=extra.get("reason"),
                stats=stats,
                extra=extra,
                commit=commit,
                when=when,
            )
            n += 1
            self._add_history(cell, ci, str(path))
            if not for_history_only:
                self._all_cells.append(cell)
        if not for_history_only:
            self.model.sources.append(
                {"path": str(path), "kind": "pytest-benchmark JSON", "machine": m.key, "commit": commit,
                 "when": when, "cells": n, "note": "dirty tree" if ci.get("dirty") else ""}
            )

    def _add_history(self, c: Cell, commit_info: dict, source: str) -> None:
        if c.kind != "step" or c.status != "ok" or c.step_s is None:
            return
        commit = str(commit_info.get("id") or "")
        key = (c.machine, c.name, commit, c.when)
        if key in self._history_seen:
            return
        self._history_seen.add(key)
        self.model.history.append(
            HistoryPoint(
                machine=c.machine,
                device=c.device,
                impl=c.impl,
                batch_size=c.extra.get("batch_size"),
                image_size=c.extra.get("image_size"),
                pool_stride=c.extra.get("pool_stride"),
                commit=commit or "(no commit)",
                commit_time=str(commit_info.get("time") or c.when or ""),
                when=c.when,
                dirty=bool(commit_info.get("dirty")),
                step_s=c.step_s,
                q1=c.step_q("q1"),
                q3=c.step_q("q3"),
                source=source,
            )
        )

    def add_history_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            if folder.exists():
                self.skip(folder, "history path is not a folder")
            return
        for f in sorted(folder.rglob("*.json")):
            self.add_file(f, for_history_only=True)

    def add_gate(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            d = _read_json(path)
        except _BadInput as e:
            self.skip(path, str(e))
            return
        regs = d.get("regressions") if isinstance(d, dict) else None
        if not isinstance(regs, list):
            self.skip(path, "gate file has no 'regressions' list")
            return
        self.model.regressions = [r for r in regs if isinstance(r, dict)]
        self.model.gate_source = str(path)

    # ---- finish
    def finish(self) -> Model:
        model = self.model
        latest: dict[tuple, Cell] = {}
        for c in self._all_cells:
            k = c.dedup_key
            old = latest.get(k)
            if old is None:
                latest[k] = c
                continue
            model.superseded += 1
            # a finished result beats a "missing" placeholder; otherwise the most recent wins
            if (old.status == "missing") != (c.status == "missing"):
                if old.status == "missing":
                    latest[k] = c
            elif c.when >= old.when:
                latest[k] = c
        model.cells = list(latest.values())
        _label_machines(model)
        return model


def _kind(kind: Any, name: str, stats: Any) -> str:
    if kind in ("step", "accuracy", "parity"):
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
    if s == "skipped":
        return "skipped"
    if s == "missing":
        return "missing"
    return "ok" if not s else s


def _label_machines(model: Model) -> None:
    """Short, unique labels: host name, plus the GPU (or CPU) where hosts collide."""
    by_node: dict[str, list[Machine]] = defaultdict(list)
    for m in model.machines.values():
        by_node[m.node].append(m)
    for node, ms in by_node.items():
        for m in ms:
            hw = ", ".join(m.gpus) if m.gpus else m.cpu
            m.label = node if len(ms) == 1 else f"{node} ({hw})"
    seen: dict[str, int] = defaultdict(int)
    for m in model.machines.values():
        seen[m.label] += 1
        if seen[m.label] > 1:
            m.label = f"{m.label} #{seen[m.label]}"


def load(
    inputs: list[Path],
    history_dir: Path | None = None,
    include_published: bool = True,
    gate_file: Path | None = None,
) -> Model:
    loader = Loader()
    for p in inputs:
        loader.add(Path(p))
    if include_published and PUBLISHED_DIR.is_dir():
        for f in sorted(PUBLISHED_DIR.glob("*.json")):
            loader.add_file(f)
    # every pytest-benchmark input also feeds the history
    if history_dir is not None:
        loader.add_history_dir(Path(history_dir))
    gates = [gate_file] if gate_file else [Path(".xfbench/gate/last.json")]
    if history_dir is not None and gate_file is None:
        gates.append(Path(history_dir).resolve().parent / ".xfbench" / "gate" / "last.json")
    for g in gates:
        if g.is_file():
            loader.add_gate(g)
            break
    return loader.finish()


# --------------------------------------------------------------------------- views


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _config_label(image_size, pool_stride) -> str:
    parts = []
    if image_size is not None:
        parts.append(f"{image_size}×{image_size}")
    if pool_stride is not None:
        parts.append(f"pool stride {pool_stride}" + (" (origin)" if pool_stride == 1 else ""))
    return ", ".join(parts) or "unknown config"


def device_label(model: Model, machine_key_: str, device: str) -> str:
    m = model.machines.get(machine_key_)
    dev = device
    if device.lower() == "cpu" and m is not None:
        dev = f"CPU ({m.cpu})"
    return dev


def verdict(model: Model) -> list[dict]:
    """One block per (machine, device): speed ranking per config, compile ranking, accuracy."""
    blocks: dict[tuple, dict] = {}

    def block(c: Cell) -> dict:
        k = (c.machine, c.device)
        if k not in blocks:
            m = model.machines[c.machine]
            blocks[k] = {
                "machine": m.label,
                "machine_key": c.machine,
                "device": c.device,
                "device_label": device_label(model, c.machine, c.device),
                "speed": [],
                "compile": [],
                "accuracy": [],
                "headline": None,
                "synthetic_step": False,
                "acc_table": [],
            }
        return blocks[k]

    # speed: group by config and batch size
    groups: dict[tuple, dict[str, Cell]] = defaultdict(dict)
    for c in model.ok("step"):
        if c.step_s is None:
            continue
        b = block(c)
        if c.x("data") == "synthetic":
            b["synthetic_step"] = True
        groups[(c.machine, c.device, c.x("image_size"), c.x("pool_stride"), c.x("batch_size"))][c.impl] = c
    wins: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (mk, dev, size, stride, bs), impls in sorted(groups.items(), key=lambda kv: _sortkey(kv[0])):
        b = blocks[(mk, dev)]
        best = min(impls.values(), key=lambda c: c.step_s)
        rows = []
        for name in impl_order(impls):
            c = impls[name]
            ratio = c.step_s / best.step_s
            rows.append(
                {
                    "impl": name,
                    "step_s": c.step_s,
                    "q1": c.step_q("q1"),
                    "q3": c.step_q("q3"),
                    "images_per_s": c.images_per_s,
                    "ratio": ratio,
                    "best": c is best,
                    "mfu": _num(c.x("mfu")),
                    "recompiles": c.x("recompiles"),
                }
            )
            wins[(mk, dev)][name].append(ratio)
        b["speed"].append(
            {"config": _config_label(size, stride), "batch_size": bs, "rows": rows, "fastest": best.impl,
             "by_impl": {r["impl"]: r for r in rows}}
        )
    for k, per_impl in wins.items():
        # headline: geometric mean of the ratio to the fastest, over every config and batch size
        gm = {
            name: (statistics.geometric_mean(rs) if rs else None) for name, rs in per_impl.items()
        }
        order = sorted(gm, key=lambda n: gm[n])
        blocks[k]["headline"] = [
            {"impl": n, "ratio": gm[n] / gm[order[0]], "n": len(per_impl[n])} for n in order
        ]

    # compile ranking: median over the cells of this device of each figure
    comp: dict[tuple, dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for c in model.ok("step"):
        block(c)
        comp[(c.machine, c.device)][c.impl].append(c)
    for k, per_impl in comp.items():
        rows = []
        for name, cs in per_impl.items():
            rows.append(
                {
                    "impl": name,
                    "compile_s": _median(_num(c.x("compile_s")) for c in cs),
                    "first_step_s": _median(_num(c.x("first_step_s")) for c in cs),
                    "trace_s": _median(_num(c.x("trace_s")) for c in cs),
                    "lower_s": _median(_num(c.x("lower_s")) for c in cs),
                    "compile_only_s": _median(_num(c.x("compile_only_s")) for c in cs),
                    "n": len(cs),
                }
            )
        rows.sort(key=lambda r: (r["compile_s"] is None, r["compile_s"] or 0))
        fastest = next((r["compile_s"] for r in rows if r["compile_s"]), None)
        for r in rows:
            r["ratio"] = r["compile_s"] / fastest if fastest and r["compile_s"] else None
        blocks[k]["compile"] = rows

    # accuracy
    for c in model.ok("accuracy"):
        b = block(c)
        accs = [a for a in (c.x("test_accuracies") or []) if _num(a) is not None]
        b["accuracy"].append(
            {
                "impl": c.impl,
                "protocol": c.x("protocol", "?"),
                "augment": c.x("augment"),
                "epochs": c.x("epochs"),
                "seeds": c.x("seeds") or [],
                "mean": _num(c.x("test_accuracy_mean")),
                "sd": _num(c.x("test_accuracy_sd")),
                "min": min(accs) if accs else None,
                "max": max(accs) if accs else None,
                "from_cache": bool(c.x("from_cache", False)),
                "train_s": _num(c.x("train_s")),
                "data": c.x("data"),
                "config": _config_label(c.x("image_size"), c.x("pool_stride")),
                "batch_size": c.x("batch_size"),
            }
        )
    for b in blocks.values():
        # pivot: one row per condition (config, protocol, augmentation), one column per implementation
        conds: dict[tuple, dict] = {}
        multi_cfg = len({r["config"] for r in b["accuracy"]}) > 1
        for r in b["accuracy"]:
            k = (r["config"], str(r["protocol"]), bool(r["augment"]))
            if k not in conds:
                label = f"{r['protocol']} split, {'augmented' if r['augment'] else 'no augmentation'}"
                conds[k] = {"label": label, "short": f"{r['protocol']}{' + aug' if r['augment'] else ''}", "config": r["config"] if multi_cfg else "", "by_impl": {},
                            "epochs": r["epochs"], "seeds": len(r["seeds"])}
            conds[k]["by_impl"][r["impl"]] = r
        for c in conds.values():
            means = {i: r["mean"] for i, r in c["by_impl"].items() if r["mean"] is not None}
            c["spread"] = (max(means.values()) - min(means.values())) if len(means) > 1 else None
        b["acc_table"] = [conds[k] for k in sorted(conds, key=lambda k: (k[0], k[1] != "original", k[2]))]
        b["accuracy"].sort(
            key=lambda r: (str(r["config"]), str(r["protocol"]), bool(r["augment"]),
                           impl_order([r["impl"], *KNOWN_IMPLS]).index(r["impl"]))
        )
    return sorted(blocks.values(), key=lambda b: (b["machine"], b["device"].lower() != "cpu", b["device"]))


def _sortkey(t: Any) -> tuple:
    """Sort key for a scalar or a tuple mixing numbers, strings and None."""
    if not isinstance(t, tuple):
        t = (t,)
    return tuple((0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x)) for x in t)


def identity(model: Model) -> dict:
    """Parity tables per machine, and what the spec in use is."""
    parity = []
    for c in model.cells:
        if c.kind != "parity":
            continue
        p = _as_dict(c.x("parity"))
        impls = _as_dict(p.get("impls"))
        cols: list[str] = []
        for d in impls.values():
            if isinstance(d, dict):
                for k in d:
                    if k != "params" and k not in cols and _scalar(d[k]):
                        cols.append(k)
        rows = []
        for name in impl_order(impls):
            d = _as_dict(impls[name])
            rows.append({"impl": name, "params": d.get("params"), "values": [d.get(k) for k in cols]})
        params = {r["params"] for r in rows if r["params"] is not None}
        parity.append(
            {
                "machine": model.machines[c.machine].label,
                "status": c.status,
                "reason": c.reason,
                "spec": p.get("spec") if isinstance(p.get("spec"), dict) else None,
                "cols": cols,
                "rows": rows,
                "bounds": p.get("bounds") if isinstance(p.get("bounds"), dict) else None,
                "same_params": len(params) == 1 if params else None,
                "name": c.name,
            }
        )
    specs = []
    for m in model.machine_list():
        if m.spec or "spec_is_origin" in m.xf:
            spec = m.spec
            is_origin = m.xf.get("spec_is_origin")
            if is_origin is None and spec:
                is_origin = all(spec.get(k) == v for k, v in ORIGIN_SPEC.items() if k in spec)
            strides = sorted({c.x("pool_stride") for c in model.cells
                              if c.machine == m.key and c.x("pool_stride") is not None}, key=str)
            specs.append({"machine": m.label, "spec": spec, "is_origin": is_origin, "strides": strides})
    # strides actually measured in cells (a profile may run both)
    strides = sorted({c.x("pool_stride") for c in model.cells if c.x("pool_stride") is not None}, key=str)
    return {"parity": parity, "specs": specs, "strides_measured": strides}


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def data_view(model: Model) -> list[dict]:
    """One row per dataset each machine used (step cells may run on other data than accuracy cells)."""
    rows = []
    for m in model.machine_list():
        datasets = m.xf.get("datasets") if isinstance(m.xf.get("datasets"), list) else [m.dataset]
        cells = [c for c in model.cells if c.machine == m.key]
        for d in (d for d in datasets if isinstance(d, dict)):
            src = str(d.get("source") or "unknown")
            used_by = sorted({c.kind for c in cells if c.x("dataset_fingerprint") == d.get("fingerprint")})
            plain = {
                "folder": "REAL data, read from a local folder",
                "tfds": "REAL data, from TensorFlow Datasets",
                "synthetic": "SYNTHETIC data: a deterministic stand-in, NOT Horses or Humans",
            }.get(src, f"unknown source ({src})")
            splits = _as_dict(d.get("splits"))
            split_rows = []
            for split, counts in splits.items():
                if isinstance(counts, dict):
                    total = sum(v for v in counts.values() if isinstance(v, int))
                    split_rows.append({"split": split, "counts": counts, "total": total})
            rows.append(
                {
                    "machine": m.label,
                    "source": src,
                    "plain": plain,
                    "synthetic": src == "synthetic",
                    # the loud banner: accuracies measured on synthetic data
                    "synthetic_accuracy": src == "synthetic" and (not used_by or "accuracy" in used_by),
                    "detail": d.get("source_detail"),
                    "protocol": d.get("protocol"),
                    "image_size": d.get("image_size"),
                    "fingerprint": d.get("fingerprint"),
                    "splits": split_rows,
                    "used_by": used_by,
                }
            )
    fps: dict[tuple, set] = {}
    for r in rows:
        if r["fingerprint"] and (not r["used_by"] or "accuracy" in r["used_by"]):
            fps.setdefault((r["protocol"], r["image_size"]), set()).add(r["fingerprint"])
    return rows, any(len(v) > 1 for v in fps.values())


def environment(model: Model) -> dict:
    ms = model.machine_list()
    keys = ["jax", "jaxlib", "flax", "optax", "keras", "tensorflow", "tensorflow_datasets"]
    for m in ms:
        for k in m.versions:
            if k not in keys:
                keys.append(k)
    rows = [
        ("Host", [m.node for m in ms]),
        ("Machine class", [m.xf.get("machine_class") for m in ms]),
        ("CPU", [m.cpu for m in ms]),
        ("CPU cores", [m.cpu_count for m in ms]),
        ("GPUs", [", ".join(m.gpus) if m.gpus else "none" for m in ms]),
        ("Python", [m.info.get("python_version") for m in ms]),
        ("System", [" ".join(str(x) for x in (m.info.get("system"), m.info.get("release")) if x) or None for m in ms]),
    ]
    rows += [(k, [m.versions.get(k) for m in ms]) for k in keys]
    rows += [
        ("XLA_FLAGS", [m.xf.get("xla_flags") if m.xf.get("xla_flags") else "(none)" if m.xf else None for m in ms]),
        ("Profiles", [", ".join(sorted({str(r.get("profile")) for r in m.runs if r.get("profile")}
                                       | ({str(m.xf["profile"])} if m.xf.get("profile") else set()))) or None
                      for m in ms]),
        ("Commits", [", ".join(c[:10] for c in m.commits) or None for m in ms]),
        ("Runs", [", ".join(f"{r['run_id']}" + ("" if r.get("finished") else " (interrupted)") for r in m.runs) or None for m in ms]),
        ("Results from", [m.latest or None for m in ms]),
    ]
    return {"machines": [m.label for m in ms], "rows": rows}


def problems(model: Model) -> list[dict]:
    rows = []
    order = {"failed": 0, "missing": 1, "warning": 2, "skipped": 3}
    for c in model.cells:
        warnings = c.x("warnings") or []
        if c.status == "ok" and not warnings:
            continue
        rows.append(
            {
                "machine": model.machines[c.machine].label,
                "status": c.status if c.status != "ok" else "warning",
                "kind": c.kind,
                "cell": c.name if c.name != c.id else c.id,
                "impl": c.x("impl"),
                "device": c.x("device"),
                "reason": c.reason or "; ".join(warnings) or "(no reason given)",
                "run": c.run_id,
            }
        )
    rows.sort(key=lambda r: (order.get(r["status"], 4), r["machine"], r["cell"]))
    return rows


# --------------------------------------------------------------------------- render


def render(model: Model, title: str = "xfbench report", figures: dict | None = None) -> str:
    import jinja2

    from reports import plots

    t0 = time.perf_counter()
    if figures is None:
        figures = plots.all_figures(model)
    t_plots = time.perf_counter() - t0
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        dur=fmt_duration, num=fmt_num, pct=fmt_pct, sci=fmt_sci, bytes=fmt_bytes, ratio=fmt_ratio
    )
    data_rows, fp_mismatch = data_view(model)
    counts = defaultdict(int)
    for c in model.cells:
        counts[c.status] += 1
    ctx = {
        "title": title,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "model": model,
        "machines": model.machine_list(),
        "verdict": verdict(model),
        "identity": identity(model),
        "data": data_rows,
        "fp_mismatch": fp_mismatch,
        "env": environment(model),
        "problems": problems(model),
        "figures": figures,
        "colors": plots.impl_colors(model.impls()),
        "impls": model.impls(),
        "counts": dict(counts),
        "plot_seconds": t_plots,
        "origin_spec": ORIGIN_SPEC,
    }
    return env.get_template("index.html.j2").render(**ctx)


def write_atomic(out: Path, text: str) -> None:
    from benchmarks.store import write_atomic as write_bytes_atomic

    try:
        write_bytes_atomic(Path(out), text.encode("utf-8"))
    except OSError as e:
        raise ReportError(f"cannot write the report to {out}: {e.strerror or e}") from None


class ReportError(Exception):
    """A report that cannot be built or written; the message names the path."""


def build_report(
    inputs: list[Path],
    out: Path = DEFAULT_OUT,
    history_dir: Path | None = None,
    include_published: bool = True,
    gate_file: Path | None = None,
) -> Path:
    """Load `inputs` (+ published results), render, write `out` atomically; return `out`.

    Raises ReportError (naming the path) when the output cannot be written.
    """
    model = load(list(inputs), history_dir=history_dir, include_published=include_published,
                 gate_file=gate_file)
    html = render(model)
    out = Path(out)
    write_atomic(out, html)
    return out


# --------------------------------------------------------------------------- formatting


def fmt_duration(v: Any) -> str:
    v = _num(v)
    if v is None:
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f} s"
    if a >= 1:
        return f"{v:.2f} s"
    if a >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} µs"


def fmt_num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    n = _num(v)
    if n is None:
        return "–" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if abs(n) >= 1000:
        return f"{n:,.0f}"
    return f"{n:.{digits}g}"


def fmt_pct(v: Any, digits: int = 1) -> str:
    n = _num(v)
    return "–" if n is None else f"{n * 100:.{digits}f}%"


def fmt_sci(v: Any) -> str:
    n = _num(v)
    if n is None:
        return "–" if v is None else str(v)
    if n == 0:
        return "0"
    return f"{n:.2g}" if 1e-3 <= abs(n) < 1e4 else f"{n:.1e}"


def fmt_ratio(v: Any) -> str:
    n = _num(v)
    return "–" if n is None else f"×{n:.2f}"


def fmt_bytes(v: Any) -> str:
    n = _num(v)
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(v)
