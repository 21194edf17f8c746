"""What the page shows, computed from the model: identity, data, environment, problems (the verdict is
in `reports.verdict`), and what every part shares: the implementations in page order with their colours.

Plain dicts and lists for the template and the plots; no matplotlib, no jinja2.
Nothing here names an implementation: their order and colours come from the results.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks.record import AA_SUFFIX, TUNED_SUFFIX, CellRecord, as_dict
from reports.model import Machine, Model

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
# Okabe & Ito (2008), colour-blind safe; given to implementations in page order.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
NO_IMPL_COLOR = "#777777"  # a cell that names no implementation
SOURCE_PLAIN = {
    "folder": "REAL data, read from a local folder",
    "tfds": "REAL data, from TensorFlow Datasets",
    "embedded": "REAL data, from the copy shipped in the repository (byte-exact at this size)",
    "synthetic": "SYNTHETIC data: a deterministic stand-in, NOT Horses or Humans",
}


# --------------------------------------------------------------------------- implementations


@dataclass(frozen=True)
class Impls:
    """The implementations on the page, each with its colour: in the order the results list them
    (machine_info's `impl_order`, the harness's registry order: cells run in random order), then any
    others in order of first appearance, A/A copies last."""

    names: list[str]
    colors: dict[str, str]

    @classmethod
    def of(cls, model: Model) -> Impls:
        found: dict[str, None] = {}
        for c in model.cells:
            parity = as_dict(as_dict(c.info.parity).get("impls"))
            found.update(dict.fromkeys(parity if c.kind == "parity" else [c.impl]))
        found.update(dict.fromkeys(p.impl for p in model.history))
        found.pop("?", None)
        listed: dict[str, int] = {}
        for m in model.machines.values():
            order = m.xf.get("impl_order")
            for n in order if isinstance(order, list) else []:
                listed.setdefault(str(n), len(listed))
        first = {n: i for i, n in enumerate(found)}
        copies = (AA_SUFFIX, TUNED_SUFFIX)
        names = sorted(found, key=lambda n: (n.endswith(copies), n not in listed, listed.get(n, 0), first[n]))
        return cls(names, {n: OKABE_ITO[i % len(OKABE_ITO)] for i, n in enumerate(names)})

    def rank(self, name: str) -> int:
        return self.names.index(name) if name in self.names else len(self.names)

    def sort(self, names: Iterable[str]) -> list[str]:
        """`names` without repeats, in page order; any the page does not list go last."""
        return sorted(set(names), key=lambda n: (self.rank(n), n))

    def color(self, name: str) -> str:
        return self.colors.get(name, NO_IMPL_COLOR)


# --------------------------------------------------------------------------- shared labels


def median(xs: Iterable[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def sortkey(t: Any) -> tuple:
    """Sort key for a scalar or a tuple mixing numbers, strings and None."""
    if not isinstance(t, tuple):
        t = (t,)
    return tuple((0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x)) for x in t)


def config_label(image_size: Any, pool_stride: Any) -> str:
    parts = []
    if image_size is not None:
        parts.append(f"{image_size}×{image_size}")
    if pool_stride is not None:
        parts.append(f"pool stride {pool_stride}" + (" (origin)" if pool_stride == 1 else ""))
    return ", ".join(parts) or "unknown config"


def device_label(model: Model, machine: str, device: str, precision: str = "float32") -> str:
    """"CPU (its model)" or the GPU's name; with the precision where it is not float32."""
    m = model.machines.get(machine)
    label = f"CPU ({m.cpu})" if device.lower() == "cpu" and m is not None else device
    return label if precision == "float32" else f"{label} · {precision}"


def status_counts(model: Model) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for c in model.cells:
        counts[c.status] += 1
    return dict(counts)


# --------------------------------------------------------------------------- identity


def identity(model: Model) -> dict:
    """Parity tables per machine, and what the spec in use is."""
    impls = Impls.of(model)
    specs = [_spec_row(model, m) for m in model.machine_list() if m.spec or "spec_is_origin" in m.xf]
    return {
        "parity": sorted((_parity_table(model, c, impls) for c in model.cells if c.kind == "parity"),
                         key=lambda p: p["workload"] != "origin"),
        "specs": specs,
        # strides actually measured in cells (a profile may run both)
        "strides_measured": _strides(model.cells),
    }


