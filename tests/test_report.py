"""The HTML report, built from fabricated results (tests/report_samples.py) of every input kind."""

from __future__ import annotations

import base64
import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest
from markupsafe import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_samples  # noqa: E402  (test fixtures)

from reports import cli as rcli  # noqa: E402
from reports import formatting, loading, plots, render, stats, verdict, views  # noqa: E402
from reports import model as model_mod  # noqa: E402
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
    devices = {(b["machine"], b["device"]) for b in verdict.verdict(model)}
    assert devices == {("cpu-box", "cpu"), ("gpu-box", "NVIDIA H100 80GB HBM3")}
    # both machines have their own tagged throughput figure
    for label, dev in (("cpu-box", "CPU (Intel"), ("gpu-box", "NVIDIA H100 80GB HBM3")):
        assert re.search(rf'<h4>Throughput on {re.escape(dev)}[^<]*<span class="mtag" title="machine: {label}">{label}</span>', html)


def test_verdict_ratios_and_rankings(full):
    model, html, _ = full
    blocks = {b["machine"]: b for b in verdict.verdict(model)}
    cpu = blocks["cpu-box"]
    head = cpu["headline"]
    assert head["fastest"] == "flax" and [h["impl"] for h in head["rows"]] == ["flax", "keras-jax", "keras-tf"]
    assert head["rows"][2]["ratio"].value > 1.3
    # one worker process per cell in these (older) results: ratios, but no interval and no winner named
    assert head["status"] == "no interval" and head["winner"] is None
    assert all(not r["ratio"].has_interval for r in head["rows"][1:])
    assert [r["impl"] for r in cpu["compile"]["rows"]] == ["flax", "keras-jax", "keras-tf"]
    assert cpu["compile"]["rows"][2]["trace_s"] is None  # TensorFlow has no stage split
    conds = [c["label"] for c in cpu["acc_table"]]
    assert conds == ["original split, no augmentation", "original split, augmented", "resplit split, no augmentation"]
    assert all(set(c["by_impl"]) == {"flax", "keras-jax", "keras-tf"} for c in cpu["acc_table"])
    assert "No winner named: no interval" in html and "compiles fastest" not in html


def test_partial_run_shows_missing_cells(full):
    model, html, _ = full
    missing = [c for c in model.cells if c.status == "missing"]
    assert {c.id for c in missing} == {"test_step[keras-tf-cpu-bs8-32px-s1]", "test_accuracy[flax-original-noaug-quick]"}
    assert all("interrupted" in c.reason for c in missing)
    assert model.partial_runs and model.partial_runs[0]["missing"] == 2
    assert "Partial run." in html and "2 of 4 planned cells finished" in html
    assert "st-missing" in html and "test_accuracy[flax-original-noaug-quick]" in html


def test_a_finished_run_that_planned_pytest_parameters_is_complete(tmp_path):
    """Runs before record ids were planned listed pytest's parameters: parity's was its precision."""
    from benchmarks import record
    from benchmarks.store import RunFolder

    for planned, name in (("float32", "float32"), ("resnet-float32", "resnet-float32"), ("parity-s64-p1", None)):
        run = RunFolder.create(tmp_path / planned, "r", "quick", report_samples.machine_info("cpu"), [planned])
        run.write_cell(record.run_file("parity-s64-p1", "parity", "ok", None, None, report_samples.parity_extra(),
                                       name=name and record.test_name("parity", name)))
        run.update_meta(finished="2026-11-30T12:00:00")
        model = loading.load([run.path], include_published=False)
        assert not model.partial_runs and not [c for c in model.cells if c.status == "missing"], planned


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

    block = next(b for b in verdict.verdict(model) if b["machine"] == "nnx-box")
    for name in unknown:
        assert name in {h["impl"] for h in block["headline"]["rows"]}
        assert name in {r["impl"] for r in block["compile"]["rows"]}
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


# --------------------------------------------------------------------------- intervals across worker processes


def test_t_quantile_matches_the_tables():
    for df, t in ((2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042), (1e6, 1.960)):
        assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=5e-4), df
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)
    scipy_stats = pytest.importorskip("scipy.stats")  # a finer check where scipy happens to be installed
    for df in (1, 2.5, 3.83, 7.3, 55.0, 400.0):
        for p in (0.6, 0.9, 0.975, 0.995):
            assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9), (p, df)


