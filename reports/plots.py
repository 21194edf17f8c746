"""The report's figures: matplotlib (Agg, no pyplot state), embedded as base64 SVG.

Every figure is tagged with its machine, has titled axes with units, and draws
each implementation in one Okabe-Ito colour throughout. A figure with nothing to
show becomes a short "no data" note instead of an error.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from reports.build import (  # noqa: E402
    KNOWN_IMPLS,
    Cell,
    HistoryPoint,
    Model,
    _config_label,
    _num,
    _sortkey,
    device_label,
    impl_order,
)

# Okabe & Ito (2008), colour-blind safe. Fixed per implementation, page-wide.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
_FIXED = {"flax": "#0072B2", "keras-jax": "#E69F00", "keras-tf": "#009E73"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

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
    notes: list[str] = field(default_factory=list)


def impl_colors(impls) -> dict[str, str]:
    colors = dict(_FIXED)
    spare = [c for c in OKABE_ITO if c not in colors.values()]
    for i, name in enumerate(n for n in impl_order(impls) if n not in colors):
        colors[name] = spare[i % len(spare)]
    return colors


def _color(name: str, colors: dict[str, str]) -> str:
    return colors.get(name, "#777777")


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
    fig.suptitle(f"machine: {out.machine}   ·   device: {device}", x=0.01, ha="left", fontsize=9, color="#444444")
    out.uri, out.width, out.height = _encode(fig)
    return out


def _empty(fid: str, group: str, title: str, why: str) -> Fig:
    return Fig(id=fid, group=group, title=title, machine="–", note=f"No data: {why}")


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _cfg(c: Cell) -> tuple:
    return (c.x("image_size"), c.x("pool_stride"))


def _by_device(cells: list[Cell]) -> dict[tuple, list[Cell]]:
    out: dict[tuple, list[Cell]] = defaultdict(list)
    for c in cells:
        out[(c.machine, c.device)].append(c)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1].lower() != "cpu", kv[0][1])))


def _slug(*parts: Any) -> str:
    s = "-".join(str(p) for p in parts)
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")


def _impl_legend(fig, impls, colors, extra=()) -> None:
    handles = [Patch(facecolor=_color(n, colors), label=n) for n in impls] + list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))


# --------------------------------------------------------------------------- throughput


def throughput(model: Model, colors: dict[str, str]) -> list[Fig]:
    cells = [c for c in model.ok("step") if c.step_s is not None and c.x("batch_size") is not None]
    if not cells:
        return [_empty("throughput", "throughput", "Throughput per implementation, device and batch size",
                       "no finished step cell.")]
    figs = []
    for (mk, dev), cs in _by_device(cells).items():
        m = model.machines[mk]
        devlabel = device_label(model, mk, dev)
        configs = sorted({_cfg(c) for c in cs}, key=_sortkey)
        nr, nc = _grid(len(configs))
        fig, axes = _new(min(4.6 * nc, 12), 3.4 * nr, nr, nc)
        impls = impl_order({c.impl for c in cs})
        for i, cfg in enumerate(configs):
            ax = axes[i // nc][i % nc]
            sub = [c for c in cs if _cfg(c) == cfg]
            batches = sorted({c.x("batch_size") for c in sub}, key=_sortkey)
            width = 0.8 / max(len(impls), 1)
            for j, name in enumerate(impls):
                xs, ys, lo, hi = [], [], [], []
                for k, bs in enumerate(batches):
                    c = next((c for c in sub if c.impl == name and c.x("batch_size") == bs), None)
                    if c is None:
                        continue
                    y = bs / c.step_s
                    q1, q3 = c.step_q("q1"), c.step_q("q3")
                    xs.append(k - 0.4 + width * (j + 0.5))
                    ys.append(y)
                    # IQR of the step time, mapped to images/s (q3 -> lower, q1 -> upper)
                    lo.append(max(y - bs / q3, 0) if q3 else 0)
                    hi.append(max(bs / q1 - y, 0) if q1 else 0)
                if xs:
                    ax.bar(xs, ys, width * 0.92, color=_color(name, colors), label=name,
                           yerr=[lo, hi], capsize=3, error_kw={"elinewidth": 1, "ecolor": "#222222"})
            ax.set_xticks(range(len(batches)), [str(b) for b in batches])
            ax.set_xlim(-0.6, len(batches) - 0.4)
            ax.set_xlabel("batch size (images)")
            ax.set_ylabel("throughput (images / s)")
            ax.set_title(_config_label(*cfg))
            ax.grid(axis="x", visible=False)
        for k in range(len(configs), nr * nc):
            axes[k // nc][k % nc].set_visible(False)
        _impl_legend(fig, impls, colors)
        figs.append(
            _finish(
                fig,
                devlabel,
                id=_slug("throughput", m.label, dev),
                group="throughput",
                title=f"Throughput on {devlabel}",
                machine=m.label,
                caption="Training images per second (batch size ÷ median step time, device synchronised, "
                "batch already on the device). Error bars: the interquartile range of step time. Higher is better.",
                alt=f"Bar chart of training throughput in images per second per implementation and batch size on {devlabel}, machine {m.label}",
            )
        )
    return figs


# --------------------------------------------------------------------------- compile


# stage -> (label, alpha): shades of the implementation's colour (SVG hatches are huge)
STAGES = [("trace_s", "trace", 0.35), ("lower_s", "lower", 0.6), ("compile_only_s", "XLA compile", 1.0)]


def compile_breakdown(model: Model, colors: dict[str, str]) -> list[Fig]:
    cells = [c for c in model.ok("step") if any(_num(c.x(k)) is not None for k in ("compile_s", "trace_s", "lower_s", "compile_only_s"))]
    if not cells:
        return [_empty("compile", "compile", "Compile time", "no step cell reported compile timings.")]
    figs = []
    for (mk, dev), cs in _by_device(cells).items():
        m = model.machines[mk]
        devlabel = device_label(model, mk, dev)
        # one row per (config, batch size, impl); too many rows -> smallest and largest batch only
        batches = sorted({c.x("batch_size") for c in cs}, key=_sortkey)
        configs = sorted({_cfg(c) for c in cs}, key=_sortkey)
        if len(batches) * len(configs) * len({c.impl for c in cs}) > 18 and len(batches) > 2:
            keep = {batches[0], batches[-1]}
            cs = [c for c in cs if c.x("batch_size") in keep]
        cs = sorted(cs, key=lambda c: (_sortkey(_cfg(c)), _sortkey((c.x("batch_size"),)),
                                       impl_order([c.impl, *KNOWN_IMPLS]).index(c.impl)))
        fig, axes = _new(9.5, 1.4 + 0.3 * len(cs))
        ax = axes[0][0]
        labels = []
        for i, c in enumerate(cs):
            y = len(cs) - 1 - i
            left = 0.0
            col = _color(c.impl, colors)
            have_stage = False
            for key, _, alpha in STAGES:
                v = _num(c.x(key))
                if v is None:
                    continue
                have_stage = True
                ax.barh(y, v, left=left, height=0.62, color=col, alpha=alpha, edgecolor="white", linewidth=0.8)
                left += v
            cs_v = _num(c.x("compile_s"))
            if cs_v is not None:
                ax.plot([cs_v], [y], marker="D", color="#111111", markersize=6, zorder=5)
                ax.annotate(f"{cs_v:.2f} s", (cs_v, y), xytext=(7, 0), textcoords="offset points",
                            va="center", fontsize=8)
            if not have_stage:
                ax.annotate("no trace/lower/compile split" + (" (TensorFlow)" if c.x("backend") == "tensorflow" else ""),
                            (0, y), xytext=(4, 0), textcoords="offset points", va="center",
                            fontsize=8, color="#555555", style="italic")
            size, stride = _cfg(c)
            cfg = f"{size}px s{stride}" if len(configs) > 1 else ""
            labels.append((y, f"{c.impl} · bs {c.x('batch_size')}" + (f" · {cfg}" if cfg else "")))
        ax.set_yticks([y for y, _ in labels], [t for _, t in labels])
        for tick, (y, _) in zip(ax.get_yticklabels(), labels):
            tick.set_color(_color(cs[len(cs) - 1 - y].impl, colors))
        ax.set_xlabel("time (s), cold, persistent compilation cache off")
        ax.set_ylabel("implementation · batch size")
        ax.set_title("Cold compile, stacked stages; ◆ = first − steady step", loc="left")
        ax.grid(axis="y", visible=False)
        xmax = ax.get_xlim()[1]
        ax.set_xlim(0, xmax * 1.12)
        handles = [Patch(facecolor="#555555", alpha=a, label=lab) for _, lab, a in STAGES]
        handles.append(Line2D([], [], marker="D", color="#111111", linestyle="", label="first step − steady step"))
        fig.legend(handles=handles, loc="outside lower center", ncols=4)
        figs.append(
            _finish(
                fig,
                devlabel,
                id=_slug("compile", m.label, dev),
                group="compile",
                title=f"Compile time on {devlabel}",
                machine=m.label,
                caption="Stacked bars: JAX's trace, lower and XLA-compile stages (from jax.stages, or jax.monitoring "
                "where Keras jits internally). Diamond: first step minus the steady step, the one figure comparable "
                "across all implementations. TensorFlow exposes no stage split. Lower is better.",
                alt=f"Horizontal stacked bar chart of compile time per implementation on {devlabel}, machine {m.label}",
            )
        )
    return figs


# --------------------------------------------------------------------------- accuracy


def _cond(c: Cell) -> tuple:
    return (c.x("image_size"), c.x("pool_stride"), str(c.x("protocol", "?")), bool(c.x("augment", False)))


def _cond_label(cond: tuple, short: bool = False) -> str:
    size, stride, protocol, aug = cond
    base = f"{protocol} split, {'augmented' if aug else 'no augmentation'}"
    if short:
        return f"{protocol}\n{'aug' if aug else 'no aug'}"
    return base


def _curves(c: Cell, key: str) -> list[list[float]]:
    hist = c.x("history")
    out = []
    if isinstance(hist, list):
        for seed_hist in hist:
            if not isinstance(seed_hist, list):
                continue
            ys = [_num(e.get(key)) for e in seed_hist if isinstance(e, dict)]
            if ys and all(y is not None for y in ys):
                out.append(ys)
    return out


def accuracy(model: Model, colors: dict[str, str]) -> list[Fig]:
    cells = [c for c in model.ok("accuracy")]
    figs = []
    with_hist = [c for c in cells if _curves(c, "test_accuracy") or _curves(c, "train_accuracy")]
    if not with_hist:
        figs.append(_empty("accuracy-curves", "accuracy", "Accuracy per epoch", "no accuracy cell with a per-epoch history."))
    by_machine: dict[str, list[Cell]] = defaultdict(list)
    for c in with_hist:
        by_machine[c.machine].append(c)
    for mk, cs in sorted(by_machine.items()):
        m = model.machines[mk]
        devices = sorted({c.device for c in cs})
        conds = sorted({_cond(c) + (c.device,) for c in cs}, key=_sortkey)
        configs = {(s, p) for s, p, *_ in conds}
        nr, nc = _grid(len(conds))
        fig, axes = _new(min(4.4 * nc, 13), 3.3 * nr + 0.4, nr, nc, sharey=True)
        impls = impl_order({c.impl for c in cs})
        for i, cond in enumerate(conds):
            ax = axes[i // nc][i % nc]
            for c in cs:
                if _cond(c) + (c.device,) != cond:
                    continue
                col = _color(c.impl, colors)
                for key, ls, lw in (("test_accuracy", "-", 1.8), ("train_accuracy", "--", 1.2)):
                    curves = _curves(c, key)
                    if not curves:
                        continue
                    n = min(len(cv) for cv in curves)
                    ep = list(range(1, n + 1))
                    cols = [[cv[e] * 100 for cv in curves] for e in range(n)]
                    mean = [statistics.fmean(v) for v in cols]
                    ax.plot(ep, mean, ls, color=col, lw=lw, marker="o" if n <= 12 and key == "test_accuracy" else None,
                            markersize=3)
                    if len(curves) > 1:
                        ax.fill_between(ep, [min(v) for v in cols], [max(v) for v in cols], color=col,
                                        alpha=0.18 if key == "test_accuracy" else 0.08, linewidth=0)
            size, stride, protocol, aug, dev = cond
            title = _cond_label(cond[:4])
            if len(configs) > 1:
                title += f"\n{_config_label(size, stride)}"
            if len(devices) > 1:
                title += f" · {device_label(model, mk, dev)}"
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy (%)")
            ax.xaxis.get_major_locator().set_params(integer=True)
        for k in range(len(conds), nr * nc):
            axes[k // nc][k % nc].set_visible(False)
        handles = [Line2D([], [], color=_color(n, colors), lw=2, label=n) for n in impls]
        handles += [Line2D([], [], color="#444444", lw=1.8, label="test (mean over seeds)"),
                    Line2D([], [], color="#444444", lw=1.2, ls="--", label="train (mean over seeds)"),
                    Patch(facecolor="#444444", alpha=0.2, label="min–max over seeds")]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
        seeds = sorted({len(c.x("seeds") or _curves(c, "test_accuracy")) for c in cs})
        figs.append(
            _finish(
                fig,
                ", ".join(device_label(model, mk, d) for d in devices),
                id=_slug("accuracy-curves", m.label),
                group="accuracy",
                title="Accuracy per epoch, per protocol and augmentation",
                machine=m.label,
                caption=f"Solid: test accuracy; dashed: training accuracy; each the mean over seeds "
                f"({'/'.join(str(s) for s in seeds)} per implementation), band: min–max over seeds. "
                "Same data, same order, same initial weights for every implementation.",
                alt=f"Line charts of train and test accuracy per epoch for each implementation, machine {m.label}",
            )
        )
    # final accuracy across conditions: the original-vs-resplit and augmentation comparison
    finals = [c for c in cells if _num(c.x("test_accuracy_mean")) is not None]
    if not finals:
        figs.append(_empty("accuracy-compare", "accuracy", "Final test accuracy by protocol and augmentation",
                           "no accuracy cell finished."))
        return figs
    by_machine = defaultdict(list)
    for c in finals:
        by_machine[c.machine].append(c)
    for mk, cs in sorted(by_machine.items()):
        m = model.machines[mk]
        conds = sorted({_cond(c) + (c.device,) for c in cs}, key=_sortkey)
        impls = impl_order({c.impl for c in cs})
        devices = sorted({c.device for c in cs})
        configs = {(s, p) for s, p, *_ in conds}
        fig, axes = _new(max(6.0, 1.4 * len(conds) + 2.5), 3.9)
        ax = axes[0][0]
        w = 0.7 / max(len(impls), 1)
        for j, name in enumerate(impls):
            for i, cond in enumerate(conds):
                c = next((c for c in cs if c.impl == name and _cond(c) + (c.device,) == cond), None)
                if c is None:
                    continue
                x = i - 0.35 + w * (j + 0.5)
                mean = c.x("test_accuracy_mean") * 100
                sd = (_num(c.x("test_accuracy_sd")) or 0) * 100
                ax.errorbar([x], [mean], yerr=[sd], fmt="o", color=_color(name, colors), capsize=4, markersize=7,
                            mfc="white" if c.x("from_cache") else _color(name, colors), mew=1.8)
                for a in c.x("test_accuracies") or []:
                    if _num(a) is not None:
                        ax.plot([x + w * 0.28], [a * 100], ".", color=_color(name, colors), alpha=0.5, markersize=4)
        labels = []
        for cond in conds:
            size, stride, protocol, aug, dev = cond
            lab = f"{protocol}\n{'augmented' if aug else 'no augment.'}"
            if len(configs) > 1:
                lab += f"\n{size}px, stride {stride}"
            if len(devices) > 1:
                lab += f"\n{dev}"
            labels.append(lab)
        ax.set_xticks(range(len(conds)), labels)
        ax.set_xlim(-0.6, len(conds) - 0.4)
        ax.set_ylabel("final test accuracy (%)")
        ax.set_xlabel("split protocol · augmentation")
        ax.set_title("Final test accuracy: mean ± sd over seeds (dots: each seed)")
        ax.grid(axis="x", visible=False)
        handles = [Line2D([], [], marker="o", color=_color(n, colors), ls="", label=n) for n in impls]
        if any(c.x("from_cache") for c in cs):
            handles.append(Line2D([], [], marker="o", color="#444444", mfc="white", ls="", label="hollow: from cache"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        figs.append(
            _finish(
                fig,
                ", ".join(device_label(model, mk, d) for d in devices),
                id=_slug("accuracy-compare", m.label),
                group="accuracy",
                title="Original split vs stratified re-split, with and without augmentation",
                machine=m.label,
                caption="Final test accuracy per implementation for each split protocol and augmentation setting. "
                "Error bars: one standard deviation over seeds; small dots: the individual seeds. "
                "A hollow marker means the figure was reused from the accuracy cache, not retrained in this run.",
                alt=f"Dot plot of final test accuracy per protocol and augmentation setting, machine {m.label}",
            )
        )
    return figs


# --------------------------------------------------------------------------- MFU


def mfu(model: Model, colors: dict[str, str]) -> list[Fig]:
    cells = [c for c in model.ok("step") if c.step_s and _num(c.x("flops_per_step")) and c.x("batch_size") is not None]
    if not cells:
        return [_empty("mfu", "mfu", "Model FLOP utilisation", "no step cell reported FLOPs per step.")]
    figs = []
    for (mk, dev), cs in _by_device(cells).items():
        m = model.machines[mk]
        devlabel = device_label(model, mk, dev)
        peaks = [_num(c.x("peak_flops")) for c in cs if _num(c.x("peak_flops"))]
        peak = statistics.median(peaks) if peaks else None
        configs = sorted({_cfg(c) for c in cs}, key=_sortkey)
        nr, nc = _grid(len(configs))
        fig, axes = _new(min(4.8 * nc, 12.5), 3.5 * nr, nr, nc)
        impls = impl_order({c.impl for c in cs})
        scale, unit = (1e12, "TFLOP/s") if (peak or 0) >= 1e12 else (1e9, "GFLOP/s")
        for i, cfg in enumerate(configs):
            ax = axes[i // nc][i % nc]
            sub = [c for c in cs if _cfg(c) == cfg]
            batches = sorted({c.x("batch_size") for c in sub}, key=_sortkey)
            width = 0.8 / max(len(impls), 1)
            for j, name in enumerate(impls):
                for k, bs in enumerate(batches):
                    c = next((c for c in sub if c.impl == name and c.x("batch_size") == bs), None)
                    if c is None:
                        continue
                    achieved = c.x("flops_per_step") / c.step_s
                    x = k - 0.4 + width * (j + 0.5)
                    ax.bar([x], [achieved / scale], width * 0.92, color=_color(name, colors),
                           hatch="" if c.x("flops_source", "xla") == "xla" else "xx", edgecolor="white")
                    frac = _num(c.x("mfu"))
                    if frac is None and peak:
                        frac = achieved / peak
                    if frac is not None:
                        ax.annotate(f"{frac * 100:.0f}%" if frac >= 0.1 else f"{frac * 100:.1f}%",
                                    (x, achieved / scale), xytext=(0, 2), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=7, rotation=90 if len(impls) * len(batches) > 9 else 0)
            if peak:
                ax.axhline(peak / scale, color="#D55E00", ls="--", lw=1.4)
                top = max([peak] + [c.x("flops_per_step") / c.step_s for c in sub])
                ax.set_ylim(0, top / scale * 1.18)
            ax.set_xticks(range(len(batches)), [str(b) for b in batches])
            ax.set_xlim(-0.6, len(batches) - 0.4)
            ax.set_xlabel("batch size (images)")
            ax.set_ylabel(f"achieved ({unit})")
            ax.set_title(_config_label(*cfg))
            ax.grid(axis="x", visible=False)
        for k in range(len(configs), nr * nc):
            axes[k // nc][k % nc].set_visible(False)
        extra = []
        if peak:
            extra.append(Line2D([], [], color="#D55E00", ls="--", lw=1.4,
                                label=f"measured peak: {peak / scale:.3g} {unit}"))
        if any(c.x("flops_source") == "analytic" for c in cs):
            extra.append(Patch(facecolor="#999999", hatch="xx", edgecolor="white", label="analytic FLOP count"))
        _impl_legend(fig, impls, colors, extra)
        figs.append(
            _finish(
                fig,
                devlabel,
                id=_slug("mfu", m.label, dev),
                group="mfu",
                title=f"Achieved FLOP/s and MFU on {devlabel}",
                machine=m.label,
                caption="Bars: FLOPs per training step (XLA cost analysis; hatched where only the analytic count was "
                "available) ÷ median step time. Dashed line: the peak measured on the same device in the same run "
                "(a large matmul). Labels: MFU, the bar as a fraction of that peak."
                + ("" if peak else " No peak was measured for this device."),
                alt=f"Bar chart of achieved FLOP per second against the measured peak on {devlabel}, machine {m.label}",
            )
        )
    return figs


# --------------------------------------------------------------------------- history


def history(model: Model, colors: dict[str, str]) -> list[Fig]:
    pts = model.history
    if not pts:
        return [_empty("history", "history", "Step time across commits",
                       "no saved pytest-benchmark runs (the storage folder, default .benchmarks/, is empty or was not given).")]
    figs = []
    by_dev: dict[tuple, list] = defaultdict(list)
    for p in pts:
        by_dev[(p.machine, p.device)].append(p)
    # the gate compares the newest run of a device with its baseline: mark regressions there only
    newest: dict[str, HistoryPoint] = {}
    for p in pts:
        if p.device not in newest or p.when > newest[p.device].when:
            newest[p.device] = p
    for (mk, dev), ps in sorted(by_dev.items()):
        m = model.machines[mk]
        devlabel = device_label(model, mk, dev)
        # commits in time order; several runs of one commit -> the latest
        commit_time: dict[str, str] = {}
        for p in ps:
            commit_time[p.commit] = min(commit_time.get(p.commit, p.commit_time), p.commit_time)
        commits = sorted(commit_time, key=lambda c: commit_time[c])
        cidx = {c: i for i, c in enumerate(commits)}
        if len(commits) < 2:
            figs.append(Fig(id=_slug("history", m.label, dev), group="history",
                            title=f"Step time across commits on {devlabel}", machine=m.label,
                            note=f"No history yet on {m.label} · {devlabel}: saved results exist for one commit only "
                                 f"({commits[0][:10]}). The plot appears from the second saved commit on."))
            continue
        series: dict[tuple, dict[str, Any]] = defaultdict(dict)
        for p in ps:
            k = (p.impl, p.batch_size, p.image_size, p.pool_stride)
            old = series[k].get(p.commit)
            if old is None or p.when > old.when:
                series[k][p.commit] = p
        batches = sorted({k[1] for k in series}, key=_sortkey)
        configs = sorted({(k[2], k[3]) for k in series}, key=_sortkey)
        bmark = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(batches)}
        cstyle = {cfg: ["-", ":", "-.", "--"][i % 4] for i, cfg in enumerate(configs)}
        fig, axes = _new(max(6.0, min(12.5, 2.5 + 0.7 * len(commits))), 3.8)
        ax = axes[0][0]
        nreg = 0
        for k in sorted(series, key=lambda k: (impl_order([k[0], *KNOWN_IMPLS]).index(k[0]), _sortkey(k[1:]))):
            impl, bs, size, stride = k
            got = sorted(series[k].values(), key=lambda p: cidx[p.commit])
            xs = [cidx[p.commit] for p in got]
            ys = [p.step_s * 1e3 for p in got]
            lo = [max(y - p.q1 * 1e3, 0) if p.q1 else 0 for y, p in zip(ys, got)]
            hi = [max(p.q3 * 1e3 - y, 0) if p.q3 else 0 for y, p in zip(ys, got)]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=_color(impl, colors), marker=bmark[bs], ls=cstyle[(size, stride)],
                        lw=1.3, markersize=5, capsize=2)
            for r in model.regressions:
                if (r.get("impl") == impl and str(r.get("device")) == dev and r.get("batch_size") == bs
                        and (r.get("image_size") is None or r.get("image_size") == size)
                        and mk == newest[dev].machine):
                    x, y = xs[-1], ys[-1]
                    nreg += 1
                    ax.plot([x], [y], marker="o", markersize=15, mfc="none", mec="#D55E00", mew=2.2, zorder=6)
                    ratio = _num(r.get("ratio"))
                    ax.annotate(f"regression ×{ratio:.2f}" if ratio else "regression", (x, y), xytext=(-8, 10),
                                textcoords="offset points", ha="right", fontsize=8, color="#D55E00", weight="bold")
        ax.set_xticks(range(len(commits)),
                      [c[:7] + ("*" if any(p.dirty for p in ps if p.commit == c) else "") for c in commits],
                      rotation=30 if len(commits) > 6 else 0)
        ax.set_xlim(-0.5, len(commits) - 0.5)
        ax.set_xlabel("commit, oldest → newest (* = uncommitted changes)")
        ax.set_ylabel("median step time (ms)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "2357" else ""))
        ax.set_title("Step time across commits (error bars: IQR)")
        handles = [Line2D([], [], color=_color(n, colors), lw=2, label=n) for n in impl_order({k[0] for k in series})]
        handles += [Line2D([], [], color="#444444", marker=bmark[b], ls="", label=f"batch {b}") for b in batches]
        if len(configs) > 1:
            handles += [Line2D([], [], color="#444444", ls=cstyle[c], label=_config_label(*c)) for c in configs]
        if nreg:
            handles.append(Line2D([], [], marker="o", mfc="none", mec="#D55E00", mew=2, ls="", markersize=10,
                                  label="regression (gate)"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        note = None
        if len(commits) < 2:
            note = "Only one commit has saved results so far: the history starts here."
        figs.append(
            _finish(
                fig,
                devlabel,
                id=_slug("history", m.label, dev),
                group="history",
                title=f"Step time across commits on {devlabel}",
                machine=m.label,
                caption="Median step time per saved pytest-benchmark run (storage folder), colour per implementation, "
                "marker per batch size; log scale. Circled points are the regressions the gate flagged"
                + (f" ({model.gate_source})." if model.gate_source else " (no gate file found)."),
                note=note,
                alt=f"Line chart of step time across commits on {devlabel}, machine {m.label}",
            )
        )
    return figs


# --------------------------------------------------------------------------- all


def all_figures(model: Model) -> dict[str, list[Fig]]:
    with matplotlib.rc_context(RC):
        return _all_figures(model)


def _all_figures(model: Model) -> dict[str, list[Fig]]:
    colors = impl_colors(model.impls())
    out: dict[str, list[Fig]] = {}
    for name, fn in (("throughput", throughput), ("compile", compile_breakdown), ("accuracy", accuracy),
                     ("mfu", mfu), ("history", history)):
        try:
            out[name] = fn(model, colors)
        except Exception as e:  # a broken figure must not take the page down; say so on the page
            import traceback

            traceback.print_exc()
            out[name] = [Fig(id=name, group=name, title=name, machine="–",
                             note=f"This figure could not be drawn: {type(e).__name__}: {e}")]
    return out