def _parity_table(model: Model, c: CellRecord, impls: Impls) -> dict:
    p = as_dict(c.info.parity)
    by_impl = as_dict(p.get("impls"))
    cols: list[str] = []
    for d in by_impl.values():
        for k, v in as_dict(d).items():
            if k != "params" and k not in cols and _scalar(v):
                cols.append(k)
    rows = []
    for name in impls.sort(by_impl):
        d = as_dict(by_impl[name])
        rows.append({"impl": name, "params": d.get("params"), "values": [d.get(k) for k in cols]})
    params = {r["params"] for r in rows if r["params"] is not None}
    return {
        "machine": model.machines[c.machine].label,
        "status": c.status,
        "reason": c.reason,
        "spec": p.get("spec") if isinstance(p.get("spec"), dict) else None,
        "cols": cols,
        "rows": rows,
        "bounds": p.get("bounds") if isinstance(p.get("bounds"), dict) else None,
        "precision": p.get("precision"),
        "not_run": as_dict(p.get("not_run")),
        "same_params": len(params) == 1 if params else None,
        "name": c.name,
        "workload": c.workload,
    }


def _spec_row(model: Model, m: Machine) -> dict:
    is_origin = m.xf.get("spec_is_origin")
    if is_origin is None and m.spec:
        is_origin = all(m.spec.get(k) == v for k, v in ORIGIN_SPEC.items() if k in m.spec)
    strides = _strides(c for c in model.cells if c.machine == m.key)
    return {"machine": m.label, "spec": m.spec, "is_origin": is_origin, "strides": strides}


def _strides(cells: Iterable[CellRecord]) -> list:
    return sorted({c.info.pool_stride for c in cells if c.info.pool_stride is not None}, key=str)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


# --------------------------------------------------------------------------- data


def data_view(model: Model) -> tuple[list[dict], bool]:
    """One row per dataset each machine used (step cells may run on other data than accuracy cells),
    and whether machines used different data for the same protocol and image size."""
    rows = []
    for m in model.machine_list():
        datasets = m.xf.get("datasets") if isinstance(m.xf.get("datasets"), list) else [m.dataset]
        cells = [c for c in model.cells if c.machine == m.key]
        rows += [_dataset_row(m, d, cells) for d in datasets if isinstance(d, dict)]
    fps: dict[tuple, set] = {}
    for r in rows:
        if r["fingerprint"] and (not r["used_by"] or "accuracy" in r["used_by"]):
            fps.setdefault((r["protocol"], r["image_size"]), set()).add(r["fingerprint"])
    return rows, any(len(v) > 1 for v in fps.values())


def _dataset_row(m: Machine, d: dict, cells: list[CellRecord]) -> dict:
    src = str(d.get("source") or "unknown")
    used_by = sorted({c.kind for c in cells if c.info.dataset_fingerprint == d.get("fingerprint")})
    splits = [{"split": split, "counts": counts, "total": sum(v for v in counts.values() if isinstance(v, int))}
              for split, counts in as_dict(d.get("splits")).items() if isinstance(counts, dict)]
    return {
        "machine": m.label,
        "source": src,
        "plain": SOURCE_PLAIN.get(src, f"unknown source ({src})"),
        "synthetic": src == "synthetic",
        # the loud banner: accuracies measured on synthetic data
        "synthetic_accuracy": src == "synthetic" and (not used_by or "accuracy" in used_by),
        "detail": d.get("source_detail"),
        "protocol": d.get("protocol"),
        "image_size": d.get("image_size"),
        "fingerprint": d.get("fingerprint"),
        "splits": splits,
        "used_by": used_by,
    }


# --------------------------------------------------------------------------- environment


