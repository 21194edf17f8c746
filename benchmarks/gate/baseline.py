"""What the gate compares with: the baseline commit (pinned, or chosen by `--base`) and the optional
per-machine reference figures (benchmarks/baselines/<machine class>.json), including the --results mode."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks import machine, registry, workloads
from benchmarks.gate import GateInputError, worktree
from benchmarks.inputs import CODE_PATHS
from benchmarks.profiles import Cell
from benchmarks.record import Info
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.store import ResultFileError, now_iso, read_json, write_json

FORMAT = 1
HOW_TO_CREATE = "`xfbench gate --update-baseline`"
PIN_NAME = "pin.json"
# the environment `--base auto` reads: GitHub sets GITHUB_BASE_REF on pull requests; the workflow
# passes the push's github.event.before in XF_GATE_BEFORE (all zeros for a new branch)
BASE_REF_ENV, BEFORE_ENV = "GITHUB_BASE_REF", "XF_GATE_BEFORE"


# --------------------------------------------------------------------------- the baseline commit


def _read(path, what: str):
    """A JSON file the gate reads; unreadable or not JSON -> GateInputError naming it."""
    try:
        return read_json(path)
    except ResultFileError as e:
        raise GateInputError(f"{what}{e}") from None


def load_pin(path: Path) -> dict:
    """The machine-independent pin: {"commit": sha, "why": text}."""
    if not path.exists():
        raise GateInputError(f"no baseline commit pinned: {path} does not exist; pass --base REV, or pin HEAD "
                             f"with {HOW_TO_CREATE}")
    pin = _read(path, "corrupt pin file: ")
    if not isinstance(pin, dict) or not isinstance(pin.get("commit"), str) or not pin["commit"].strip():
        raise GateInputError(f"corrupt pin file: {path}: no \"commit\"; write {{\"commit\": SHA, \"why\": TEXT}}")
    return pin


def write_pin(path: Path, commit: str, why: str) -> None:
    write_json(path, {"commit": commit, "why": why, "updated": now_iso()})


def choose_base(rev: str | None, pin_path: Path, env=os.environ) -> tuple[str, str]:
    """(commit, how it was chosen) for `--base rev`.

    "pin": the pin file's commit. None: the pin where the file exists, else "auto". "auto": on a pull
    request (GITHUB_BASE_REF set) the merge base of HEAD with origin/<target branch>; else on a push
    the commit before it (XF_GATE_BEFORE),
    unless that is missing, all zeros (a new branch) or not in this clone (a force push); else the pin,
    or HEAD where there is no pin file (the working tree against its last commit). Anything else is a
    revision of this repository.
    """
    def pinned(why: str = "") -> tuple[str, str]:
        pin = load_pin(pin_path)
        try:
            commit = worktree.resolve_commit(pin["commit"])
        except GateInputError:
            raise GateInputError(f"the commit pinned in {pin_path}, {pin['commit']!r}, is not in this repository "
                                 f"(a shallow clone? fetch it, or pass --base REV)") from None
        return commit, f"{why}the commit pinned in {pin_path.name} ({pin.get('why') or 'no reason given'})"

    def last_resort(why: str) -> tuple[str, str]:
        if pin_path.exists():
            return pinned(f"{why}, so ")
        return worktree.resolve_commit("HEAD"), f"{why}, and no pin ({pin_path.name}), so HEAD: the working tree against its last commit"

    if rev == "pin" or (rev is None and pin_path.exists()):
        return pinned()
    if rev not in (None, "auto"):
        return worktree.resolve_commit(rev), f"--base {rev}"
    target = env.get(BASE_REF_ENV, "").strip()
    if target:
        for ref in (f"origin/{target}", target):
            mb = worktree.git("merge-base", "HEAD", ref, check=False)
            if mb:
                return mb, f"--base auto: merge base of HEAD with {ref} (pull request into {target})"
        raise GateInputError(f"--base auto: a pull request into {target!r}, but HEAD has no merge base with "
                             f"origin/{target} here (check out with full history: fetch-depth: 0), or pass --base REV")
    before = env.get(BEFORE_ENV, "").strip()
    if before and before.strip("0"):
        try:
            return worktree.resolve_commit(before), f"--base auto: the commit before the push ({BEFORE_ENV})"
        except GateInputError:
            return last_resort(f"--base auto: the commit before the push, {before[:12]}, is not in this clone "
                               f"(a force push?)")
    why = "a new branch's first push" if before else f"neither a pull request nor a push ({BASE_REF_ENV} and {BEFORE_ENV} unset)"
    return last_resort(f"--base auto: {why}")


def changed_impls(commit: str) -> list[str]:
    """Implementations whose package, or the harness code their workers run, differs from `commit`."""
    paths = worktree.changed_paths(commit)
    shared = (*CODE_PATHS, "pyproject.toml", "requirements.lock")
    if any(p == s or p.startswith(s.rstrip("/") + "/") for p in paths for s in shared):
        return list(registry.NAMES)
    return [n for n in registry.NAMES if any(p.startswith(pkg + "/") for p in paths for pkg in registry.entry(n).code_packages)]


# --------------------------------------------------------------------------- the per-machine reference figures


def this_machine() -> dict:
    return {"machine_class": machine.machine_class([]), "cpu": machine.cpu_model(), "cpu_count": os.cpu_count()}


def key(cell: Cell) -> str:
    """A step cell's name in the baseline file, e.g. "flax-cpu-s32-p1-b32" ("resnet.flax-cpu-s32-b32")."""
    return cell.id.replace("step-", "", 1)


