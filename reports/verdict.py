"""The verdict, per (machine, device): step time, compile time and accuracy of each implementation.

Every ratio between two implementations carries its interval across worker
processes (`reports.stats`); a winner is named only where that interval excludes 1
and the ratio is outside the noise floor. An A/A control (an identical second copy
of an implementation) is ranked with no one: its ratio to its original is the
harness's noise floor. Ratios compare the processes of one run only (one
interleaved order on one machine): per configuration, the run that measured the
most implementations; a series from another run is shown, marked, and compared
with nothing.
"""

from __future__ import annotations

from collections import defaultdict

from benchmarks.record import CellRecord, num
from reports.model import Model, Replicates, commands
from reports.stats import Ratio, geomean, geometric_interval, log_ratio, simultaneous_level
from reports.views import Impls, config_label, device_label, median, sortkey

COMPILE_FIGURES = ("compile_s", "first_step_s", "trace_s", "lower_s", "compile_only_s")


def verdict(model: Model) -> list[dict]:
    """One block per (workload, machine, device, precision): speed per config and overall, compile ranking,
    accuracy. The origin's blocks come first; no block compares across workloads."""
    impls = Impls.of(model)
    out = []
    for w in model.workloads():
        for b in _verdict(model.for_workload(w), impls):
            b["workload"] = w
            if w != "origin":
                b["device_label"] = f"{w} · {b['device_label']}"
            out.append(b)
    return out


def _verdict(model: Model, impls: Impls) -> list[dict]:
    configs = model.step_configs()
    blocks: dict[tuple, dict] = {}
    for c in [*configs, *model.ok("accuracy")]:  # a block per precision too: none compares across precisions
        if (c.machine, c.device, c.precision) not in blocks:
            blocks[(c.machine, c.device, c.precision)] = _block(model, c.machine, c.device, c.precision)
    for k, b in blocks.items():
        mine = [r for r in configs if (r.machine, r.device, r.precision) == k]
        compared = [r for group in _by_cfg(mine).values() for r in _one_run(group)]
        _speed(b, mine, compared, impls)
        b["compile"] = _compile_ranking(compared, impls)
        b["details"] = [_detail_row(r) for r in sorted(mine, key=lambda r: (sortkey(_cfg(r)), impls.rank(r.impl)))]
        b["users"] = [row for r in sorted(mine, key=lambda r: (sortkey(_cfg(r)), impls.rank(r.impl)))
                      if (row := _users_row(r))]
        accuracy = [_accuracy_row(c) for c in model.ok("accuracy") if (c.machine, c.device, c.precision) == k]
        b["acc_table"] = _accuracy_table(accuracy)
        b["acc_impls"] = impls.sort(r["impl"] for r in accuracy)
        b["accuracy"] = sorted(accuracy, key=lambda r: (str(r["config"]), str(r["protocol"]), bool(r["augment"]),
                                                        impls.rank(r["impl"])))
    return sorted(blocks.values(), key=lambda b: (b["machine"], b["device"].lower() != "cpu", b["device"],
                                                  b["precision"] != "float32", b["precision"]))


def _block(model: Model, machine: str, device: str, precision: str) -> dict:
    return {
        "machine": model.machines[machine].label,
        "machine_key": machine,
        "device": device,
        "precision": precision,
        "device_label": device_label(model, machine, device, precision),
        "speed": [],
        "step_impls": [],
        "headline": None,
        "noise_floor": [],
        "compile": None,
        "details": [],
        "users": [],
        "matmul_rate": None,
        "synthetic_step": False,
        "processes": [],
        "accuracy": [],
        "acc_table": [],
        "acc_impls": [],
    }


def _cfg(r: Replicates | CellRecord) -> tuple:
    return (r.info.image_size, r.info.pool_stride, r.info.batch_size)


def _by_cfg(configs: list[Replicates]) -> dict[tuple, list[Replicates]]:
    out: dict[tuple, list[Replicates]] = defaultdict(list)
    for r in configs:
        out[_cfg(r)].append(r)
    return out