def test_welch_interval_by_hand():
    e = math.e
    # logs a = 1, 2, 3 and b = 0, 1, 2: d = 1, variances 1, se = sqrt(1/3 + 1/3), df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    r = stats.log_ratio([([e, e**2, e**3], [1.0, e, e**2])])
    half = 2.776445105 * math.sqrt(2 / 3)
    assert (r.value, r.df) == (pytest.approx(e), pytest.approx(4.0))
    assert (r.lo, r.hi) == (pytest.approx(math.exp(1 - half)), pytest.approx(math.exp(1 + half)))
    assert (r.lo, r.hi) == (pytest.approx(0.28169, abs=1e-5), pytest.approx(26.2314, abs=1e-3))
    # keras-tf over flax on rep-box's CPU at batch 32 (report_samples.REPLICATE_STEPS): d = 0.404396,
    # s² of the logs 2.09295e-4 and 3.19634e-4, se = 0.0132782, df = 3.83319, t = 2.82475
    steps = report_samples.REPLICATE_STEPS[("cpu", 32)]
    r = stats.log_ratio([(steps["keras-tf"], steps["flax"])])
    assert r.df == pytest.approx(3.83319, abs=1e-4)
    assert (r.value, r.lo, r.hi) == (pytest.approx(1.49840, abs=1e-5), pytest.approx(1.44324, abs=1e-5),
                                     pytest.approx(1.55567, abs=1e-5))
    assert r.verdict == "slower"
    r = stats.log_ratio([(steps["keras-jax"], steps["flax"])])  # within noise: the interval straddles 1
    assert (r.lo, r.hi) == (pytest.approx(0.96808, abs=1e-5), pytest.approx(1.04846, abs=1e-5))
    assert r.verdict == "no clear difference"


def test_interval_over_several_configurations_combines_the_variances():
    a1, b1, a2, b2 = [1.0, 1.1, 1.2], [2.0, 2.1, 2.3], [3.0, 3.3], [3.1, 3.2, 3.4, 3.3]
    logs = [[math.log(x) for x in xs] for xs in (a1, b1, a2, b2)]
    means = [statistics.fmean(v) for v in logs]
    w = [statistics.variance(v) / len(v) for v in logs]
    d = ((means[0] - means[1]) + (means[2] - means[3])) / 2
    df = sum(w) ** 2 / sum(wi * wi / (len(v) - 1) for wi, v in zip(w, logs))
    half = stats.t_quantile(0.975, df) * math.sqrt(sum(w) / 4)
    r = stats.log_ratio([(a1, b1), (a2, b2)])
    assert (r.value, r.lo, r.hi, r.df) == (pytest.approx(math.exp(d)), pytest.approx(math.exp(d - half)),
                                           pytest.approx(math.exp(d + half)), pytest.approx(df))
    assert (r.n_a, r.n_b) == (2, 3)


def test_fewer_than_two_processes_give_no_interval():
    for pairs in ([([0.04], [0.05, 0.051])], [([0.04, 0.041], [0.05])], [([0.04, 0.041], [0.05, 0.05]), ([1.0], [2.0])]):
        r = stats.log_ratio(pairs)
        assert r.value > 0 and not r.has_interval and r.verdict == "no interval"
    assert stats.log_ratio([([], [1.0])]) is None


def test_zero_spread_gives_no_interval_and_no_winner():
    """Every process reporting the same value is no evidence of precision: no interval, no winner."""
    r = stats.log_ratio([([0.050, 0.050, 0.050], [0.040, 0.040, 0.040])])
    assert r.value == pytest.approx(1.25) and not r.has_interval and r.verdict == "no interval"
    impls = views.Impls(["flax", "keras-tf"], {})
    cmp = verdict.compare({"flax": {"c": [0.04, 0.04, 0.04]}, "keras-tf": {"c": [0.05, 0.05, 0.05]}}, impls)
    assert cmp["status"] == "no interval" and cmp["winner"] is None


