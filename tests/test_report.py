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

from reports import build as rb  # noqa: E402
from reports import cli as rcli  # noqa: E402
from reports import plots  # noqa: E402

SECTIONS = ("verdict", "identity", "plots", "data", "environment", "problems")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return report_samples.everything(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def full(samples, tmp_path_factory):
    """The whole sample set rendered once: CPU run folder + partial run + GPU JSON + corrupt + wrong shape."""
    out = tmp_path_factory.mktemp("site") / "index.html"
    model = rb.load(
        [samples["cpu_run"], samples["partial_run"], samples["gpu_json"], samples["corrupt"], samples["wrong_shape"]],
        history_dir=samples["history"], include_published=False, gate_file=samples["gate"],
    )
    figs = plots.all_figures(model)
    html = rb.render(model, figures=figs)
    rb.write_atomic(out, html)
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
    env = rb.environment(model)
    assert env["machines"] == ["cpu-box", "gpu-box"]
    row = dict(env["rows"])
    assert row["GPUs"] == ["none", "NVIDIA H100 80GB HBM3"]
    assert "Intel(R) Xeon(R) Platinum 8370C" in row["CPU"][0]
    devices = {(b["machine"], b["device"]) for b in rb.verdict(model)}
    assert devices == {("cpu-box", "cpu"), ("gpu-box", "NVIDIA H100 80GB HBM3")}
    # both machines have their own tagged throughput figure
    for label, dev in (("cpu-box", "CPU (Intel"), ("gpu-box", "NVIDIA H100 80GB HBM3")):
        assert re.search(rf'<h4>Throughput on {re.escape(dev)}[^<]*<span class="mtag" title="machine">{label}</span>', html)


def test_verdict_ratios_and_rankings(full):
    model, html, _ = full
    blocks = {b["machine"]: b for b in rb.verdict(model)}
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
    rows = {p["status"]: p for p in rb.problems(model)}
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
    rb.load([samples["corrupt"]], include_published=False)
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.json" in err


def test_data_source_said_plainly(full):
    model, html, _ = full
    rows, mismatch = rb.data_view(model)
    by = {r["machine"]: r for r in rows}
    assert by["cpu-box"]["plain"].startswith("REAL data, read from a local folder")
    assert by["gpu-box"]["synthetic"] and "SYNTHETIC" in by["gpu-box"]["plain"]
    # different bytes are flagged only for the same protocol and size; these differ in both
    assert not mismatch
    assert "Synthetic data on" in html and report_samples.FP in html


def test_identity_parity_and_stride_note(full):
    model, html, _ = full
    ident = rb.identity(model)
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


def test_one_colour_per_implementation():
    colors = plots.impl_colors(["keras-tf", "flax", "keras-jax", "equinox"])
    assert colors["flax"] == "#0072B2" and colors["keras-jax"] == "#E69F00" and colors["keras-tf"] == "#009E73"
    assert len(set(colors.values())) == len(colors)
    assert all(c in plots.OKABE_ITO for c in colors.values())


def test_plots_without_data_show_a_note(tmp_path):
    out = rb.build_report([], tmp_path / "index.html", include_published=False)
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
    out = rb.build_report([p, run], tmp_path / "out" / "index.html", include_published=False)
    html = out.read_text()
    assert "test_step[keras-tf]" in html and "(no reason given)" in html
    assert "planned in run r1" in html


def test_duplicate_results_keep_the_newest(samples):
    m = rb.load([samples["cpu_run"], samples["cpu_run"].parent], include_published=False)
    names = [c.dedup_key for c in m.cells]
    assert len(names) == len(set(names))


def test_published_results_are_included_by_default(samples, monkeypatch, tmp_path):
    pub = tmp_path / "published"
    pub.mkdir()
    (pub / "gpu-box.json").write_text(samples["gpu_json"].read_text())
    monkeypatch.setattr(rb, "PUBLISHED_DIR", pub)
    with_pub = rb.load([samples["cpu_run"]])
    without = rb.load([samples["cpu_run"]], include_published=False)
    assert {m.label for m in with_pub.machine_list()} == {"cpu-box", "gpu-box"}
    assert {m.label for m in without.machine_list()} == {"cpu-box"}


def test_unwritable_output_names_the_path(samples, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = blocker / "index.html"
    with pytest.raises(rb.ReportError, match=re.escape(str(bad))):
        rb.write_atomic(bad, "<html></html>")
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