def _one_run(group: list[Replicates]) -> list[Replicates]:
    """The series of one configuration that a single run measured: the run with the most series,
    the newest on a tie. Only these are compared with each other."""
    by_run: dict[str, list[Replicates]] = defaultdict(list)
    for r in group:
        by_run[r.run].append(r)
    return by_run[max(by_run, key=lambda run: (len(by_run[run]), max(c.when for r in by_run[run] for c in r.cells)))]


# --------------------------------------------------------------------------- comparing


def compare(samples: dict[str, dict[tuple, list[float]]], impls: Impls, noise: Ratio | None = None) -> dict | None:
    """Rank implementations by per-process values (lower is better) and compare each with the fastest.

    samples: implementation -> configuration -> one value per process. The fastest has the lowest
    geometric mean, over its configurations, of its value ÷ the best value there; each other
    implementation's ratio to it (with a simultaneous interval, `stats.simultaneous_level`) is over
    the configurations both measured. `noise`: the A/A control's ratio, where the run has one; a
    ratio inside it is "within the noise floor".
    status: "winner" (every interval above 1, none within the noise), "no clear difference",
    "no interval" or "single".
    """
    samples = {n: {k: v for k, v in s.items() if geomean(v)} for n, s in samples.items()}
    names = [n for n in impls.sort(samples) if samples[n]]
    if not names:
        return None
    best = {k: min(geomean(samples[n][k]) for n in names if k in samples[n]) for n in names for k in samples[n]}
    score = {n: geomean([geomean(v) / best[k] for k, v in samples[n].items()]) for n in names}
    names.sort(key=lambda n: score[n])
    fastest = names[0]
    level = simultaneous_level(len(names))
    rows = [{"impl": fastest, "ratio": None, "verdict": "fastest", "configs": len(samples[fastest]), "reason": None}]
    for n in names[1:]:
        shared = [k for k in samples[n] if k in samples[fastest]]
        ratio = log_ratio([(samples[n][k], samples[fastest][k]) for k in shared], level) if shared else None
        verdict = ratio.verdict if ratio else "no interval"
        if verdict in ("slower", "faster") and ratio.inside(noise):
            verdict = "within the noise floor"
        rows.append({"impl": n, "ratio": ratio, "verdict": verdict, "configs": len(shared), "reason": None})
    verdicts = {r["verdict"] for r in rows[1:]}
    status = ("single" if not verdicts else "winner" if verdicts == {"slower"}
              else "no interval" if "no interval" in verdicts else "no clear difference")
    tied = [r["impl"] for r in rows if r["verdict"] in ("fastest", "no clear difference", "faster",
                                                         "within the noise floor")]
    return {"fastest": fastest, "status": status, "rows": rows, "tied": tied, "winner": fastest if status == "winner"
            else None}


def _aa_ratio(configs: list[Replicates], aa: Replicates | str, key: str) -> Ratio | None:
    """A copy's ratio (A/A or tuned) to its original, over the configurations both measured (`aa` a series
    or a name)."""
    copies = [r for r in configs if r.impl == aa] if isinstance(aa, str) else [aa]
    base = {(r.impl, _cfg(r)): r for r in configs if not r.copy}
    pairs = [(c.values(key), base[(c.base_impl, _cfg(c))].values(key)) for c in copies
             if (c.base_impl, _cfg(c)) in base]
    return log_ratio(pairs) if pairs else None


def _noise(configs: list[Replicates], key: str) -> Ratio | None:
    """The widest A/A interval among the A/A copies in `configs` (None without one): the noise floor."""
    ratios = [r for n in {c.impl for c in configs if c.aa_copy} if (r := _aa_ratio(configs, n, key)) and r.has_interval]
    return max(ratios, key=lambda r: max(r.hi, 1 / r.lo), default=None)


