"""The page: the views and figures of a model rendered by jinja2 into one self-contained HTML file."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jinja2

from reports import plots, stats, verdict, views
from reports.files import write_atomic
from reports.formatting import FILTERS
from reports.model import Model

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


class ReportError(Exception):
    """A report that cannot be built or written; the message names the path."""


def render(model: Model, title: str = "xfbench report", figures: dict | None = None) -> str:
    t0 = time.perf_counter()
    if figures is None:
        figures = _figures(model)
    t_plots = time.perf_counter() - t0
    data_rows, fp_mismatch = views.data_view(model)
    impls = views.Impls.of(model)
    return _templates().get_template("index.html.j2").render(
        title=title,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        model=model,
        machines=model.machine_list(),
        verdict=verdict.verdict(model),
        timed=verdict.timed_regions(model),
        interval_method=stats.METHOD,
        winner_rule=stats.WINNER_RULE,
        identity=views.identity(model),
        data=data_rows,
        fp_mismatch=fp_mismatch,
        env=views.environment(model),
        problems=views.problems(model),
        figures=figures,
        impl_color=impls.color,
        impls=impls.names,
        counts=views.status_counts(model),
        plot_seconds=t_plots,
        origin_spec=views.ORIGIN_SPEC,
        workloads=model.workloads(),
    )


def _figures(model: Model) -> dict[str, list[plots.Fig]]:
    """Every plot family, drawn for each workload on its own (the origin's first, as they always were)."""
    out: dict[str, list[plots.Fig]] = {}
    for w in model.workloads() or ["origin"]:
        for group, figs in plots.all_figures(model.for_workload(w)).items():
            if w != "origin":
                figs = [dataclasses.replace(f, id=f"{w}-{f.id}", title=f"{w} · {f.title}") for f in figs]
            out.setdefault(group, []).extend(figs)
    return out


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def write_page(out: Path, html: str) -> None:
    """Write `html` to `out` atomically; ReportError (naming `out`) when that fails."""
    try:
        write_atomic(Path(out), html.encode("utf-8"))
    except OSError as e:
        raise ReportError(f"cannot write the report to {out}: {e.strerror or e}") from None