def test_comparisons_with_the_fastest_are_simultaneous_and_respect_the_noise_floor():
    names = ["a", "b", "c", "d"]
    impls = views.Impls(names, {})
    samples = {"a": {"c": [1.00, 1.02, 0.98]}, "b": {"c": [1.10, 1.12, 1.08]}, "c": {"c": [1.3, 1.32, 1.28]},
               "d": {"c": [1.5, 1.53, 1.47]}}
    cmp = verdict.compare(samples, impls)
    level = 1 - 0.05 / 6  # 4 implementations: 6 pairs
    assert stats.simultaneous_level(4) == pytest.approx(level) and stats.simultaneous_level(2) == pytest.approx(0.95)
    b = next(r for r in cmp["rows"] if r["impl"] == "b")["ratio"]
    plain = stats.log_ratio([(samples["b"]["c"], samples["a"]["c"])])
    assert b.level == pytest.approx(level) and b.lo < plain.lo and b.hi > plain.hi  # wider than a lone 95% one
    assert cmp["status"] == "winner" and cmp["winner"] == "a"
    # the A/A control read x1.12 [1.04-1.21]: b's x1.10 lies inside it, so no winner is named
    noisy = verdict.compare(samples, impls, noise=stats.Ratio(1.12, 1.04, 1.21))
    rows = {r["impl"]: r["verdict"] for r in noisy["rows"]}
    assert rows == {"a": "fastest", "b": "within the noise floor", "c": "slower", "d": "slower"}
    assert noisy["status"] == "no clear difference" and noisy["winner"] is None and "b" in noisy["tied"]
    # the band is symmetric: a copy that read x0.89 [0.83-0.96] covers x1.10 as well
    assert stats.Ratio(1.10).inside(stats.Ratio(0.89, 0.83, 0.96)) and not stats.Ratio(1.25).inside(
        stats.Ratio(0.89, 0.83, 0.96))


def test_ratios_never_cross_runs(tmp_path):
    """A later run that measured only keras-jax: its series is shown, marked, and compared with nothing;
    the run that measured every implementation is the one compared."""
    r = report_samples.replicates(tmp_path)
    later = tmp_path / "later"
    cells = [report_samples.replicate_step("keras-jax", "cpu", 32, i, step, 1.7) for i, step in enumerate([0.030, 0.031, 0.029])]
    for c in cells:
        report_samples._write(later / "cells" / f"{c['id']}.json", c)
    info = json.loads((r["replicated_run"] / "run.json").read_text())["machine_info"]
    report_samples._write(later / "run.json", {"run_id": "20250301-100000-later", "started": "2025-03-01T10:00:00",
                                               "finished": "2025-03-01T10:05:00", "profile": "default",
                                               "commit": "e" * 40, "machine_info": info,
                                               "planned": [c["id"] for c in cells]})
    model = loading.load([r["replicated_run"], later], include_published=False)
    cpu = next(b for b in verdict.verdict(model) if b["machine"].startswith("rep-box") and b["device"] == "cpu")
    g32 = next(g for g in cpu["speed"] if g["batch_size"] == 32)
    row = g32["by_impl"]["keras-jax"]
    assert row["verdict"] == "other run" and row["ratio"] is None and row["step_s"] == pytest.approx(0.030, rel=0.05)
    assert "keras-jax" not in {x["impl"] for x in g32["compare"]["rows"]}
    # the headline's keras-jax ratio comes from batch 16 alone, where both sides ran in one run
    head = {x["impl"]: x for x in cpu["headline"]["rows"]}
    assert head["keras-jax"]["configs"] == 1
    assert "other run</span>" in render.render(model)
    # a cell a later run reused from an interrupted one counts as the interrupted run's
    reused = loading.CellRecord(machine="m", source="s", id="x", name="x", kind="step", status="ok", reason=None,
                          stats=None, extra={"reused_from": "20250101-run"}, run_id="20250102-run")
    assert reused.measured_in == "20250101-run" and model_mod.Replicates([reused]).run == "20250101-run"


def _evidence(impl, step_s, faults, kernel_s, phases):
    forward, fb, update = phases
    cell = loading.CellRecord(machine="m", source="s", id=impl, name=impl, kind="step", status="ok", reason=None,
                        stats={"median": step_s}, run_id="r",
                        extra={"impl": impl, "stats_unit": "step", "image_size": 64, "pool_stride": 2, "batch_size": 32,
                               "page_faults_per_step": faults, "kernel_s_per_step": kernel_s,
                               "breakdown": {"forward_s": forward, "forward_backward_s": fb, "update_s": update}})
    return model_mod.Replicates([cell])


