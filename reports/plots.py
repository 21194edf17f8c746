"""The report's figures: matplotlib (Agg, no pyplot state), embedded as base64 SVG.

Every figure is tagged with its machine, has titled axes with units, and draws
each implementation in its page colour throughout (`views.Impls`). A figure with
nothing to show becomes a short "no data" note instead of an error.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from benchmarks.record import CellRecord, num  # noqa: E402
from reports.model import HistoryPoint, Model, Replicates  # noqa: E402
from reports.stats import geomean  # noqa: E402
from reports.views import Impls, config_label, device_label, sortkey  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", ":", "-.", "--"]
ACCENT = "#D55E00"  # Okabe-Ito vermillion: the measured matmul rate and the gate's regressions
# stage -> (label, alpha): shades of the implementation's colour (SVG hatches are huge)
STAGES = [("trace_s", "trace", 0.35), ("lower_s", "lower", 0.6), ("compile_only_s", "XLA compile", 1.0)]

RC = {
    "svg.fonttype": "none",  # text stays text: small files, crisp, selectable
    "svg.hashsalt": "xfbench",
    "font.family": "DejaVu Sans",  # ships with matplotlib: same metrics everywhere
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 9,
}


@dataclass
class Fig:
    id: str
    group: str  # which plot family: throughput | compile | accuracy | mfu | history
    title: str
    machine: str  # the machine tag shown with the figure
    caption: str = ""
    uri: str | None = None  # data:image/svg+xml;base64,...
    note: str | None = None  # "no data" or a warning
    alt: str = ""
    width: int = 0
    height: int = 0


# --------------------------------------------------------------------------- plumbing


def _encode(fig: Figure) -> tuple[str, int, int]:
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})  # constrained layout already fits
    w, h = fig.get_size_inches() * 96  # CSS pixels: the SVG is sized in points (1 pt = 4/3 px)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), int(w), int(h)


def _new(w: float, h: float, nrows: int = 1, ncols: int = 1, **kw):
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(w, h), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _finish(fig: Figure, device: str, **fields: Any) -> Fig:
    """Tag the figure with its machine and device, then encode it."""
    out = Fig(**fields)
    fig.suptitle(f"machine: {out.machine}   ·   device: {device}", x=0.01, ha="left", fontsize=9, color="#444444",
                 wrap=True)
    out.uri, out.width, out.height = _encode(fig)
    return out


def _empty(fid: str, group: str, title: str, why: str) -> Fig:
    return Fig(id=fid, group=group, title=title, machine="–", note=f"No data: {why}")


def _panels(n: int, w: float, h: float, max_w: float, extra_h: float = 0, **kw) -> tuple[Figure, list]:
    """A figure with `n` panels of w × h inches in rows of up to three; the spare grid cells hidden."""
    nc = min(n, 3)
    nr = math.ceil(n / nc)
    fig, axes = _new(min(w * nc, max_w), h * nr + extra_h, nr, nc, **kw)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


Measured = CellRecord | Replicates  # a figure draws cells, or step configurations with their processes


def _cfg(c: Measured) -> tuple:
    return (c.info.image_size, c.info.pool_stride)


def _by_device(cells: list[Measured]) -> dict[tuple, list[Measured]]:
    """Cells per (machine, device, precision): no figure mixes precisions."""
    out: dict[tuple, list[Measured]] = defaultdict(list)
    for c in cells:
        out[(c.machine, c.device, c.precision)].append(c)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1].lower() != "cpu", kv[0][1],
                                                    kv[0][2] != "float32", kv[0][2])))


def _slug(*parts: Any) -> str:
    s = "-".join(str(p) for p in parts)
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")


def _impl_legend(fig: Figure, names: list[str], impls: Impls, extra=()) -> None:
    handles = [Patch(facecolor=impls.color(n), label=n) for n in names] + list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))


DrawFn = Callable[[list[Measured], Impls, str, str], tuple[Figure, dict]]


def _per_device(model: Model, cells: list[Measured], group: str, impls: Impls, draw: DrawFn) -> list[Fig]:
    """One figure per (machine, device): draw(cells, impls, device label, machine label) -> figure, Fig fields."""
    figs = []
    for (mk, dev, precision), cs in _by_device(cells).items():
        label, devlabel = model.machines[mk].label, device_label(model, mk, dev, precision)
        fig, fields = draw(cs, impls, devlabel, label)
        figs.append(_finish(fig, devlabel, id=_slug(group, label, dev, *([precision] if precision != "float32" else [])),
                            group=group, machine=label, **fields))
    return figs


MachineDrawFn = Callable[[Model, str, list[CellRecord], Impls], tuple[Figure, dict]]


def _per_machine(model: Model, cells: list[CellRecord], fid: str, impls: Impls, draw: MachineDrawFn) -> list[Fig]:
    """One accuracy figure per machine: draw(model, machine key, its cells, impls) -> figure, Fig fields."""
    by_machine: dict[str, list[CellRecord]] = defaultdict(list)
    for c in cells:
        by_machine[c.machine].append(c)
    figs = []
    for mk, cs in sorted(by_machine.items()):
        label = model.machines[mk].label
        devices = ", ".join(device_label(model, mk, d) for d in sorted({c.device for c in cs}))
        fig, fields = draw(model, mk, cs, impls)
        figs.append(_finish(fig, devices, id=_slug(fid, label), group="accuracy", machine=label, **fields))
    return figs


# --------------------------------------------------------------------------- bars per batch size


def _config_panels(cs: list[Measured], w: float, h: float, max_w: float) -> tuple[Figure, list[tuple]]:
    """A panel per (image size, pool stride): the figure and [(axes, config, its cells)]."""
    configs = sorted({_cfg(c) for c in cs}, key=sortkey)
    fig, axes = _panels(len(configs), w, h, max_w)
    return fig, [(ax, cfg, [c for c in cs if _cfg(c) == cfg]) for ax, cfg in zip(axes, configs)]


def _batches(cells: list[Measured]) -> list:
    return sorted({c.info.batch_size for c in cells}, key=sortkey)


def _bar_width(names: list[str]) -> float:
    return 0.8 / max(len(names), 1)


def _bar_slots(sub: list[Measured], names: list[str], batches: list) -> Iterator[tuple[str, list[tuple[float, Measured]]]]:
    """Per implementation, (x, cell) of its bars: a group per batch size, a bar per implementation."""
    width = _bar_width(names)
    for j, name in enumerate(names):
        slots = []
        for k, bs in enumerate(batches):
            c = next((c for c in sub if c.impl == name and c.info.batch_size == bs), None)
            if c is not None:
                slots.append((k - 0.4 + width * (j + 0.5), c))
        yield name, slots


def _batch_axis(ax, batches: list, cfg: tuple, ylabel: str) -> None:
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlim(-0.6, len(batches) - 0.4)
    ax.set_xlabel("batch size (images)")
    ax.set_ylabel(ylabel)
    ax.set_title(config_label(*cfg))
    ax.grid(axis="x", visible=False)


# --------------------------------------------------------------------------- throughput


def throughput(model: Model, impls: Impls) -> list[Fig]:
    configs = [r for r in model.step_configs() if r.info.batch_size is not None]
    if not configs:
        return [_empty("throughput", "throughput", "Throughput per implementation, device and batch size",
                       "no finished step cell.")]
    return _per_device(model, configs, "throughput", impls, _throughput_fig)


def _throughput_fig(cs: list[Replicates], impls: Impls, devlabel: str, label: str) -> tuple[Figure, dict]:
    names = impls.sort(c.impl for c in cs)
    fig, panels = _config_panels(cs, 4.6, 3.4, 12)
    for ax, cfg, sub in panels:
        batches = _batches(sub)
        for name, slots in _bar_slots(sub, names, batches):
            _throughput_bars(ax, slots, _bar_width(names) * 0.92, impls.color(name))
        _batch_axis(ax, batches, cfg, "throughput (images / s)")
    extra = [Line2D([], [], marker=".", color="#222222", ls="", label="one worker process")] if any(
        r.n > 1 for r in cs) else []
    users = any(num(r.info.user_images_per_s) for r in cs)
    if users:
        extra.append(Line2D([], [], marker="D", mfc="white", mec="#222222", ls="", label="as users run it"))
    _impl_legend(fig, names, impls, extra)
    return fig, {
        "title": f"Throughput on {devlabel}",
        "caption": "Bars: training images per second from the kernel step (batch size ÷ step time, device "
        "synchronised, batch already on the device; the geometric mean over worker processes of each process's "
        "median). Dots: each process. Error bars: the range over processes, or the interquartile range of step "
        "time where one process ran."
        + (" Hollow diamonds: images per second as users run it (a whole epoch from host memory, "
           "the framework's usual loop)." if users else "") + " Higher is better.",
        "alt": f"Bar chart of training throughput in images per second per implementation and batch size on {devlabel}, machine {label}",
    }


def _throughput_bars(ax, slots: list[tuple[float, Replicates]], width: float, color: str) -> None:
    """One implementation's bars (images/s), their spread, a dot per process and the as-users-run-it diamond."""
    for x, r in slots:
        bs = r.info.batch_size
        y = bs / r.step_s
        q1, q3 = r.step_q("q1"), r.step_q("q3")  # step time: q3 -> fewer images/s, q1 -> more
        err = [[max(y - bs / q3, 0) if q3 else 0], [max(bs / q1 - y, 0) if q1 else 0]]
        ax.bar([x], [y], width, color=color, yerr=err, capsize=3, error_kw={"elinewidth": 1, "ecolor": "#222222"})
        if r.n > 1:
            ax.plot([x + width * 0.25] * r.n, [bs / v for v in r.values("step_s")], ".", color="#222222",
                    markersize=3, alpha=0.7)
        user = num(r.info.user_images_per_s)
        if user:
            ax.plot([x], [user], marker="D", mfc="white", mec="#222222", markersize=5, ls="", zorder=5)