def _samples(configs: list[Replicates], key: str) -> dict[str, dict[tuple, list[float]]]:
    """implementation -> configuration -> per-process values of `key`; A/A and tuned copies left out."""
    out: dict[str, dict[tuple, list[float]]] = defaultdict(dict)
    for r in configs:
        if not r.copy and r.values(key):
            out[r.impl][_cfg(r)] = r.values(key)
    return out


# --------------------------------------------------------------------------- why a gap is large

LARGE_GAP = 1.3  # a ratio beyond this carries a reason, or says it has none
FRESH_MEMORY = 16 * 2**20  # first-touched bytes per step that make page faults a reason
PAGE = 4096


def _phases(r: Replicates) -> dict | None:
    """The step taken apart (the breakdown of replicate 0): forward, backward, update, the rest."""
    b = r.info.breakdown
    if not isinstance(b, dict) or not all(num(b.get(k)) for k in ("forward_s", "forward_backward_s", "update_s")):
        return None
    fwd, fb, upd = b["forward_s"], b["forward_backward_s"], b["update_s"]
    return {"forward": fwd, "backward": fb - fwd, "update": upd, "rest": (r.step_s or fb + upd) - fb - upd}


def reason(slow: Replicates, fast: Replicates) -> str:
    """One line, from the run's own evidence, on why `slow` takes longer per step than `fast`:
    memory it faults in afresh every step (getrusage), then the phase of the step where most of the
    gap lies (the breakdown), or "unexplained"."""
    parts = []
    faults = [num(r.info.page_faults_per_step) for r in (slow, fast)]
    if None not in faults and faults[0] * PAGE >= FRESH_MEMORY and faults[0] >= 10 * max(faults[1], 1):
        kernel = num(slow.info.kernel_s_per_step)
        parts.append(f"it faults in {faults[0] * PAGE / 2**20:.0f} MiB of fresh memory every step "
                     f"({faults[0]:,.0f} page faults{f', {kernel * 1e3:.0f} ms in the kernel' if kernel else ''}) "
                     f"where {fast.impl} reuses its memory ({faults[1]:,.0f} faults)")
    a, b = _phases(slow), _phases(fast)
    if a and b:
        phase = max(a, key=lambda k: a[k] - b[k])
        what = {"forward": "forward pass", "backward": "backward pass", "update": "optimizer update",
                "rest": "rest of the step"}[phase]
        parts.append(f"the {what} holds most of the gap ({a[phase] * 1e3:.1f} vs {b[phase] * 1e3:.1f} ms, "
                     f"in steps of {slow.step_s * 1e3:.1f} vs {fast.step_s * 1e3:.1f} ms)")
    return "; ".join(parts) or "unexplained: no breakdown or memory evidence in this run"


def _add_reasons(cmp: dict | None, by_impl: dict[str, list[Replicates]]) -> None:
    """Give every ratio beyond LARGE_GAP in `cmp` its reason, from the configuration where it is largest."""
    for row in (cmp or {}).get("rows", [])[1:]:
        if not row["ratio"] or row["ratio"].value <= LARGE_GAP:
            continue
        pairs = [(s, f) for s in by_impl.get(row["impl"], []) for f in by_impl.get(cmp["fastest"], [])
                 if _cfg(s) == _cfg(f) and s.step_s and f.step_s]
        row["reason"] = reason(*max(pairs, key=lambda p: p[0].step_s / p[1].step_s)) if pairs else "unexplained"


# --------------------------------------------------------------------------- step time