def test_a_large_gap_gets_its_reason_from_the_runs_own_evidence():
    """Fresh memory faulted in every step (getrusage) and the phase holding most of the gap (the breakdown)."""
    slow = _evidence("flax", 0.095, 22_917, 0.035, (0.0114, 0.0948, 0.0012))
    fast = _evidence("keras-tf", 0.060, 12, 0.001, (0.0137, 0.0586, 0.0013))
    why = verdict.reason(slow, fast)
    assert "faults in 90 MiB of fresh memory every step (22,917 page faults, 35 ms in the kernel)" in why
    assert "where keras-tf reuses its memory (12 faults)" in why
    assert "the backward pass holds most of the gap (83.4 vs 44.9 ms, in steps of 95.0 vs 60.0 ms)" in why
    bare = [model_mod.Replicates([loading.CellRecord(machine="m", source="s", id=i, name=i, kind="step", status="ok",
                                               reason=None, stats={"median": t}, extra={"impl": i, "stats_unit": "step"})])
            for i, t in (("a", 0.2), ("b", 0.1))]
    assert verdict.reason(*bare).startswith("unexplained")


def test_every_ratio_beyond_1_3_in_the_verdict_has_a_reason(reps):
    _, blocks, html = reps
    for b in blocks.values():
        for r in (b["headline"] or {}).get("rows", [])[1:]:
            assert (r["ratio"].value > verdict.LARGE_GAP) == bool(r["reason"]), r
    assert "why: unexplained: no breakdown or memory evidence in this run" in html  # keras-tf on rep-box's CPU
    for b in blocks.values():  # compile times too: keras-tf compiles 3.4x slower than flax on rep-box
        for r in (b["compile"] or {}).get("rows", [])[1:]:
            assert (r["ratio"].value > verdict.LARGE_GAP and not r["copy"]) == bool(r["reason"]), r
    assert "why: unexplained: only JAX splits its compile time (TensorFlow reports none)" in html


def test_the_tuned_copy_is_ranked_with_no_one_and_shown_against_its_original(tmp_path):
    r = report_samples.replicates(tmp_path)
    folder = r["replicated_run"]
    for bs, steps in ((16, [0.0150, 0.0152, 0.0149]), (32, [0.0280, 0.0284, 0.0279])):
        for i, step in enumerate(steps):
            c = report_samples.replicate_step("flax", "cpu", bs, i, step, 0.9)
            c["id"], c["name"] = (c[k].replace("step-flax-", "step-flax~tuned-") for k in ("id", "name"))
            c["extra_info"].update(tuned=True, tuned_env={"XLA_FLAGS": "--x"})
            report_samples._write(folder / "cells" / f"{c['id']}.json", c)
    model = loading.load([folder], include_published=False)
    cpu = next(b for b in verdict.verdict(model) if b["device"] == "cpu")
    assert "flax (tuned)" not in {x["impl"] for x in cpu["headline"]["rows"]}  # the defaults stay the headline
    row = cpu["speed"][0]["by_impl"]["flax (tuned)"]
    assert row["vs"] == "flax" and row["verdict"] == "faster" and row["ratio"].hi < 1
    assert views.Impls.of(model).names[-1] == "flax (tuned)"


def test_ratio_and_byte_formats():
    assert formatting.fmt_ci(stats.Ratio(1.2, 1.1, 1.3)) == "×1.20 [1.10–1.30]"
    assert formatting.fmt_ci(stats.Ratio(1.007, 0.984, 1.031)) == "×1.007 [0.984–1.031]"  # narrow: 3 decimals
    assert formatting.fmt_ci(stats.Ratio(1.15)) == "×1.15" and formatting.fmt_ci(None) == "–"
    assert formatting.fmt_bytes(3 * 2**20, signed=True) == "+3 MiB" and formatting.fmt_bytes(1536) == "1.5 KiB"
    assert formatting.fmt_bytes(-2 * 2**30, signed=True) == "−2 GiB" and formatting.fmt_bytes(None) == "–"