# --------------------------------------------------------------------------- compile


def compile_breakdown(model: Model, impls: Impls) -> list[Fig]:
    keys = ("compile_s", *(k for k, _, _ in STAGES))
    configs = [r for r in model.step_configs() if any(num(getattr(r.info, k)) is not None for k in keys)]
    if not configs:
        return [_empty("compile", "compile", "Compile time", "no step cell reported compile timings.")]
    return _per_device(model, configs, "compile", impls, _compile_fig)


def _compile_fig(cs: list[Replicates], impls: Impls, devlabel: str, label: str) -> tuple[Figure, dict]:
    # one row per (config, batch size, impl); too many rows -> smallest and largest batch only
    batches, configs = _batches(cs), {_cfg(c) for c in cs}
    if len(batches) * len(configs) * len({c.impl for c in cs}) > 18 and len(batches) > 2:
        cs = [c for c in cs if c.info.batch_size in (batches[0], batches[-1])]
    cs = sorted(cs, key=lambda c: (sortkey(_cfg(c)), sortkey((c.info.batch_size,)), impls.rank(c.impl)))
    fig, axes = _new(9.5, 1.4 + 0.3 * len(cs))
    ax = axes[0][0]
    labels = [_compile_bar(ax, len(cs) - 1 - i, c, impls.color(c.impl), len(configs) > 1) for i, c in enumerate(cs)]
    ax.set_yticks(range(len(cs) - 1, -1, -1), labels)
    for tick, c in zip(ax.get_yticklabels(), cs):
        tick.set_color(impls.color(c.impl))
    ax.set_xlabel("time (s), cold, persistent compilation cache off")
    ax.set_ylabel("implementation · batch size")
    ax.set_title("Cold compile, stacked stages; ◆ = first − steady step", loc="left")
    ax.grid(axis="y", visible=False)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.12)
    handles = [Patch(facecolor="#555555", alpha=a, label=lab) for _, lab, a in STAGES]
    handles.append(Line2D([], [], marker="D", color="#111111", linestyle="", label="first step − steady step"))
    if any(c.n > 1 for c in cs):
        handles.append(Line2D([], [], marker="|", color="#111111", linestyle="", label="one worker process"))
    fig.legend(handles=handles, loc="outside lower center", ncols=5)
    return fig, {
        "title": f"Compile time on {devlabel}",
        "caption": "Stacked bars: JAX's trace, lower and XLA-compile stages (from jax.stages, or jax.monitoring "
        "where Keras jits internally). Diamond: first step minus the steady step, the one figure comparable "
        "across all implementations. With several worker processes, each figure is the median over them and the "
        "ticks are the processes. TensorFlow exposes no stage split. Lower is better.",
        "alt": f"Horizontal stacked bar chart of compile time per implementation on {devlabel}, machine {label}",
    }