def _speed(b: dict, configs: list[Replicates], compared: list[Replicates], impls: Impls) -> None:
    """Fill the block's step-time table (a group per config and batch size), headline and noise floor;
    only the `compared` series (one run per configuration) enter a ratio."""
    by_cfg = _by_cfg(configs)
    for cfg in sorted(by_cfg, key=sortkey):
        rs = sorted(by_cfg[cfg], key=lambda r: impls.rank(r.impl))
        same_run = [r for r in rs if r in compared]
        cmp = compare(_samples(same_run, "step_s"), impls, _noise(same_run, "step_s"))
        _add_reasons(cmp, {r.impl: [r] for r in same_run})
        rows = [_speed_row(r, same_run, cmp) for r in rs]
        b["speed"].append({"config": config_label(*cfg[:2]), "batch_size": cfg[2], "rows": rows, "compare": cmp,
                           "by_impl": {r["impl"]: r for r in rows}})
    b["step_impls"] = impls.sort(r.impl for r in configs)
    b["headline"] = compare(_samples(compared, "step_s"), impls, _noise(compared, "step_s"))
    series: dict[str, list[Replicates]] = defaultdict(list)
    for r in compared:
        series[r.impl].append(r)
    _add_reasons(b["headline"], series)
    aa_names = impls.sort(r.impl for r in compared if r.aa_copy)
    b["noise_floor"] = [{"impl": n, "base": next(r.base_impl for r in compared if r.impl == n),
                         "ratio": _aa_ratio(compared, n, "step_s"), "configs": sum(r.impl == n for r in compared)}
                        for n in aa_names]
    b["synthetic_step"] = any(r.info.data == "synthetic" for r in configs)
    b["processes"] = sorted({r.n for r in configs})
    b["matmul_rate"] = _matmul_rate(configs)


def _speed_row(r: Replicates, group: list[Replicates], cmp: dict | None) -> dict:
    status, tied = (cmp["status"], cmp["tied"]) if cmp else ("single", [])
    if r not in group:
        vs, ratio, verdict = None, None, "other run"
    elif r.copy:
        vs, ratio = r.base_impl, _aa_ratio(group, r, "step_s")
        verdict = ratio.verdict if ratio else "no interval"
    else:
        row = next(x for x in cmp["rows"] if x["impl"] == r.impl)
        vs, ratio, verdict = cmp["fastest"], row["ratio"], row["verdict"]
    return {
        "reason": None if r not in group or r.copy else row["reason"],
        "impl": r.impl,
        "step_s": r.step_s,
        "q1": r.step_q("q1"),
        "q3": r.step_q("q3"),
        "spread": r.spread,
        "n": r.n,
        "planned": r.planned,
        "images_per_s": r.images_per_s,
        "user_images_per_s": num(r.info.user_images_per_s),
        "user_epoch_s": num(r.info.user_epoch_s),
        "vs": vs,
        "ratio": ratio,
        "verdict": verdict,
        "best": verdict == "fastest" and status == "winner",
        "tied": r.impl in tied and status == "no clear difference",
        "aa_copy": r.aa_copy,
        "copy": r.copy,
        "mfu": r.mfu,
        "recompiles": max((num(c.info.recompiles) or 0 for c in r.cells), default=0),
    }


def _users_row(r: Replicates) -> dict | None:
    """The epoch as users run it, over the processes that ran one: its time and the user loop's overhead
    over the kernel steps (user epoch ÷ (its steps × the process's median kernel step)), each the geometric
    mean with a 95% interval across processes. Older results only have the first process's epoch."""
    epochs = r.values("user_epoch_s")
    if not epochs:
        return None
    overheads = r.values("user_overhead")
    return {"impl": r.impl, "config": config_label(r.info.image_size, r.info.pool_stride),
            "batch_size": r.info.batch_size, "epoch": geometric_interval(epochs), "steps": r.info.user_epoch_steps,
            "images_per_s": num(r.info.user_images_per_s), "overhead": geometric_interval(overheads),
            "n": len(epochs), "user_loop": r.info.user_loop}


def _matmul_rate(configs: list[Replicates]) -> dict | None:
    """The run's measured matmul rate on this device (one figure per device per run; median if several)."""
    rates = [num(r.info.peak_flops) for r in configs if num(r.info.peak_flops)]
    if not rates:
        return None
    first = next(r for r in configs if num(r.info.peak_flops))
    return {"flops": median(rates), "precision": first.info.matmul_rate_precision,
            "framework": first.info.matmul_rate_framework, "method": first.info.matmul_rate_method,
            "default_flops": num(first.info.matmul_rate_default), "bf16_flops": num(first.info.matmul_rate_bf16),
            "distinct": len(set(rates))}