@pytest.fixture(scope="module")
def reps(tmp_path_factory):
    """rep-box (3 processes per cell, an A/A copy), solo-box (one process) and the mixed-format history."""
    r = report_samples.replicates(tmp_path_factory.mktemp("reps"))
    model = loading.load([r["replicated_run"], r["single_replicate_run"]], history_dir=r["mixed_history"],
                         include_published=False)
    blocks = {(b["machine"], "cpu" if b["device"] == "cpu" else "gpu"): b for b in verdict.verdict(model)}
    return model, blocks, render.render(model)


def test_replicates_are_one_configuration(reps):
    model, _, _ = reps
    configs = {(r.machine.split(" ")[0], r.impl, r.device, r.info.batch_size): r for r in model.step_configs()}
    flax = configs[("rep-box", "flax", "cpu", 32)]
    assert [c.replicate for c in flax.cells] == [0, 1, 2] and flax.n == flax.planned == 3
    assert flax.values("step_s") == report_samples.REPLICATE_STEPS[("cpu", 32)]["flax"]
    assert flax.step_s == pytest.approx(stats.geomean([0.0400, 0.0410, 0.0396]))
    assert flax.values("compile_s") == report_samples.REPLICATE_COMPILE["flax"]
    assert (flax.step_q("q1"), flax.step_q("q3")) == (0.0396, 0.0410)  # the range over processes
    old = loading.CellRecord(machine="m", source="s", id="x", name="x", kind="step", status="ok", reason=None,
                       stats={"median": 0.5, "q1": 0.4}, extra={"steps_per_call": 10})
    assert old.replicate == 0 and model_mod.Replicates([old]).planned == 1  # an old cell: replicate 0 of 1
    assert old.step_s == pytest.approx(0.05)  # per call ÷ steps per call
    new = loading.CellRecord(machine="m", source="s", id="y", name="y", kind="step", status="ok", reason=None,
                       stats={"median": 0.05}, extra={"steps_per_call": 10, "stats_unit": "step"})
    assert new.step_s == pytest.approx(0.05)  # already per step


def test_a_clear_winner_is_named(reps):
    _, blocks, html = reps
    gpu = blocks[("rep-box", "gpu")]
    head = gpu["headline"]
    assert head["status"] == "winner" and head["winner"] == "flax"
    assert [r["verdict"] for r in head["rows"]] == ["fastest", "slower", "slower"]
    assert all(r["ratio"].lo > 1 for r in head["rows"][1:])
    assert gpu["speed"][0]["by_impl"]["flax"]["best"]
    assert gpu["compile"]["status"] == "winner" and gpu["compile"]["fastest"] == "flax"
    verdict_html = html.split('<section id="verdict">')[1].split("</section>")[0]
    assert re.search(r'<i style="background:#0072B2"></i>flax</span> is fastest', verdict_html)
    # simultaneous over the 3 pairs of 3 implementations: each interval at 98.3%, wider than a lone 95% one
    assert "×1.20 [1.16–1.24]" in verdict_html and "compiles fastest" in verdict_html


def test_within_noise_no_winner_is_named(reps):
    _, blocks, html = reps
    cpu = blocks[("rep-box", "cpu")]
    head = cpu["headline"]
    assert head["status"] == "no clear difference" and head["winner"] is None
    assert set(head["tied"]) == {"flax", "keras-jax"}
    rows = {r["impl"]: r for r in head["rows"]}
    assert rows["keras-jax"]["verdict"] == "no clear difference" and rows["keras-tf"]["verdict"] == "slower"
    assert rows["keras-jax"]["ratio"].lo < 1 < rows["keras-jax"]["ratio"].hi
    for g in cpu["speed"]:  # per batch size, too: no cell is marked the winner
        assert g["compare"]["status"] == "no clear difference" and not any(r["best"] for r in g["rows"])
    assert "No clear difference: " in html and "no clear difference</span>" in html
    steps = report_samples.REPLICATE_STEPS
    both = [(steps[("cpu", bs)]["keras-jax"], steps[("cpu", bs)]["flax"]) for bs in (16, 32)]
    expected = stats.log_ratio(both, stats.simultaneous_level(3))  # 3 implementations compared: 98.3% each
    got = rows["keras-jax"]["ratio"]
    assert (got.lo, got.hi) == (pytest.approx(expected.lo), pytest.approx(expected.hi))
    assert formatting.fmt_ci(expected) in html  # the interval is given


