"""Read every kind of xfbench result into one `Model`.

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
step-time history. Cells keep the order they first appear in (a run folder's in
the order the run planned them), which is the order the page lists
implementations in.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from reports.files import ResultFileError, read_json
from benchmarks.record import CellRecord, as_dict, parameter_of
from reports.model import HistoryPoint, Machine, Model, Skipped

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
GATE_FILE = Path(".xfbench/gate/last.json")  # the gate's last verdict, relative to a checkout



def warn(msg: str) -> None:
    print(f"xfbench report: warning: {msg}", file=sys.stderr)


def machine_key(info: dict) -> str:
    xf = as_dict(info.get("xfbench"))
    cpu = as_dict(info.get("cpu"))
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
        self._all_cells: list[CellRecord] = []
        self._seen_files: set[Path] = set()
        self._history_seen: set[tuple] = set()

    # ---- entry points
    def add(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            self.skip(path, "does not exist")
        elif not path.is_dir():
            self.add_file(path)
        elif (path / "run.json").exists():
            self.add_run(path)
        else:
            self._add_folder(path)

    def _add_folder(self, path: Path) -> None:
        run_dirs = [run_json.parent for run_json in sorted(path.rglob("run.json"))]
        for run_dir in run_dirs:
            self.add_run(run_dir)
        files = [f for f in sorted(path.rglob("*.json")) if not any(d in f.parents for d in run_dirs)]
        for f in files:
            self.add_file(f)
        if not run_dirs and not files:
            self.skip(path, "folder holds no run.json and no .json result file")

    def skip(self, path: Path, why: str) -> None:
        warn(f"skipped {path}: {why}")
        self.model.skipped.append(Skipped(str(path), why))

    def add_file(self, path: Path, for_history_only: bool = False) -> None:
        rp = path.resolve()
        if rp in self._seen_files and not for_history_only:
            return
        try:
            data = read_json(path)
        except ResultFileError as e:
            if rp not in self._seen_files:
                self.skip(path, e.why)
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
        info = as_dict(info)
        key = machine_key(info)
        m = self.model.machines.get(key)
        if m is None:
            m = self.model.machines[key] = Machine(key=key, info=info)
        elif when >= m.latest and info:
            m.info = info  # keep the most recent description
        m.latest = max(m.latest, when)
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
            run = read_json(folder / "run.json")
        except ResultFileError as e:
            self.skip(folder / "run.json", e.why)
            return
        if not isinstance(run, dict):
            self.skip(folder / "run.json", "run.json is not a JSON object")
            return
        run_id = str(run.get("run_id") or folder.name)
        when = str(run.get("finished") or run.get("started") or "")
        commit = run.get("commit") if isinstance(run.get("commit"), str) else None
        m = self.machine(run.get("machine_info"), str(folder), when, commit)
        m.runs.append({"run_id": run_id, "started": run.get("started"), "finished": run.get("finished"),
                       "profile": run.get("profile"), "source": str(folder)})
        origin = {"machine": m.key, "run_id": run_id, "commit": commit, "when": when}
        planned = [str(p) for p in run.get("planned")] if isinstance(run.get("planned"), list) else []
        cells = self._run_cells(folder, origin)
        rank = {cid: i for i, cid in reversed(list(enumerate(planned)))}  # a repeated id ranks first
        cells.sort(key=lambda c: rank.get(c.id, len(planned)))  # planned order; unplanned last, by file
        found = {c.id for c in cells}
        parameters = {parameter_of(c.name) for c in cells}  # what runs planned before they planned record ids
        missing = [cid for cid in planned if cid not in found and cid not in parameters]
        interrupted = not run.get("finished")
        self._all_cells += cells
        self._all_cells += [_missing_cell(cid, folder, origin, interrupted) for cid in missing]
        if interrupted or missing:
            self.model.partial_runs.append(
                {"run_id": run_id, "machine": m.key, "planned": len(planned), "done": len(found),
                 "missing": len(missing), "interrupted": interrupted, "source": str(folder)}
            )
        self.model.sources.append(
            {"path": str(folder), "kind": "run folder", "machine": m.key, "commit": commit,
             "when": when, "cells": len(found), "note": "interrupted" if interrupted else ""}
        )

    def _run_cells(self, folder: Path, origin: dict) -> list[CellRecord]:
        """The readable cell records of a run folder, in file name order."""
        cells = []
        cells_dir = folder / "cells"
        for f in sorted(cells_dir.glob("*.json")) if cells_dir.is_dir() else []:
            self._seen_files.add(f.resolve())
            try:
                d = read_json(f)
            except ResultFileError as e:
                self.skip(f, e.why)
                continue
            if not isinstance(d, dict) or not (d.get("id") or d.get("name")):
                self.skip(f, "not a cell record (a JSON object with 'id' and 'kind')")
                continue
            cells.append(CellRecord.from_run_file(d, str(f), f.stem, **origin))
        return cells

    # ---- pytest-benchmark JSON
    def add_pytest_benchmark(self, path: Path, data: dict, for_history_only: bool) -> None:
        ci = as_dict(data.get("commit_info"))
        commit = ci.get("id") if isinstance(ci.get("id"), str) else None
        when = str(data.get("datetime") or ci.get("time") or "")
        info = as_dict(data.get("machine_info"))
        if for_history_only:
            key = machine_key(info)
            m = self.model.machines.setdefault(key, Machine(key=key, info=info))
        else:
            m = self.machine(info, str(path), when, commit)
        origin = {"machine": m.key, "commit": commit, "when": when}
        cells = [CellRecord.from_benchmark_entry(b, str(path), **origin) for b in data["benchmarks"] if isinstance(b, dict)]
        for cell in cells:
            self._add_history(cell, ci, str(path))
        if not for_history_only:
            self._all_cells += cells
            self.model.sources.append(
                {"path": str(path), "kind": "pytest-benchmark JSON", "machine": m.key, "commit": commit,
                 "when": when, "cells": len(cells), "note": "dirty tree" if ci.get("dirty") else ""}
            )

    def _add_history(self, c: CellRecord, commit_info: dict, source: str) -> None:
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
                batch_size=c.info.batch_size,
                image_size=c.info.image_size,
                pool_stride=c.info.pool_stride,
                commit=commit or "(no commit)",
                commit_time=str(commit_info.get("time") or c.when or ""),
                when=c.when,
                dirty=bool(commit_info.get("dirty")),
                step_s=c.step_s,
                q1=c.step_q("q1"),
                q3=c.step_q("q3"),
                source=source,
                workload=c.workload,
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
            d = read_json(path)
        except ResultFileError as e:
            self.skip(path, e.why)
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
        latest: dict[tuple, CellRecord] = {}
        for c in self._all_cells:
            old = latest.setdefault(c.dedup_key, c)
            if old is not c:
                model.superseded += 1
                if _newer(c, old):
                    latest[c.dedup_key] = c
        model.cells = list(latest.values())
        _label_machines(model)
        return model


def _newer(c: CellRecord, old: CellRecord) -> bool:
    """A finished result beats a "missing" placeholder; otherwise the most recent wins."""
    if (old.status == "missing") != (c.status == "missing"):
        return old.status == "missing"
    return c.when >= old.when


def _missing_cell(cid: str, folder: Path, origin: dict, interrupted: bool) -> CellRecord:
    """A planned cell of a run folder with no result file."""
    run_id = origin["run_id"]
    reason = (f"planned in run {run_id}, which was interrupted before this cell finished" if interrupted
              else f"planned in run {run_id} but no result file was written")
    return CellRecord.missing(cid, str(folder), reason, **origin)


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
    if history_dir is not None:
        loader.add_history_dir(Path(history_dir))
    gates = [gate_file] if gate_file else [GATE_FILE]
    if history_dir is not None and gate_file is None:
        gates.append(Path(history_dir).resolve().parent / GATE_FILE)
    gate = next((g for g in gates if g.is_file()), None)
    if gate is not None:
        loader.add_gate(gate)
    return loader.finish()