def environment(model: Model) -> dict:
    """One column per machine; package versions in the order the result files list them."""
    ms = model.machine_list()
    packages = list(dict.fromkeys(k for m in ms for k in m.versions))
    rows = [
        ("Host", [m.node for m in ms]),
        ("Machine class", [m.xf.get("machine_class") for m in ms]),
        ("CPU", [m.cpu for m in ms]),
        ("CPU cores", [m.cpu_count for m in ms]),
        ("GPUs", [", ".join(m.gpus) if m.gpus else "none" for m in ms]),
        ("Python", [m.info.get("python_version") for m in ms]),
        ("System", [" ".join(str(x) for x in (m.info.get("system"), m.info.get("release")) if x) or None for m in ms]),
    ]
    rows += [(k, [m.versions.get(k) for m in ms]) for k in packages]
    rows += _thread_rows(model, ms)
    rows += [(label, [m.xf.get(k) for m in ms]) for label, k in
             (("Processes per step cell", "replicates"), ("Step-cell order seed", "order_seed"), ("A/A control of", "aa"))
             if any(m.xf.get(k) is not None for m in ms)]
    rows += [
        ("XLA_FLAGS", [m.xf.get("xla_flags") if m.xf.get("xla_flags") else "(none)" if m.xf else None for m in ms]),
        ("Profiles", [_profiles(m) for m in ms]),
        ("Commits", [", ".join(c[:10] for c in m.commits) or None for m in ms]),
        ("Runs", [", ".join(r["run_id"] + ("" if r.get("finished") else " (interrupted)") for r in m.runs) or None
                  for m in ms]),
        ("Results from", [m.latest or None for m in ms]),
    ]
    return {"machines": [m.label for m in ms], "rows": rows}


def _thread_rows(model: Model, ms: list[Machine]) -> list[tuple[str, list]]:
    """A row per implementation: its thread settings (environment and framework) on each machine;
    an A/A copy only where it differs from its original."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in model.ok("step"):
        if isinstance(c.info.threads, dict) and (t := _compact(c.info.threads)) not in found[(c.impl, c.machine)]:
            found[(c.impl, c.machine)].append(t)
    rows = []
    for name in Impls.of(model).sort(n for n, _ in found):
        vals = [" | ".join(found.get((name, m.key), [])) or None for m in ms]
        base = name.removesuffix(AA_SUFFIX).removesuffix(TUNED_SUFFIX)
        if name == base or any(found.get((name, m.key)) not in (None, [], found.get((base, m.key))) for m in ms):
            rows.append((f"Threads · {name}", vals))
    return rows


def _compact(d: dict) -> str:
    """{"env": {"OMP_NUM_THREADS": "2"}, "intra_op": 2} -> "env: OMP_NUM_THREADS=2; intra_op=2"."""
    def val(v: Any) -> str:
        return "unset" if v is None else str(v)

    return "; ".join(f"{k}: " + ", ".join(f"{kk}={val(vv)}" for kk, vv in v.items()) if isinstance(v, dict)
                     else f"{k}={val(v)}" for k, v in d.items())


def _profiles(m: Machine) -> str | None:
    names = {str(r.get("profile")) for r in m.runs if r.get("profile")}
    if m.xf.get("profile"):
        names.add(str(m.xf["profile"]))
    return ", ".join(sorted(names)) or None


# --------------------------------------------------------------------------- problems


def problems(model: Model) -> list[dict]:
    """Every cell that did not finish ok, or finished with a warning; the worst first."""
    order = {"failed": 0, "missing": 1, "warning": 2, "skipped": 3}
    rows = []
    for c in model.cells:
        warnings = c.info.warnings or []
        if c.status == "ok" and not warnings:
            continue
        rows.append(
            {
                "machine": model.machines[c.machine].label,
                "status": c.status if c.status != "ok" else "warning",
                "kind": c.kind,
                "cell": c.name if c.name != c.id else c.id,
                "impl": c.impl if c.info.impl else None,
                "device": c.info.device,
                "reason": c.reason or "; ".join(warnings) or "(no reason given)",
                "run": c.run_id,
            }
        )
    rows.sort(key=lambda r: (order.get(r["status"], 4), r["machine"], r["cell"]))
    return rows
