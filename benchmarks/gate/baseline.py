"""The committed baseline file (benchmarks/baselines/<machine class>.json) and comparisons with its
reference figures, including the --results mode."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks import machine
from benchmarks.gate import GateInputError
from benchmarks.profiles import Cell
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.store import ResultFileError, now_iso, read_json, write_json

FORMAT = 1
HOW_TO_CREATE = "`xfbench gate --update-baseline`"


def this_machine() -> dict:
    return {"machine_class": machine.machine_class([]), "cpu": machine.cpu_model(), "cpu_count": os.cpu_count()}


def key(cell: Cell) -> str:
    """A step cell's name in the baseline file, e.g. "flax-cpu-s32-p1-b32"."""
    return cell.id.removeprefix("step-")


def describe(cell: Cell) -> dict:
    return {"impl": cell.impl, "device": cell.device, "image_size": cell.spec.image_size,
            "pool_stride": cell.spec.pool_stride, "batch_size": cell.train.batch_size}


def path_for(baseline: str | None, baseline_dir: str, machine_class: str) -> Path:
    return Path(baseline) if baseline else Path(baseline_dir) / f"{machine_class}.json"


def load(path: Path, machine_class: str) -> dict:
    if not path.exists():
        others = sorted(p.name for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise GateInputError(
            f"no step-time baseline for this machine class ({machine_class}): {path} does not exist.\n"
            f"Create it with {HOW_TO_CREATE} on a clean, committed tree, then commit the file."
            + (f"\nBaselines exist for other machine classes: {', '.join(others)}" if others else "")
        )
    try:
        base = read_json(path)
    except ResultFileError as e:
        raise GateInputError(f"corrupt baseline file: {e}") from None
    check(base, path)
    if base["machine_class"] != machine_class:
        raise GateInputError(
            f"baseline file {path} is for machine class {base['machine_class']!r} "
            f"(CPU {base.get('cpu')!r}), but this machine is {machine_class!r}.\n"
            f"Step times do not transfer between machine classes: create this machine's baseline with "
            f"{HOW_TO_CREATE} (it writes {Path(path).parent / (machine_class + '.json')})."
        )
    return base


def check(base, path: Path) -> None:
    def corrupt(what: str):
        return GateInputError(f"corrupt baseline file: {path}: {what}; recreate it with {HOW_TO_CREATE}")

    if not isinstance(base, dict) or base.get("format") != FORMAT or not isinstance(base.get("cells"), dict):
        raise corrupt(f"not an xfbench baseline (format {FORMAT})")
    for field in ("commit", "machine_class"):
        if not isinstance(base.get(field), str) or not base[field]:
            raise corrupt(f"missing {field!r}")
    for name, cell in base["cells"].items():
        if not isinstance(cell, dict) or not isinstance(cell.get("step_s"), (int, float)):
            raise corrupt(f"cell {name!r} has no step_s")


def write(path: Path, mc: dict, commit: str, dirty: bool, figures: dict, versions: dict) -> None:
    """Rewrite the file for `commit`: these cells' figures replace theirs, other cells of the same class stay."""
    old = read_json(path) if path.exists() else {}
    cells = dict(old.get("cells", {})) if isinstance(old, dict) and old.get("machine_class") == mc["machine_class"] else {}
    cells.update(figures)
    write_json(path, {
        "format": FORMAT,
        "machine_class": mc["machine_class"],
        "cpu": mc["cpu"],
        "cpu_count": mc["cpu_count"],
        "commit": commit,
        "dirty": dirty,
        "updated": now_iso(),
        "versions": versions,
        "note": "reference figures are information; the gate's verdict comes from A/B pairs against `commit`",
        "cells": cells,
    })


def normalised_ratio(ref: dict | None, step_s: float, peak_flops: float | None) -> float | None:
    """Calibration-normalised step (step x matmul rate) over the reference's; None without both rates."""
    if not (ref and ref.get("peak_flops") and peak_flops):
        return None
    return (step_s * peak_flops) / (ref["step_s"] * ref["peak_flops"])


# --------------------------------------------------------------------------- --results mode


def compare_results(results: str, threshold: float, base_file: dict, impls) -> list[dict]:
    """The step cells of a pytest-benchmark JSON run against the reference figures (no A/B test)."""
    try:
        data = read_json(results)
    except ResultFileError as e:
        raise GateInputError(str(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise GateInputError(f"{results}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    try:
        infos = [b.get("extra_info") or {} for b in data["benchmarks"]]
        out = [_compare(info, threshold, base_file) for info in infos
               if info.get("kind") == "step" and info.get("status", "ok") == "ok" and info.get("impl") in impls]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise GateInputError(f"{results}: a step cell lacks a figure the gate needs ({type(e).__name__}: {e})") from None
    if not out:
        raise GateInputError(f"{results}: no ok step cell for {', '.join(impls)} in it")
    return out


def _compare(info: dict, threshold: float, base_file: dict) -> dict:
    cell = Cell("step", info["impl"], info.get("device_kind", info.get("device")),
                ModelSpec(info["image_size"], pool_stride=info.get("pool_stride", 1)),
                TrainConfig(batch_size=info["batch_size"]))
    ref = base_file["cells"].get(key(cell))
    rec = {**describe(cell), "key": key(cell), "head_step_s": info.get("step_s_median"),
           "head_peak_flops": info.get("peak_flops")}
    if ref is None:
        return {**rec, "status": "no reference", "regressed": False}
    ratio = normalised_ratio(ref, info["step_s_median"], info.get("peak_flops"))
    if ratio is not None:
        rec.update(normalised_vs_reference=ratio,
                   rule=f"normalised step > reference x {1 + threshold:.2f} (single run: no A/B test)")
    else:
        ratio = info["step_s_median"] / ref["step_s"]
        rec.update(rule="raw step vs reference (no calibration figure)")
    return {**rec, "status": "ok", "ratio": ratio, "confidence": None, "regressed": ratio > 1 + threshold}