def describe(cell: Cell) -> dict:
    out = {"impl": cell.impl, "device": cell.device, "image_size": cell.spec.image_size,
           "pool_stride": getattr(cell.spec, "pool_stride", None), "batch_size": cell.train.batch_size}
    return out if cell.workload == workloads.ORIGIN else {**out, "workload": cell.workload}


def path_for(baseline: str | None, baseline_dir: str, machine_class: str) -> Path:
    return Path(baseline) if baseline else Path(baseline_dir) / f"{machine_class}.json"


def load_reference(path: Path, machine_class: str, explicit: bool) -> tuple[dict | None, str | None]:
    """The reference figures of this machine class, or None and why not.

    Information only: the verdict needs no such file, so a missing default file is a note. One
    named with --baseline that is missing, and any file that is corrupt or of another machine
    class, is an error.
    """
    if not path.exists():
        if not explicit:
            return None, (f"no reference figures for this machine class ({machine_class}): {path.name} does not "
                          f"exist (information only; {HOW_TO_CREATE} writes them)")
        raise GateInputError(f"--baseline {path} does not exist; leave --baseline out, or create it with "
                             f"{HOW_TO_CREATE}")
    base = _read(path, "corrupt baseline file: ")
    check(base, path)
    if base["machine_class"] != machine_class:
        raise GateInputError(
            f"baseline file {path} is for machine class {base['machine_class']!r} "
            f"(CPU {base.get('cpu')!r}), but this machine is {machine_class!r}.\n"
            f"Step times do not transfer between machine classes: create this machine's baseline with "
            f"{HOW_TO_CREATE} (it writes {Path(path).parent / (machine_class + '.json')})."
        )
    return base, None


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


def normalised_ratio(ref: dict | None, step_s: float, peak_flops: float | None, method: str | None) -> float | None:
    """Calibration-normalised step (step x matmul rate) over the reference's; None without both rates,
    or where the reference's rate was measured by another method (not the same figure)."""
    if not (ref and ref.get("peak_flops") and peak_flops) or ref.get("calibration") != method:
        return None
    return (step_s * peak_flops) / (ref["step_s"] * ref["peak_flops"])


# --------------------------------------------------------------------------- --results mode


def compare_results(results: str, threshold: float, reference: dict, impls) -> list[dict]:
    """The step cells of a pytest-benchmark JSON run against the reference figures (no A/B test).

    Raises GateInputError unless at least one cell has a reference figure to compare with.
    """
    data = _read(results, "")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise GateInputError(f"{results}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    infos = [Info.read(b.get("extra_info") if isinstance(b, dict) else None) for b in data["benchmarks"]]
    try:
        out = [_compare(info, threshold, reference) for info in infos
               if info.kind == "step" and (info.status or "ok") == "ok" and info.impl in impls]
    except (ValueError, ZeroDivisionError) as e:
        raise GateInputError(f"{results}: a step cell lacks a figure the gate needs ({type(e).__name__}: {e})") from None
    if not out:
        raise GateInputError(f"{results}: no comparable cell: no ok step cell of {', '.join(impls)} in it")
    if not any(r["status"] == "ok" for r in out):
        have = ", ".join(sorted(reference["cells"])) or "none"
        raise GateInputError(f"{results}: no comparable cell: the reference figures have no "
                             f"{', '.join(sorted({r['key'] for r in out}))} (they have: {have})")
    return out


def _compare(info: Info, threshold: float, reference: dict) -> dict:
    lacking = [f for f in ("image_size", "batch_size", "step_s_median") if getattr(info, f) is None]
    if lacking:
        raise ValueError(f"{info.impl}'s step cell has no {', '.join(lacking)}")
    cell = Cell("step", info.impl, info.device_kind or info.device,
                ModelSpec(info.image_size, pool_stride=info.pool_stride or 1), TrainConfig(batch_size=info.batch_size))
    ref = reference["cells"].get(key(cell))
    rec = {**describe(cell), "key": key(cell), "head_step_s": info.step_s_median, "head_peak_flops": info.peak_flops}
    if ref is None:
        return {**rec, "status": "no reference", "regressed": False}
    ratio = normalised_ratio(ref, info.step_s_median, info.peak_flops, info.matmul_rate_method)
    if ratio is not None:
        rec.update(normalised_vs_reference=ratio,
                   rule=f"normalised step > reference x {1 + threshold:.2f} (single run: no A/B test)")
    else:
        ratio = info.step_s_median / ref["step_s"]
        rec.update(rule="raw step vs reference (no calibration figure by the same method on both sides: "
                        "`xfbench gate --update-baseline` re-measures the reference)")
    return {**rec, "status": "ok", "ratio": ratio, "confidence": None, "regressed": ratio > 1 + threshold}