def test_aa_copy_is_its_own_series_and_the_noise_floor(reps):
    model, blocks, html = reps
    impls = views.Impls.of(model)
    # the cells ran (and are listed) in random order: machine_info's impl_order keeps the page's order
    assert impls.names == ["flax", "keras-jax", "keras-tf", "flax (A/A copy)"]
    assert impls.color("flax (A/A copy)") != impls.color("flax")
    cpu = blocks[("rep-box", "cpu")]
    assert "flax (A/A copy)" not in {r["impl"] for r in cpu["headline"]["rows"]}  # ranked with no one
    (aa,) = cpu["noise_floor"]
    assert (aa["impl"], aa["base"], aa["configs"]) == ("flax (A/A copy)", "flax", 2)
    assert aa["ratio"].verdict == "no clear difference" and aa["ratio"].lo < 1 < aa["ratio"].hi
    steps = report_samples.REPLICATE_STEPS
    expected = stats.log_ratio([(steps[k]["flax (A/A copy)"], steps[k]["flax"]) for k in (("cpu", 16), ("cpu", 32))])
    assert aa["ratio"] == expected
    row = cpu["speed"][0]["by_impl"]["flax (A/A copy)"]
    assert row["vs"] == "flax" and row["verdict"] == "no clear difference" and not row["tied"]
    aa_compile = next(r for r in cpu["compile"]["rows"] if r["aa_copy"])
    assert aa_compile["vs"] == "flax" and aa_compile["ratio"].has_interval
    assert "The harness's noise floor" in html and f"A/A: {formatting.fmt_ci(aa['ratio'])}" in html
    assert "<th>" + _chip("flax (A/A copy)", impls.color("flax (A/A copy)")) + "</th>" in html


def test_one_process_gives_no_interval_and_no_winner(reps):
    _, blocks, html = reps
    solo = blocks[("solo-box", "cpu")]
    assert solo["headline"]["status"] == "no interval" and solo["headline"]["winner"] is None
    assert solo["headline"]["rows"][1]["ratio"].value == pytest.approx(0.046 / 0.040)
    assert solo["compile"]["status"] == "no interval" and solo["processes"] == [1]
    assert "No winner named: no interval" in html
    assert stats.METHOD in html and stats.WINNER_RULE in html and "Welch" in html


def test_history_is_per_step_across_old_and_new_files(reps):
    model, _, _ = reps
    points = [p for p in model.history if p.impl == "flax"]
    assert len(points) == 1 + 1 + 3 + 3  # two old single-process files, two new three-process ones
    assert all(0.039 < p.step_s < 0.042 for p in points), [p.step_s for p in points]  # no ×10 jump either way
    series = plots._history_series(points)
    (by_commit,) = series.values()
    values = [plots._history_value(pts)[0] for pts in by_commit.values()]
    assert max(values) / min(values) < 1.03


def test_new_fields_are_on_the_page(reps):
    model, blocks, html = reps
    for impl, text in report_samples.TIMED_REGION.items():
        assert text in html and report_samples.USER_LOOP[impl] in html
    assert [(t["impl"], t["user_loop"]) for t in verdict.timed_regions(model)] == list(report_samples.USER_LOOP.items())
    assert "What a timed step contains".lower() in html.lower() and "users 55,652" in html
    assert "as users run it" in html
    cpu = blocks[("rep-box", "cpu")]
    assert cpu["matmul_rate"] == {"flops": 2.6e11, "precision": "float32", "framework": "jax", "method": None,
                                  "default_flops": None, "bf16_flops": None, "distinct": 1}
    assert "Measured matmul rate on this device" in html and "peak" not in html.replace("peak memory", "")
    d = next(r for r in cpu["details"] if r["impl"] == "flax" and r["batch_size"] == 32)
    assert d["xla_to_analytic"] == pytest.approx(1.04) and d["rss_growth_bytes"] == 3 * 2**20
    assert d["mfu"] == pytest.approx(d["flops_per_step"] / stats.geomean([0.04, 0.041, 0.0396]) / 2.6e11)
    assert "+3 MiB" in html and "×1.04" in html
    env = dict(views.environment(model)["rows"])
    assert env["Threads · flax"][0] == "env: OMP_NUM_THREADS=2, TF_NUM_INTRAOP_THREADS=unset; framework: intra_op=2, inter_op=1"
    assert "Threads · flax (A/A copy)" not in env  # the same settings as its original
    assert env["Processes per step cell"][0] == 3 and env["A/A control of"][0] == "flax"
    acc = {r["impl"]: r for r in cpu["accuracy"]}
    assert acc["flax"]["n_seeds"] == 1 and acc["keras-jax"]["n_seeds"] == 3
    assert "one seed" in html and "± 0.0%" not in html
    figs = plots.all_figures(model)
    mfu_svgs = [base64.b64decode(f.uri.split(",", 1)[1]).decode() for f in figs["mfu"] if f.uri]
    assert mfu_svgs and all("matmul rate" in s and "peak" not in s for s in mfu_svgs)