def _detail_row(r: Replicates) -> dict:
    """FLOPs (analytic, and XLA's count as a check), achieved rate, MFU and memory of one configuration."""
    flops, analytic = num(r.info.flops_per_step), num(r.info.flops_analytic)
    xla = num(r.info.flops_xla)
    if xla is None and r.info.flops_source == "xla":  # older files: the XLA count was the one used
        xla = flops
    if analytic is None and r.info.flops_source == "analytic":
        analytic = flops
    return {
        "impl": r.impl, "config": config_label(r.info.image_size, r.info.pool_stride), "batch_size": r.info.batch_size,
        "flops_per_step": flops, "flops_source": r.info.flops_source, "flops_analytic": analytic, "flops_xla": xla,
        "xla_to_analytic": num(r.info.flops_xla_to_analytic) or (xla / analytic if xla and analytic else None),
        "achieved": flops / r.step_s if flops and r.step_s else None, "mfu": r.mfu,
        "mfu_precision": r.info.mfu_precision, "datasheet_source": r.info.datasheet_source,
        "mfu_datasheet": flops / r.step_s / sheet if flops and r.step_s and (sheet := num(r.info.datasheet_flops))
        else None,
        "phases": _phases(r), "step_s": r.step_s, "page_faults_per_step": num(r.info.page_faults_per_step),
        "kernel_s_per_step": num(r.info.kernel_s_per_step), "busy_cores": num(r.info.busy_cores),
        "peak_memory_bytes": num(r.info.peak_memory_bytes), "rss_growth_bytes": num(r.info.rss_growth_bytes),
        "framework_rss_bytes": num(r.info.framework_rss_bytes), "training_rss_bytes": num(r.info.training_rss_bytes),
        "device_bytes_in_use": num(r.info.device_bytes_in_use),
        "memory_source": r.info.memory_source, "n": r.n, "commands": commands(r.cells),
    }


# --------------------------------------------------------------------------- compile time


def _compile_ranking(configs: list[Replicates], impls: Impls) -> dict | None:
    """Per implementation, the median over its processes of each compile figure, ranked by the ratio of
    compile times (with interval) to the fastest; A/A copies after, each against its original."""
    cells: dict[str, list[CellRecord]] = defaultdict(list)
    for r in configs:
        if any(num(getattr(c.info, k)) is not None for c in r.cells for k in COMPILE_FIGURES):
            cells[r.impl] += r.cells
    if not cells:
        return None
    cmp = compare(_samples(configs, "compile_s"), impls, _noise(configs, "compile_s"))
    ranked = {x["impl"]: x for x in (cmp["rows"] if cmp else [])}
    rows = []
    for name in list(ranked) + [n for n in impls.sort(cells) if n not in ranked]:
        aa = cells[name][0].copy
        ratio = ranked[name]["ratio"] if name in ranked else _aa_ratio(configs, name, "compile_s") if aa else None
        verdict = ranked[name]["verdict"] if name in ranked else ratio.verdict if ratio else "no interval"
        rows.append({"impl": name, **{k: median(num(getattr(c.info, k)) for c in cells[name]) for k in COMPILE_FIGURES},
                     "n": len(cells[name]), "ratio": ratio, "verdict": verdict, "aa_copy": cells[name][0].aa_copy,
                     "copy": aa,
                     "vs": cmp["fastest"] if name in ranked else cells[name][0].base_impl, "reason": None})
    for row in rows[1:]:
        if row["ratio"] and row["ratio"].value > LARGE_GAP and not row["copy"]:
            row["reason"] = _compile_reason(row, rows[0])
    return {"rows": rows, "status": cmp["status"] if cmp else "single", "fastest": cmp and cmp["fastest"],
            "tied": cmp["tied"] if cmp else []}


