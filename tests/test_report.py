"""The HTML report, built from fabricated results (tests/report_samples.py) of every input kind."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_samples  # noqa: E402  (test fixtures)

from reports import cli as rcli  # noqa: E402
from reports import loading, plots, render, views  # noqa: E402
from reports.build import ReportError, build_report  # noqa: E402

SECTIONS = ("verdict", "identity", "plots", "data", "environment", "problems")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return report_samples.everything(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def full(samples, tmp_path_factory):
    """The whole sample set rendered once: CPU run folder + partial run + GPU JSON + corrupt + wrong shape."""
    out = tmp_path_factory.mktemp("site") / "index.html"
    model = loading.load(
        [samples["cpu_run"], samples["partial_run"], samples["gpu_json"], samples["corrupt"], samples["wrong_shape"]],
        history_dir=samples["history"], include_published=False, gate_file=samples["gate"],
    )
    figs = plots.all_figures(model)
    html = render.render(model, figures=figs)
    render.write_page(out, html)
    model.figures = figs  # for test_all_plots_drawn_with_machine_tags
    return model, html, out


def _attrs(html: str, name: str) -> list[str]:
    return re.findall(rf'\b{name}\s*=\s*["\']([^"\']*)["\']', html, flags=re.I)


def test_every_section_is_there(full):
    _, html, _ = full
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html, sid
    for heading in ("Verdict", "Identity", "Plots", "Data", "Environment", "Failed, skipped, missing &amp; warned"):
        assert heading in html


def test_self_contained_no_network_reference(full):
    _, html, _ = full
    refs = _attrs(html, "src") + _attrs(html, "href")
    assert refs
    for ref in refs:
        assert not re.match(r"\s*(https?:)?//", ref, re.I), ref
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", html, re.I)
    assert "<link rel=\"stylesheet\"" not in html and "<script" not in html
    # every figure is an embedded SVG that references nothing outside itself
    srcs = [s for s in _attrs(html, "src")]
    assert len(srcs) >= 8
    for s in srcs:
        assert s.startswith("data:image/svg+xml;base64,")
        svg = base64.b64decode(s.split(",", 1)[1]).decode("utf-8")
        assert "<svg" in svg
        hrefs = re.findall(r'(?:xlink:)?href="([^"]*)"', svg)
        assert all(h.startswith("#") for h in hrefs), hrefs


def test_two_machines_side_by_side(full):
    model, html, _ = full
    env = views.environment(model)
    assert env["machines"] == ["cpu-box", "gpu-box"]
    row = dict(env["rows"])
    assert row["GPUs"] == ["none", "NVIDIA H100 80GB HBM3"]
    assert "Intel(R) Xeon(R) Platinum 8370C" in row["CPU"][0]
    devices = {(b["machine"], b["device"]) for b in views.verdict(model)}
    assert devices == {("cpu-box", "cpu"), ("gpu-box", "NVIDIA H100 80GB HBM3")}
    # both machines have their own tagged throughput figure
    for label, dev in (("cpu-box", "CPU (Intel"), ("gpu-box", "NVIDIA H100 80GB HBM3")):
        assert re.search(rf'<h4>Throughput on {re.escape(dev)}[^<]*<span class="mtag" title="machine">{label}</span>', html)


def test_verdict_ratios_and_rankings(full):
    model, html, _ = full
    blocks = {b["machine"]: b for b in views.verdict(model)}
    cpu = blocks["cpu-box"]
    assert cpu["headline"][0]["impl"] == "flax" and cpu["headline"][0]["ratio"] == pytest.approx(1.0)
    assert [h["impl"] for h in cpu["headline"]] == ["flax", "keras-jax", "keras-tf"]
    assert cpu["headline"][2]["ratio"] > 1.3
    assert [r["impl"] for r in cpu["compile"]] == ["flax", "keras-jax", "keras-tf"]
    assert cpu["compile"][2]["trace_s"] is None  # TensorFlow has no stage split
    conds = [c["label"] for c in cpu["acc_table"]]
    assert conds == ["original split, no augmentation", "original split, augmented", "resplit split, no augmentation"]
    assert all(set(c["by_impl"]) == {"flax", "keras-jax", "keras-tf"} for c in cpu["acc_table"])
    assert "Fastest:" in html and "compiles fastest" in html


def test_partial_run_shows_missing_cells(full):
    model, html, _ = full
    missing = [c for c in model.cells if c.status == "missing"]
    assert {c.id for c in missing} == {"test_step[keras-tf-cpu-bs8-32px-s1]", "test_accuracy[flax-original-noaug-quick]"}
    assert all("interrupted" in c.reason for c in missing)
    assert model.partial_runs and model.partial_runs[0]["missing"] == 2
    assert "Partial run." in html and "2 of 4 planned cells finished" in html
    assert "st-missing" in html and "test_accuracy[flax-original-noaug-quick]" in html


def test_failed_and_skipped_cells_have_reasons(full):
    model, html, _ = full
    rows = {p["status"]: p for p in views.problems(model)}
    assert "out of memory" in rows["failed"]["reason"]
    assert rows["skipped"]["reason"] == "no GPU visible on this machine"
    assert "no GPU visible on this machine" in html
    assert rows["warning"]["cell"].startswith("test_step[flax") and "harness overhead 3.1%" in rows["warning"]["reason"]
    assert "st-warning" in html


def test_corrupt_and_wrong_shape_files_are_named_and_skipped(full, samples, capsys):
    model, html, _ = full
    skipped = {Path(s.path).name: s.why for s in model.skipped}
    assert "not valid JSON" in skipped["broken.json"]
    assert "unrecognised shape" in skipped["list.json"]
    assert str(samples["corrupt"]) in html and str(samples["wrong_shape"]) in html
    loading.load([samples["corrupt"]], include_published=False)
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.json" in err


def test_data_source_said_plainly(full):
    model, html, _ = full
    rows, mismatch = views.data_view(model)
    by = {r["machine"]: r for r in rows}
    assert by["cpu-box"]["plain"].startswith("REAL data, read from a local folder")
    assert by["gpu-box"]["synthetic"] and "SYNTHETIC" in by["gpu-box"]["plain"]
    # different bytes are flagged only for the same protocol and size; these differ in both
    assert not mismatch
    assert "Synthetic data on" in html and report_samples.FP in html


def test_identity_parity_and_stride_note(full):
    model, html, _ = full
    ident = views.identity(model)
    assert {p["machine"] for p in ident["parity"]} == {"cpu-box", "gpu-box"}
    cpu = next(p for p in ident["parity"] if p["machine"] == "cpu-box")
    assert cpu["same_params"] and cpu["rows"][0]["params"] == 7_877_794
    assert "max_abs_logit_diff" in cpu["cols"]
    assert "stride-1 pooling" in html and "nn.max_pool" in html and "is the origin's" in html
    gpu_spec = next(s for s in ident["specs"] if s["machine"] == "gpu-box")
    assert gpu_spec["strides"] == [1, 2]


def test_all_plots_drawn_with_machine_tags(full):
    model, html, _ = full
    figs = model.figures
    assert set(figs) == {"throughput", "compile", "accuracy", "mfu", "history"}
    drawn = [f for fs in figs.values() for f in fs if f.uri]
    assert len(drawn) >= 9
    for f in drawn:
        assert f.machine in ("cpu-box", "gpu-box")
        svg = base64.b64decode(f.uri.split(",", 1)[1]).decode()
        assert f"machine: {f.machine}" in svg  # tag inside the figure itself, too
    # history: the CPU box has 4 commits and the gate's regressions; the GPU box only one commit -> a note
    hist = {f.machine: f for f in figs["history"]}
    assert hist["cpu-box"].uri and "regression" in base64.b64decode(hist["cpu-box"].uri.split(",", 1)[1]).decode()
    assert hist["gpu-box"].uri is None and "one commit" in hist["gpu-box"].note


def _chip(name: str, color: str) -> str:
    """How the page names an implementation: its colour swatch, then its name."""
    return f'<span class="impl"><i style="background:{color}"></i>{name}</span>'


def test_one_colour_per_implementation(full):
    model, html, _ = full
    impls = views.Impls.of(model)
    assert impls.names == ["flax", "keras-jax", "keras-tf"]  # the order the results list them in
    assert impls.colors == dict(zip(impls.names, views.OKABE_ITO))
    for name, color in impls.colors.items():
        assert _chip(name, color) in html


def test_implementations_no_code_knows_get_columns_plots_and_colours(samples, tmp_path):
    new = report_samples.new_impls(tmp_path)
    model = loading.load([samples["cpu_run"], new["results"]], history_dir=new["history"], include_published=False)
    impls = views.Impls.of(model)
    # order of first appearance (jax-raw is listed before flax-nnx), each its own Okabe-Ito colour
    assert impls.names == ["flax", "keras-jax", "keras-tf", "jax-raw", "flax-nnx"]
    assert impls.colors == dict(zip(impls.names, views.OKABE_ITO))
    unknown = ("jax-raw", "flax-nnx")

    block = next(b for b in views.verdict(model) if b["machine"] == "nnx-box")
    for name in unknown:
        assert name in {h["impl"] for h in block["headline"]} and name in {r["impl"] for r in block["compile"]}
        assert all(name in g["by_impl"] for g in block["speed"]) and all(name in c["by_impl"] for c in block["acc_table"])
    parity = next(p for p in views.identity(model)["parity"] if p["machine"] == "nnx-box")
    assert [r["impl"] for r in parity["rows"]] == ["flax", "jax-raw", "flax-nnx"]

    figs = plots.all_figures(model)
    html = render.render(model, figures=figs)
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', html, re.DOTALL))
    for name in unknown:
        chip = _chip(name, impls.colors[name])
        assert chip in html.split("<main>")[0]  # the legend at the top
        assert f"<th>{chip}</th>" in sections["verdict"]  # the step-time table
        assert chip in sections["identity"] and chip in sections["plots"]
    drawn = [f for fs in figs.values() for f in fs if f.uri and f.machine == "nnx-box"]
    assert {f.group for f in drawn} == {"throughput", "compile", "accuracy", "mfu", "history"}
    for f in drawn:
        svg = base64.b64decode(f.uri.split(",", 1)[1]).decode().lower()
        for name in unknown:
            assert name in svg and impls.colors[name].lower() in svg, (f.id, name)


def test_a_run_folder_lists_implementations_in_its_planned_order(tmp_path):
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    planned = {"step-zz": "zz-impl", "step-aa": "aa-impl"}  # file names sort the other way round
    for cid, impl in planned.items():
        (run / "cells" / f"{cid}.json").write_text(json.dumps(
            {"id": cid, "kind": "step", "status": "ok", "stats": {"median": 0.01},
             "extra_info": {"impl": impl, "device": "cpu", "batch_size": 8}}))
    (run / "run.json").write_text(json.dumps({"run_id": "run", "finished": "2025-01-01T00:00:00",
                                              "planned": list(planned)}))
    model = loading.load([run], include_published=False)
    assert views.Impls.of(model).names == ["zz-impl", "aa-impl"]


def test_plots_without_data_show_a_note(tmp_path):
    out = build_report([], tmp_path / "index.html", include_published=False)
    html = out.read_text()
    assert html.count('class="nodata"') >= 5 and "No data:" in html and "No results." in html
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html


def test_tolerates_missing_keys(tmp_path):
    p = tmp_path / "minimal.json"
    p.write_text(json.dumps({"benchmarks": [
        {"name": "test_step[flax]", "stats": {"median": 0.02}, "extra_info": {"impl": "flax", "batch_size": 8}},
        {"name": "test_step[keras-tf]", "stats": None, "extra_info": {"status": "failed", "reason": None}},
        {"name": "test_accuracy[flax]", "extra_info": {"kind": "accuracy", "impl": "flax"}},
        "not a dict",
    ]}))
    run = tmp_path / "runs" / "r1"
    (run / "cells").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": "r1", "finished": None, "planned": ["a", "b"]}))
    (run / "cells" / "a.json").write_text(json.dumps({"id": "a", "kind": "step", "status": "ok"}))
    out = build_report([p, run], tmp_path / "out" / "index.html", include_published=False)
    html = out.read_text()
    assert "test_step[keras-tf]" in html and "(no reason given)" in html
    assert "planned in run r1" in html


def test_duplicate_results_keep_the_newest(samples):
    m = loading.load([samples["cpu_run"], samples["cpu_run"].parent], include_published=False)
    names = [c.dedup_key for c in m.cells]
    assert len(names) == len(set(names))


def test_published_results_are_included_by_default(samples, monkeypatch, tmp_path):
    pub = tmp_path / "published"
    pub.mkdir()
    (pub / "gpu-box.json").write_text(samples["gpu_json"].read_text())
    monkeypatch.setattr(loading, "PUBLISHED_DIR", pub)
    with_pub = loading.load([samples["cpu_run"]])
    without = loading.load([samples["cpu_run"]], include_published=False)
    assert {m.label for m in with_pub.machine_list()} == {"cpu-box", "gpu-box"}
    assert {m.label for m in without.machine_list()} == {"cpu-box"}


def test_unwritable_output_names_the_path(samples, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = blocker / "index.html"
    with pytest.raises(ReportError, match=re.escape(str(bad))):
        render.write_page(bad, "<html></html>")
    rc = rcli.main([str(samples["partial_run"]), "-o", str(bad), "--no-published"])
    assert rc != 0
    assert str(bad) in capsys.readouterr().err


def test_cli_writes_atomically(samples, tmp_path, capsys):
    out = tmp_path / "site" / "report.html"
    rc = rcli.main([str(samples["partial_run"]), str(samples["corrupt"]), "-o", str(out), "--no-published",
                    "--history", str(samples["history"])])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file() and out.read_text().rstrip().endswith("</html>")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp file left behind
    assert "wrote" in capsys.readouterr().out
    rc = rcli.main([str(tmp_path / "nope"), "-o", str(out), "--no-published", "--history", str(tmp_path / "nope")])
    assert rc == 2


def test_the_page_is_small(full):
    _, html, out = full
    assert out.stat().st_size < 3_000_000