def test_the_published_result_renders_and_carries_no_local_path(tmp_path):
    """The committed results themselves, not fabricated samples: every implementation and its
    interval on the page, and nothing that names the author's machine's folders."""
    published = sorted((Path(__file__).resolve().parents[1] / "reports" / "published").glob("*.json"))
    assert published, "no published result"
    for path in published:
        text = path.read_text()
        assert not re.search(r'"/(work|home|root|tmp|Users)/', text), f"{path.name} carries an absolute local path"
        data = json.loads(text)
        impls = {b["extra_info"]["impl"] for b in data["benchmarks"] if b["extra_info"].get("kind") == "step"}
        out = build_report([path], tmp_path / f"{path.stem}.html", include_published=False)
        page = out.read_text()
        for impl in impls:
            assert impl in page
        assert "[" in page and "interval" in page


def test_each_cell_shows_the_command_that_measures_it_again(reps, full, tmp_path):
    """The published result's commands, escaped as jinja2 escapes them: replicate 0's once per row of
    replicates (its -k runs them all); a result file without commands renders without any."""
    path = Path(__file__).resolve().parents[1] / "reports" / "published" / "cpu-x86_64-2c-default.json"
    cells = [b["extra_info"] for b in json.loads(path.read_text())["benchmarks"]]
    page = build_report([path], tmp_path / "published.html", include_published=False).read_text()
    page = re.sub(r"</?span>", "", page)  # a command's arguments are spans
    for kind in ("step", "accuracy"):
        cmd = next(e["command"] for e in cells if e["kind"] == kind and not e.get("replicate"))
        assert f'<code class="cmd">{escape(cmd)}</code>' in page
    assert escape(next(e["command"] for e in cells if e.get("replicate") == 1)) not in page
    model, _, _ = reps
    flax = next(r for r in model.step_configs() if r.machine.startswith("rep-box") and r.impl == "flax")
    assert [c.replicate for c in flax.cells] == [0, 1, 2]
    assert model_mod.commands(flax.cells) == [flax.cells[0].info.command]
    assert model_mod.commands(flax.cells[1:]) == [c.info.command for c in flax.cells[1:]]  # each its own
    _, old_html, _ = full  # samples in the older formats, without commands
    assert "Commands that measure" not in old_html and 'class="cmd"' not in old_html


def test_gate_regressions_circle_only_their_own_step_series():
    """The gate reports step time per pool stride and compile time: a compile-time or stride-2
    regression must not be drawn on the stride-1 step-time series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    series = ("flax", 32, 32, 1)  # impl, batch, image size, pool stride
    regs = [
        {"impl": "flax", "device": "cpu", "batch_size": 32, "image_size": 32, "pool_stride": 1, "metric": "compile"},
        {"impl": "flax", "device": "cpu", "batch_size": 32, "image_size": 32, "pool_stride": 2, "metric": "step"},
    ]
    assert plots._mark_regressions(ax, regs, series, "cpu", 0.0, 1.0) == 0
    step1 = {**regs[1], "pool_stride": 1}
    old = {k: v for k, v in step1.items() if k not in ("metric", "pool_stride")}  # a verdict from before both
    assert plots._mark_regressions(ax, [step1, old], series, "cpu", 0.0, 1.0) == 2
    plt.close(fig)