def _compile_bar(ax, y: int, c: Replicates, color: str, multi_config: bool) -> str:
    """Draw one cell's stacked stages and first-minus-steady diamond at height y; return its tick label."""
    left = 0.0
    for key, _, alpha in STAGES:
        v = num(getattr(c.info, key))
        if v is not None:
            ax.barh(y, v, left=left, height=0.62, color=color, alpha=alpha, edgecolor="white", linewidth=0.8)
            left += v
    first_minus_steady = num(c.info.compile_s)
    per_process = c.values("compile_s")
    if len(per_process) > 1:
        ax.plot(per_process, [y] * len(per_process), "|", color="#111111", markersize=9, zorder=4)
    if first_minus_steady is not None:
        ax.plot([first_minus_steady], [y], marker="D", color="#111111", markersize=6, zorder=5)
        ax.annotate(f"{first_minus_steady:.2f} s", (max([first_minus_steady, *per_process]), y), xytext=(7, 0),
                    textcoords="offset points", va="center", fontsize=8)
    if all(num(getattr(c.info, key)) is None for key, _, _ in STAGES):
        ax.annotate("no trace/lower/compile split" + (" (TensorFlow)" if c.info.backend == "tensorflow" else ""),
                    (0, y), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=8, color="#555555", style="italic")
    size, stride = _cfg(c)
    return f"{c.impl} · bs {c.info.batch_size}" + (f" · {size}px s{stride}" if multi_config else "")