def _compile_reason(slow: dict, fast: dict) -> str:
    """Where a compile-time gap lies, from JAX's trace / lower / compile split where both sides have it."""
    names = {"trace_s": "tracing", "lower_s": "lowering", "compile_only_s": "XLA's compile"}
    if any(slow[k] is None or fast[k] is None for k in names):
        return "unexplained: only JAX splits its compile time (TensorFlow reports none)"
    part = max(names, key=lambda k: slow[k] - fast[k])
    return f"most of it is {names[part]} ({slow[part]:.2f} vs {fast[part]:.2f} s)"


# --------------------------------------------------------------------------- accuracy


def _accuracy_row(c: CellRecord) -> dict:
    accs = [a for a in (c.info.test_accuracies or []) if num(a) is not None]
    seeds = c.info.seeds if isinstance(c.info.seeds, list) else []
    mean = num(c.info.test_accuracy_mean)
    protocol = (c.info.protocol or "?")
    return {
        "impl": c.impl,
        "protocol": protocol,
        "label": f"{protocol} split, {'augmented' if c.info.augment else 'no augmentation'}",
        "augment": c.info.augment,
        "epochs": c.info.epochs,
        "seeds": seeds,
        "n_seeds": len(seeds) or len(accs),
        "mean": mean if mean is not None else (accs[0] if len(accs) == 1 else None),
        "sd": num(c.info.test_accuracy_sd),
        "min": min(accs) if accs else None,
        "max": max(accs) if accs else None,
        "from_cache": bool(c.info.from_cache),
        "train_s": num(c.info.train_s),
        "data": c.info.data,
        "config": config_label(c.info.image_size, c.info.pool_stride),
        "batch_size": c.info.batch_size,
        "commands": commands([c]),
    }


def _accuracy_table(rows: list[dict]) -> list[dict]:
    """One row per condition (config, protocol, augmentation), one column per implementation."""
    conds: dict[tuple, dict] = {}
    multi_cfg = len({r["config"] for r in rows}) > 1
    for r in rows:
        k = (r["config"], str(r["protocol"]), bool(r["augment"]))
        if k not in conds:
            conds[k] = {
                "label": r["label"],
                "short": f"{r['protocol']}{' + aug' if r['augment'] else ''}",
                "config": r["config"] if multi_cfg else "",
                "by_impl": {},
                "epochs": r["epochs"],
                "seeds": r["n_seeds"],
            }
        conds[k]["by_impl"][r["impl"]] = r
        conds[k]["seeds"] = max(conds[k]["seeds"], r["n_seeds"])
    for c in conds.values():
        means = [r["mean"] for r in c["by_impl"].values() if r["mean"] is not None]
        c["spread"] = max(means) - min(means) if len(means) > 1 else None
    return [conds[k] for k in sorted(conds, key=lambda k: (k[0], k[1] != "original", k[2]))]


def timed_regions(model: Model) -> list[dict]:
    """Per implementation, what one timed step contains (a row per distinct sentence, with its devices where
    there are several) and how users run it (recorded by some processes only)."""
    impls = Impls.of(model)
    regions: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    loops: dict[str, list[str]] = defaultdict(list)
    for c in model.ok("step"):
        if c.copy:
            continue
        if c.info.timed_region:
            regions[c.impl][str(c.info.timed_region)].add(c.device)
        if c.info.user_loop and str(c.info.user_loop) not in loops[c.impl]:
            loops[c.impl].append(str(c.info.user_loop))
    rows = []
    for name in impls.sort([*regions, *loops]):
        for text, devs in regions.get(name, {None: set()}).items():
            rows.append({"impl": name, "timed_region": text, "user_loop": "; ".join(loops.get(name, [])) or None,
                         "devices": ", ".join(sorted(devs)) if len(regions[name]) > 1 else ""})
    return rows
