"""What the page shows, computed from the model: verdict, identity, data, environment, problems.

Plain dicts and lists for the template and the plots; no matplotlib, no jinja2.
Nothing here names an implementation: their order and colours come from the results.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reports.model import Cell, Machine, Model, as_dict, num

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
COMPILE_FIGURES = ("compile_s", "first_step_s", "trace_s", "lower_s", "compile_only_s")
SOURCE_PLAIN = {
    "folder": "REAL data, read from a local folder",
    "tfds": "REAL data, from TensorFlow Datasets",
    "synthetic": "SYNTHETIC data: a deterministic stand-in, NOT Horses or Humans",
}


# --------------------------------------------------------------------------- implementations


@dataclass(frozen=True)
class Impls:
    """The implementations on the page, in order of first appearance in the results, each with its colour."""

    names: list[str]
    colors: dict[str, str]

    @classmethod
    def of(cls, model: Model) -> Impls:
        found: dict[str, None] = {}
        for c in model.cells:
            parity = as_dict(as_dict(c.x("parity")).get("impls"))
            found.update(dict.fromkeys(parity if c.kind == "parity" else [c.impl]))
        found.update(dict.fromkeys(p.impl for p in model.history))
        found.pop("?", None)
        names = list(found)
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


def device_label(model: Model, machine: str, device: str) -> str:
    m = model.machines.get(machine)
    return f"CPU ({m.cpu})" if device.lower() == "cpu" and m is not None else device


def status_counts(model: Model) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for c in model.cells:
        counts[c.status] += 1
    return dict(counts)


# --------------------------------------------------------------------------- verdict


def verdict(model: Model) -> list[dict]:
    """One block per (machine, device): speed ranking per config, compile ranking, accuracy."""
    impls = Impls.of(model)
    blocks: dict[tuple, dict] = {}
    for c in model.ok("step") + model.ok("accuracy"):
        if (c.machine, c.device) not in blocks:
            blocks[(c.machine, c.device)] = _block(model, c.machine, c.device)
    for k, groups in _speed_groups(model, impls).items():
        blocks[k]["speed"] = groups
        blocks[k]["headline"] = _headline(groups)
    for c in model.ok("step"):
        if c.step_s is not None and c.x("data") == "synthetic":
            blocks[(c.machine, c.device)]["synthetic_step"] = True
    for k, b in blocks.items():
        b["compile"] = _compile_ranking([c for c in model.ok("step") if (c.machine, c.device) == k])
        accuracy = [_accuracy_row(c) for c in model.ok("accuracy") if (c.machine, c.device) == k]
        b["acc_table"] = _accuracy_table(accuracy)
        b["accuracy"] = sorted(accuracy, key=lambda r: (str(r["config"]), str(r["protocol"]), bool(r["augment"]),
                                                        impls.rank(r["impl"])))
    return sorted(blocks.values(), key=lambda b: (b["machine"], b["device"].lower() != "cpu", b["device"]))


def _block(model: Model, machine: str, device: str) -> dict:
    return {
        "machine": model.machines[machine].label,
        "machine_key": machine,
        "device": device,
        "device_label": device_label(model, machine, device),
        "speed": [],
        "compile": [],
        "accuracy": [],
        "headline": None,
        "synthetic_step": False,
        "acc_table": [],
    }


def _speed_groups(model: Model, impls: Impls) -> dict[tuple, list[dict]]:
    """(machine, device) -> one group per config and batch size, each ranking the implementations."""
    cells: dict[tuple, dict[str, Cell]] = defaultdict(dict)
    for c in model.ok("step"):
        if c.step_s is not None:
            cells[(c.machine, c.device, c.x("image_size"), c.x("pool_stride"), c.x("batch_size"))][c.impl] = c
    out: dict[tuple, list[dict]] = defaultdict(list)
    for (mk, dev, size, stride, bs), by_impl in sorted(cells.items(), key=lambda kv: sortkey(kv[0])):
        best = min(by_impl.values(), key=lambda c: c.step_s)
        rows = [_speed_row(by_impl[name], best) for name in impls.sort(by_impl)]
        out[(mk, dev)].append({"config": config_label(size, stride), "batch_size": bs, "rows": rows,
                               "fastest": best.impl, "by_impl": {r["impl"]: r for r in rows}})
    return out


def _speed_row(c: Cell, best: Cell) -> dict:
    return {
        "impl": c.impl,
        "step_s": c.step_s,
        "q1": c.step_q("q1"),
        "q3": c.step_q("q3"),
        "images_per_s": c.images_per_s,
        "ratio": c.step_s / best.step_s,
        "best": c is best,
        "mfu": num(c.x("mfu")),
        "recompiles": c.x("recompiles"),
    }


def _headline(groups: list[dict]) -> list[dict]:
    """Geometric mean of each implementation's ratio to the fastest, over every config and batch size."""
    ratios: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        for r in g["rows"]:
            ratios[r["impl"]].append(r["ratio"])
    gm = {name: statistics.geometric_mean(rs) for name, rs in ratios.items()}
    order = sorted(gm, key=lambda n: gm[n])
    return [{"impl": n, "ratio": gm[n] / gm[order[0]], "n": len(ratios[n])} for n in order]