# --------------------------------------------------------------------------- accuracy


def accuracy(model: Model, impls: Impls) -> list[Fig]:
    return _accuracy_curves(model, impls) + _accuracy_compare(model, impls)


def _cond(c: CellRecord) -> tuple:
    """(image size, pool stride, protocol, augmented, device): what one accuracy figure compares."""
    return (c.info.image_size, c.info.pool_stride, str((c.info.protocol or "?")), bool(c.info.augment), c.device)


def _curves(c: CellRecord, key: str) -> list[list[float]]:
    hist = c.info.history
    out = []
    for seed_hist in hist if isinstance(hist, list) else []:
        if not isinstance(seed_hist, list):
            continue
        ys = [num(e.get(key)) for e in seed_hist if isinstance(e, dict)]
        if ys and all(y is not None for y in ys):
            out.append(ys)
    return out


def _accuracy_curves(model: Model, impls: Impls) -> list[Fig]:
    cells = [c for c in model.ok("accuracy") if _curves(c, "test_accuracy") or _curves(c, "train_accuracy")]
    if not cells:
        return [_empty("accuracy-curves", "accuracy", "Accuracy per epoch", "no accuracy cell with a per-epoch history.")]
    return _per_machine(model, cells, "accuracy-curves", impls, _curves_fig)


def _curves_fig(model: Model, mk: str, cs: list[CellRecord], impls: Impls) -> tuple[Figure, dict]:
    devices = sorted({c.device for c in cs})
    conds = sorted({_cond(c) for c in cs}, key=sortkey)
    multi_config = len({(s, p) for s, p, *_ in conds}) > 1
    fig, axes = _panels(len(conds), 4.4, 3.3, 13, extra_h=0.4, sharey=True)
    for ax, cond in zip(axes, conds):
        for c in cs:
            if _cond(c) == cond:
                _draw_curves(ax, c, impls.color(c.impl))
        size, stride, protocol, aug, dev = cond
        title = f"{protocol} split, {'augmented' if aug else 'no augmentation'}"
        if multi_config:
            title += f"\n{config_label(size, stride)}"
        if len(devices) > 1:
            title += f" · {device_label(model, mk, dev)}"
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=impls.color(n), lw=2, label=n) for n in impls.sort(c.impl for c in cs)]
    handles += [Line2D([], [], color="#444444", lw=1.8, label="test (mean over seeds)"),
                Line2D([], [], color="#444444", lw=1.2, ls="--", label="train (mean over seeds)"),
                Patch(facecolor="#444444", alpha=0.2, label="min–max over seeds")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    seeds = sorted({len(c.info.seeds or _curves(c, "test_accuracy")) for c in cs})
    return fig, {
        "title": "Accuracy per epoch, per protocol and augmentation",
        "caption": f"Solid: test accuracy; dashed: training accuracy; each the mean over seeds "
        f"({'/'.join(str(s) for s in seeds)} per implementation), band: min–max over seeds. "
        "Same data, same order, same initial weights for every implementation.",
        "alt": "Line charts of train and test accuracy per epoch for each implementation, "
        f"machine {model.machines[mk].label}",
    }


def _draw_curves(ax, c: CellRecord, color: str) -> None:
    """Test (solid) and train (dashed) accuracy per epoch: the mean over seeds, and a min–max band."""
    for key, ls, lw in (("test_accuracy", "-", 1.8), ("train_accuracy", "--", 1.2)):
        curves = _curves(c, key)
        if not curves:
            continue
        n = min(len(cv) for cv in curves)
        ep = list(range(1, n + 1))
        cols = [[cv[e] * 100 for cv in curves] for e in range(n)]
        mean = [statistics.fmean(v) for v in cols]
        ax.plot(ep, mean, ls, color=color, lw=lw, marker="o" if n <= 12 and key == "test_accuracy" else None,
                markersize=3)
        if len(curves) > 1:
            ax.fill_between(ep, [min(v) for v in cols], [max(v) for v in cols], color=color,
                            alpha=0.18 if key == "test_accuracy" else 0.08, linewidth=0)


def _accuracy_compare(model: Model, impls: Impls) -> list[Fig]:
    """Final accuracy across conditions: the original-vs-resplit and augmentation comparison."""
    cells = [c for c in model.ok("accuracy") if num(c.info.test_accuracy_mean) is not None]
    if not cells:
        return [_empty("accuracy-compare", "accuracy", "Final test accuracy by protocol and augmentation",
                       "no accuracy cell finished.")]
    return _per_machine(model, cells, "accuracy-compare", impls, _compare_fig)


def _compare_fig(model: Model, mk: str, cs: list[CellRecord], impls: Impls) -> tuple[Figure, dict]:
    conds = sorted({_cond(c) for c in cs}, key=sortkey)
    names = impls.sort(c.impl for c in cs)
    devices = sorted({c.device for c in cs})
    fig, axes = _new(max(6.0, 1.4 * len(conds) + 2.5), 3.9)
    ax = axes[0][0]
    w = 0.7 / max(len(names), 1)
    for j, name in enumerate(names):
        for i, cond in enumerate(conds):
            c = next((c for c in cs if c.impl == name and _cond(c) == cond), None)
            if c is not None:
                _draw_final(ax, i - 0.35 + w * (j + 0.5), w, c, impls.color(name))
    multi_config = len({(s, p) for s, p, *_ in conds}) > 1
    ax.set_xticks(range(len(conds)), [_compare_label(cond, multi_config, len(devices) > 1) for cond in conds])
    ax.set_xlim(-0.6, len(conds) - 0.4)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_xlabel("split protocol · augmentation")
    ax.set_title("Final test accuracy: mean ± sd over seeds (dots: each seed)")
    ax.grid(axis="x", visible=False)
    handles = [Line2D([], [], marker="o", color=impls.color(n), ls="", label=n) for n in names]
    if any(c.info.from_cache for c in cs):
        handles.append(Line2D([], [], marker="o", color="#444444", mfc="white", ls="", label="hollow: from cache"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return fig, {
        "title": "Original split vs stratified re-split, with and without augmentation",
        "caption": "Final test accuracy per implementation for each split protocol and augmentation setting. "
        "Error bars: one standard deviation over seeds; small dots: the individual seeds. "
        "A hollow marker means the figure was reused from the accuracy cache, not retrained in this run.",
        "alt": f"Dot plot of final test accuracy per protocol and augmentation setting, machine {model.machines[mk].label}",
    }


def _draw_final(ax, x: float, w: float, c: CellRecord, color: str) -> None:
    """Mean ± sd over seeds at x (hollow when reused from the cache; no bar for one seed), and a dot per seed."""
    mean = c.info.test_accuracy_mean * 100
    sd = (num(c.info.test_accuracy_sd) or 0) * 100
    one_seed = len(c.info.seeds or c.info.test_accuracies or []) == 1
    ax.errorbar([x], [mean], yerr=None if one_seed else [sd], fmt="o", color=color, capsize=4, markersize=7,
                mfc="white" if c.info.from_cache else color, mew=1.8)
    for a in c.info.test_accuracies or []:
        if num(a) is not None:
            ax.plot([x + w * 0.28], [a * 100], ".", color=color, alpha=0.5, markersize=4)


def _compare_label(cond: tuple, multi_config: bool, multi_device: bool) -> str:
    size, stride, protocol, aug, dev = cond
    lab = f"{protocol}\n{'augmented' if aug else 'no augment.'}"
    if multi_config:
        lab += f"\n{size}px, stride {stride}"
    if multi_device:
        lab += f"\n{dev}"
    return lab


# --------------------------------------------------------------------------- MFU


def mfu(model: Model, impls: Impls) -> list[Fig]:
    configs = [r for r in model.step_configs() if num(r.info.flops_per_step) and r.info.batch_size is not None]
    if not configs:
        return [_empty("mfu", "mfu", "Model FLOP utilisation", "no step cell reported FLOPs per step.")]
    return _per_device(model, configs, "mfu", impls, _mfu_fig)


def _matmul_rate(cs: list[Replicates]) -> tuple[float | None, str]:
    """The run's measured matmul rate on this device (median where runs differ) and how it was measured."""
    rates = [num(c.info.peak_flops) for c in cs if num(c.info.peak_flops)]
    how = next((c.info.matmul_rate_method or ", ".join(str(v) for v in (c.info.matmul_rate_precision,
                                                                         c.info.matmul_rate_framework) if v)
                for c in cs if num(c.info.peak_flops)), "")
    return (statistics.median(rates) if rates else None), how


def _mfu_fig(cs: list[Replicates], impls: Impls, devlabel: str, label: str) -> tuple[Figure, dict]:
    rate, how = _matmul_rate(cs)
    scale, unit = (1e12, "TFLOP/s") if (rate or 0) >= 1e12 else (1e9, "GFLOP/s")
    fig, panels = _config_panels(cs, 4.8, 3.5, 12.5)
    names = impls.sort(c.impl for c in cs)
    for ax, cfg, sub in panels:
        batches = _batches(sub)
        crowded = len(names) * len(batches) > 9
        for name, slots in _bar_slots(sub, names, batches):
            for x, c in slots:
                _mfu_bar(ax, x, _bar_width(names) * 0.92, c, impls.color(name), scale, crowded)
        if rate:
            ax.axhline(rate / scale, color=ACCENT, ls="--", lw=1.4)
            top = max([rate] + [c.info.flops_per_step / c.step_s for c in sub])
            ax.set_ylim(0, top / scale * 1.18)
        _batch_axis(ax, batches, cfg, f"achieved ({unit})")
    extra = []
    if rate:
        extra.append(Line2D([], [], color=ACCENT, ls="--", lw=1.4, label=f"measured matmul rate (float32) {rate / scale:.3g} {unit}"))
    if any(c.info.flops_source == "xla" for c in cs):
        extra.append(Patch(facecolor="#999999", hatch="xx", edgecolor="white", label="XLA's FLOP count (older results)"))
    _impl_legend(fig, names, impls, extra)
    return fig, {
        "title": f"Achieved FLOP/s and MFU on {devlabel}",
        "caption": "Bars: FLOPs per training step (the analytic count; XLA's cost analysis is listed beside it "
        "under “Compute and memory” as a check) ÷ step time. Dashed line: the matmul rate measured on the same "
        f"device in the same run (a large matmul{f', {how}' if how else ''}, not a datasheet figure). Labels: MFU, "
        "the bar as a fraction of that rate." + ("" if rate else " No matmul rate was measured for this device."),
        "alt": f"Bar chart of achieved FLOP per second against the measured matmul rate on {devlabel}, machine {label}",
    }


def _mfu_bar(ax, x: float, width: float, c: Replicates, color: str, scale: float, crowded: bool) -> None:
    """One bar of achieved FLOP/s (hatched for XLA's count), labelled with its MFU."""
    achieved = c.info.flops_per_step / c.step_s
    ax.bar([x], [achieved / scale], width, color=color, hatch="xx" if c.info.flops_source == "xla" else "",
           edgecolor="white")
    frac = c.mfu
    if frac is not None:
        ax.annotate(f"{frac * 100:.0f}%" if frac >= 0.1 else f"{frac * 100:.1f}%",
                    (x, achieved / scale), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7, rotation=90 if crowded else 0)


# --------------------------------------------------------------------------- history


def history(model: Model, impls: Impls) -> list[Fig]:
    if not model.history:
        return [_empty("history", "history", "Step time across commits",
                       "no saved pytest-benchmark runs (the storage folder, default .benchmarks/, is empty or was not given).")]
    by_dev: dict[tuple, list[HistoryPoint]] = defaultdict(list)
    for p in model.history:
        by_dev[(p.machine, p.device)].append(p)
    # the gate compares the newest run of a device with its baseline: mark regressions there only
    newest: dict[str, HistoryPoint] = {}
    for p in model.history:
        if p.device not in newest or p.when > newest[p.device].when:
            newest[p.device] = p
    return [_history_fig(model, mk, dev, ps, impls, gated=newest[dev].machine == mk)
            for (mk, dev), ps in sorted(by_dev.items())]


def _history_fig(model: Model, mk: str, dev: str, ps: list[HistoryPoint], impls: Impls, gated: bool) -> Fig:
    label, devlabel = model.machines[mk].label, device_label(model, mk, dev)
    commits = _commits_in_time_order(ps)
    fid, title = _slug("history", label, dev), f"Step time across commits on {devlabel}"
    if len(commits) < 2:
        return Fig(id=fid, group="history", title=title, machine=label,
                   note=f"No history yet on {label} · {devlabel}: saved results exist for one commit only "
                        f"({commits[0][:10]}). The plot appears from the second saved commit on.")
    series = _history_series(ps)
    batches = sorted({k[1] for k in series}, key=sortkey)
    configs = sorted({(k[2], k[3]) for k in series}, key=sortkey)
    marker = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(batches)}
    linestyle = {cfg: LINESTYLES[i % len(LINESTYLES)] for i, cfg in enumerate(configs)}
    fig, axes = _new(max(6.0, min(12.5, 2.5 + 0.7 * len(commits))), 3.8)
    ax = axes[0][0]
    cidx = {c: i for i, c in enumerate(commits)}
    nreg = 0
    for k in sorted(series, key=lambda k: (impls.rank(k[0]), sortkey(k[1:]))):
        got = sorted((cidx[c], *_history_value(pts)) for c, pts in series[k].items())
        xs = [x for x, *_ in got]
        ys = [y * 1e3 for _, y, _, _ in got]
        lo = [max(y - q1 * 1e3, 0) if q1 else 0 for y, (_, _, q1, _) in zip(ys, got)]
        hi = [max(q3 * 1e3 - y, 0) if q3 else 0 for y, (_, _, _, q3) in zip(ys, got)]
        ax.errorbar(xs, ys, yerr=[lo, hi], color=impls.color(k[0]), marker=marker[k[1]], ls=linestyle[k[2:]],
                    lw=1.3, markersize=5, capsize=2)
        if gated:
            nreg += _mark_regressions(ax, model.regressions, k, dev, xs[-1], ys[-1])
    _history_axes(ax, commits, ps)
    handles = [Line2D([], [], color=impls.color(n), lw=2, label=n) for n in impls.sort(k[0] for k in series)]
    handles += [Line2D([], [], color="#444444", marker=marker[b], ls="", label=f"batch {b}") for b in batches]
    if len(configs) > 1:
        handles += [Line2D([], [], color="#444444", ls=linestyle[c], label=config_label(*c)) for c in configs]
    if nreg:
        handles.append(Line2D([], [], marker="o", mfc="none", mec=ACCENT, mew=2, ls="", markersize=10,
                              label="regression (gate)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(
        fig,
        devlabel,
        id=fid,
        group="history",
        title=title,
        machine=label,
        caption="Step time per saved pytest-benchmark run (storage folder), per training step in old and new "
        "files alike (older files' per-call statistics ÷ steps per call): a run's median with its IQR as the error "
        "bar, or the geometric mean of its worker processes' medians with their range. Colour per implementation, "
        "marker per batch size; log scale. Circled points are the regressions the gate flagged"
        + (f" ({model.gate_source})." if model.gate_source else " (no gate file found)."),
        alt=f"Line chart of step time across commits on {devlabel}, machine {label}",
    )


def _commits_in_time_order(ps: list[HistoryPoint]) -> list[str]:
    commit_time: dict[str, str] = {}
    for p in ps:
        commit_time[p.commit] = min(commit_time.get(p.commit, p.commit_time), p.commit_time)
    return sorted(commit_time, key=lambda c: commit_time[c])


def _history_series(ps: list[HistoryPoint]) -> dict[tuple, dict[str, list[HistoryPoint]]]:
    """(impl, batch size, image size, pool stride) -> commit -> the points of its latest run (one per process)."""
    series: dict[tuple, dict[str, list[HistoryPoint]]] = defaultdict(lambda: defaultdict(list))
    for p in ps:
        series[(p.impl, p.batch_size, p.image_size, p.pool_stride)][p.commit].append(p)
    return {k: {c: [p for p in pts if p.when == max(q.when for q in pts)] for c, pts in by_commit.items()}
            for k, by_commit in series.items()}


def _history_value(pts: list[HistoryPoint]) -> tuple[float, float | None, float | None]:
    """(step time, low, high): one process's median and IQR, or the geometric mean and range of several."""
    if len(pts) == 1:
        return pts[0].step_s, pts[0].q1, pts[0].q3
    vals = [p.step_s for p in pts]
    return geomean(vals), min(vals), max(vals)


def _mark_regressions(ax, regressions: list[dict], k: tuple, dev: str, x: float, y: float) -> int:
    """Circle the newest point of series k once per gate regression that matches it; return how many."""
    impl, bs, size, stride = k
    n = 0
    for r in regressions:  # step-time regressions only: the gate also reports compile time
        if (r.get("metric", "step") == "step" and r.get("impl") == impl and str(r.get("device")) == dev
                and r.get("batch_size") == bs and (r.get("image_size") is None or r.get("image_size") == size)
                and (r.get("pool_stride") is None or r.get("pool_stride") == stride)):
            n += 1
            ax.plot([x], [y], marker="o", markersize=15, mfc="none", mec=ACCENT, mew=2.2, zorder=6)
            ratio = num(r.get("ratio"))
            ax.annotate(f"regression ×{ratio:.2f}" if ratio else "regression", (x, y), xytext=(-8, 10),
                        textcoords="offset points", ha="right", fontsize=8, color=ACCENT, weight="bold")
    return n


def _history_axes(ax, commits: list[str], ps: list[HistoryPoint]) -> None:
    ax.set_xticks(range(len(commits)),
                  [c[:7] + ("*" if any(p.dirty for p in ps if p.commit == c) else "") for c in commits],
                  rotation=30 if len(commits) > 6 else 0)
    ax.set_xlim(-0.5, len(commits) - 0.5)
    ax.set_xlabel("commit, oldest → newest (* = uncommitted changes)")
    ax.set_ylabel("median step time (ms)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "2357" else ""))
    ax.set_title("Step time across commits")


# --------------------------------------------------------------------------- all

FIGURES = (("throughput", throughput), ("compile", compile_breakdown), ("accuracy", accuracy),
           ("mfu", mfu), ("history", history))


def all_figures(model: Model) -> dict[str, list[Fig]]:
    impls = Impls.of(model)
    out: dict[str, list[Fig]] = {}
    with matplotlib.rc_context(RC):
        for name, fn in FIGURES:
            try:
                out[name] = fn(model, impls)
            except Exception as e:  # noqa: BLE001 -- a broken figure must not take the page down; say so on it
                traceback.print_exc()
                out[name] = [Fig(id=name, group=name, title=name, machine="–",
                                 note=f"This figure could not be drawn: {type(e).__name__}: {e}")]
    return out