def _compile_ranking(cells: list[Cell]) -> list[dict]:
    """Per implementation, the median over its cells of each compile figure; fastest first."""
    per_impl: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        per_impl[c.impl].append(c)
    rows = [{"impl": name, **{k: median(num(c.x(k)) for c in cs) for k in COMPILE_FIGURES}, "n": len(cs)}
            for name, cs in per_impl.items()]
    rows.sort(key=lambda r: (r["compile_s"] is None, r["compile_s"] or 0))
    fastest = next((r["compile_s"] for r in rows if r["compile_s"]), None)
    for r in rows:
        r["ratio"] = r["compile_s"] / fastest if fastest and r["compile_s"] else None
    return rows


def _accuracy_row(c: Cell) -> dict:
    accs = [a for a in (c.x("test_accuracies") or []) if num(a) is not None]
    return {
        "impl": c.impl,
        "protocol": c.x("protocol", "?"),
        "augment": c.x("augment"),
        "epochs": c.x("epochs"),
        "seeds": c.x("seeds") or [],
        "mean": num(c.x("test_accuracy_mean")),
        "sd": num(c.x("test_accuracy_sd")),
        "min": min(accs) if accs else None,
        "max": max(accs) if accs else None,
        "from_cache": bool(c.x("from_cache", False)),
        "train_s": num(c.x("train_s")),
        "data": c.x("data"),
        "config": config_label(c.x("image_size"), c.x("pool_stride")),
        "batch_size": c.x("batch_size"),
    }


def _accuracy_table(rows: list[dict]) -> list[dict]:
    """One row per condition (config, protocol, augmentation), one column per implementation."""
    conds: dict[tuple, dict] = {}
    multi_cfg = len({r["config"] for r in rows}) > 1
    for r in rows:
        k = (r["config"], str(r["protocol"]), bool(r["augment"]))
        if k not in conds:
            conds[k] = {
                "label": f"{r['protocol']} split, {'augmented' if r['augment'] else 'no augmentation'}",
                "short": f"{r['protocol']}{' + aug' if r['augment'] else ''}",
                "config": r["config"] if multi_cfg else "",
                "by_impl": {},
                "epochs": r["epochs"],
                "seeds": len(r["seeds"]),
            }
        conds[k]["by_impl"][r["impl"]] = r
    for c in conds.values():
        means = [r["mean"] for r in c["by_impl"].values() if r["mean"] is not None]
        c["spread"] = max(means) - min(means) if len(means) > 1 else None
    return [conds[k] for k in sorted(conds, key=lambda k: (k[0], k[1] != "original", k[2]))]


# --------------------------------------------------------------------------- identity


def identity(model: Model) -> dict:
    """Parity tables per machine, and what the spec in use is."""
    impls = Impls.of(model)
    specs = [_spec_row(model, m) for m in model.machine_list() if m.spec or "spec_is_origin" in m.xf]
    return {
        "parity": [_parity_table(model, c, impls) for c in model.cells if c.kind == "parity"],
        "specs": specs,
        # strides actually measured in cells (a profile may run both)
        "strides_measured": _strides(model.cells),
    }


def _parity_table(model: Model, c: Cell, impls: Impls) -> dict:
    p = as_dict(c.x("parity"))
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
        "same_params": len(params) == 1 if params else None,
        "name": c.name,
    }


def _spec_row(model: Model, m: Machine) -> dict:
    is_origin = m.xf.get("spec_is_origin")
    if is_origin is None and m.spec:
        is_origin = all(m.spec.get(k) == v for k, v in ORIGIN_SPEC.items() if k in m.spec)
    strides = _strides(c for c in model.cells if c.machine == m.key)
    return {"machine": m.label, "spec": m.spec, "is_origin": is_origin, "strides": strides}


def _strides(cells: Iterable[Cell]) -> list:
    return sorted({c.x("pool_stride") for c in cells if c.x("pool_stride") is not None}, key=str)


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


def _dataset_row(m: Machine, d: dict, cells: list[Cell]) -> dict:
    src = str(d.get("source") or "unknown")
    used_by = sorted({c.kind for c in cells if c.x("dataset_fingerprint") == d.get("fingerprint")})
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
    rows += [
        ("XLA_FLAGS", [m.xf.get("xla_flags") if m.xf.get("xla_flags") else "(none)" if m.xf else None for m in ms]),
        ("Profiles", [_profiles(m) for m in ms]),
        ("Commits", [", ".join(c[:10] for c in m.commits) or None for m in ms]),
        ("Runs", [", ".join(r["run_id"] + ("" if r.get("finished") else " (interrupted)") for r in m.runs) or None
                  for m in ms]),
        ("Results from", [m.latest or None for m in ms]),
    ]
    return {"machines": [m.label for m in ms], "rows": rows}


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
