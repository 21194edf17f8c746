"""The step-time gate: its decision rule, its refusals of bad input, what it skips when the baseline
commit lacks a cell (fast, no workers), and one short A/B run against the real baseline commit."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks import machine, registry
from benchmarks.cli import main as cli_main
from benchmarks.gate import GateInputError, ab, baseline, cli, stats, worktree
from benchmarks.profiles import Cell, cells, profile
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.worker_client import CellSkipped, Protocol

MC = machine.machine_class([])
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- module layout

LAYERS = ("stats", "worktree", "baseline", "ab", "cli")  # each may import only those before it


def _imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "benchmarks" / "gate" / f"{module}.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            names |= {f"{n.module}.{a.name}" for a in n.names} if n.module == "benchmarks.gate" else {n.module}
    return names


def test_gate_modules_import_one_way_and_stats_is_pure():
    assert {m.split(".")[0] for m in _imports("stats")} <= {"__future__", "math", "dataclasses", "numpy"}
    for i, module in enumerate(LAYERS):
        inner = {m.split(".")[2] for m in _imports(module) if m.startswith("benchmarks.gate.")}
        assert inner <= set(LAYERS[:i]) | {"GateInputError"}, f"{module} imports {inner}"


# ----------------------------------------------------------------------------- statistics


def test_signed_rank_exact_values():
    assert stats.signed_rank_p([1, 2, 3, 4, 5]) == pytest.approx(1 / 32)
    assert stats.signed_rank_p([-1, -2, -3, -4, -5]) == pytest.approx(1.0)
    # n = 10, W+ = 45: brute force over all 2^10 sign patterns
    d = [1, 2, 3, 4, 5, 6, 7, 8, 9, -10]
    count = sum(sum(r for i, r in enumerate(range(1, 11)) if m >> i & 1) >= 45 for m in range(1024))
    assert stats.signed_rank_p(d) == pytest.approx(count / 1024)
    null = stats._signed_rank_null(12)
    assert null.sum() == pytest.approx(1.0) and len(null) == 12 * 13 // 2 + 1


def test_median_ci_covers():
    rng = np.random.default_rng(1)
    hits = sum(lo <= 0 <= hi for lo, hi in (stats.median_ci(rng.normal(size=30)) for _ in range(2000)))
    assert hits / 2000 >= 0.94


def _noise(rng, n, sd=0.08):
    # the difference of two heavy-tailed (load spike) timings: symmetric, outliers both ways
    a = rng.lognormal(0, sd, n) * (1 + (rng.random(n) < 0.1) * rng.exponential(0.5, n))
    b = rng.lognormal(0, sd, n) * (1 + (rng.random(n) < 0.1) * rng.exponential(0.5, n))
    return np.log(a / b)


def test_15_percent_shift_is_flagged():
    rng = np.random.default_rng(2)
    flagged = sum(stats.decide(_noise(rng, 50) + math.log(1.15), 0.03, 0.01 / 3).regressed for _ in range(200))
    assert flagged >= 190


def test_identical_distributions_flagged_at_most_at_alpha():
    rng = np.random.default_rng(3)
    alpha, trials = 0.05, 4000
    # margin 0: the exact test's own rate, which must not exceed alpha
    flagged = sum(stats.decide(_noise(rng, 20), 0.0, alpha).regressed for _ in range(trials))
    assert flagged / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert flagged / trials >= 0.02  # and the test is not vacuous
    # with the default margin, identical code is essentially never flagged
    flagged = sum(stats.decide(_noise(rng, 20), 0.04, alpha).regressed for _ in range(1000))
    assert flagged <= 5


def _run_sequential(rng, shift, alpha=0.01 / 3, margin=0.03, max_pairs=100):
    t = stats.SequentialTest(alpha, margin, max_pairs)
    stop = None
    while stop is None:
        stop = t.add(_noise(rng, 1, sd=0.12)[0] + math.log(shift))
    return t.decision(), stop


def test_sequential_rule_power_and_false_alarms():
    rng = np.random.default_rng(4)
    caught = sum(_run_sequential(rng, 1.15)[0].regressed for _ in range(200))
    assert caught >= 190
    # identical code: the looks are Bonferroni-split, so early stopping keeps the rate <= alpha
    false = [_run_sequential(rng, 1.0) for _ in range(300)]
    assert sum(d.regressed for d, _ in false) == 0
    assert np.median([d.n for d, _ in false]) < 100  # most clean cells stop early


def test_sequential_looks_split_alpha():
    t = stats.SequentialTest(0.01, 0.04, 100)
    assert t.looks[-1] == 100 and t.alpha_interim == pytest.approx(0.01 / 2 / (len(t.looks) - 1))
    i = 0
    while t.add(0.5 if i % 2 else -0.5) is None:  # undecided until the end
        i += 1
    assert len(t.r) == 100 and t.spent == pytest.approx(0.01) and t.decision().alpha <= 0.01
    assert stats.looks_upto(20) == [12, 18, 20]


# ----------------------------------------------------------------------------- bad input -> exit 2


def _baseline(**over):
    b = {
        "format": baseline.FORMAT, "machine_class": MC, "cpu": "x", "cpu_count": 2, "commit": "0" * 40,
        "cells": {"flax-cpu-s32-p1-b32": {"impl": "flax", "device": "cpu", "image_size": 32, "pool_stride": 1,
                                          "batch_size": 32, "step_s": 0.1, "peak_flops": 4e10}},
    }
    b.update(over)
    return b


def _gate(tmp_path, *argv):
    return cli_main(["gate", "--baseline-dir", str(tmp_path), "--last", str(tmp_path / "last.json"), *argv])


def test_no_baseline_says_how_to_create(tmp_path, capsys):
    (tmp_path / "other-class-4c-nogpu.json").write_text("{}")
    assert _gate(tmp_path) == 2
    err = capsys.readouterr().err
    assert MC in err and "--update-baseline" in err and "other-class-4c-nogpu.json" in err


def test_baseline_from_another_machine_class(tmp_path, capsys):
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(_baseline(machine_class="amd-epyc-64c-nogpu")))
    assert _gate(tmp_path, "--baseline", str(path)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "amd-epyc-64c-nogpu" in err and MC in err


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": 1}), json.dumps(_baseline(commit=None)),
                                  json.dumps(_baseline(cells={"x": {"step_s": "fast"}}))])
def test_corrupt_baseline_names_the_file(tmp_path, capsys, text):
    path = tmp_path / f"{MC}.json"
    path.write_text(text)
    assert _gate(tmp_path) == 2
    err = capsys.readouterr().err
    assert "corrupt baseline" in err and str(path) in err


def test_unknown_impl(tmp_path, capsys):
    (tmp_path / f"{MC}.json").write_text(json.dumps(_baseline()))
    assert _gate(tmp_path, "--impls", "pytorch") == 2
    assert "pytorch" in capsys.readouterr().err


# ----------------------------------------------------------------------------- --results mode


def _results(tmp_path, step_s, peak):
    run = {"benchmarks": [{"fullname": "x", "stats": {"ops": 1.0}, "extra_info": {
        "kind": "step", "status": "ok", "impl": "flax", "device": "cpu", "device_kind": "cpu", "image_size": 32,
        "pool_stride": 1, "batch_size": 32, "step_s_median": step_s, "peak_flops": peak}}]}
    path = tmp_path / "output.json"
    path.write_text(json.dumps(run))
    return path


def test_results_mode_flags_a_normalised_regression(tmp_path, capsys):
    (tmp_path / f"{MC}.json").write_text(json.dumps(_baseline()))
    # the machine ran 2x slower (calibration halved) and the step took 3x: normalised 1.5
    out = _results(tmp_path, 0.3, 2e10)
    assert _gate(tmp_path, "--impls", "flax", "--results", str(out), "--json", str(tmp_path / "v.json")) == 1
    text = capsys.readouterr().out
    assert "flax on cpu" in text and "1.500x" in text
    last = json.loads((tmp_path / "last.json").read_text())
    assert last["regressions"][0]["impl"] == "flax" and last["regressions"][0]["ratio"] == pytest.approx(1.5)
    assert json.loads((tmp_path / "v.json").read_text()) == last


def test_results_mode_passes_a_slower_machine(tmp_path):
    (tmp_path / f"{MC}.json").write_text(json.dumps(_baseline()))
    out = _results(tmp_path, 0.2, 2e10)  # 2x slower step, but the machine is 2x slower too
    assert _gate(tmp_path, "--impls", "flax", "--results", str(out)) == 0


# ----------------------------------------------------------------------------- git: baseline update, worktrees


def _repo(path):
    run = lambda *a: subprocess.run(["git", *a], cwd=path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (path / "f.txt").write_text("a")
    run("add", "f.txt")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    return path


def test_update_baseline_refuses_a_dirty_tree(tmp_path, monkeypatch, capsys):
    repo = _repo(tmp_path / "repo" if (tmp_path / "repo").mkdir() is None else None)
    (repo / "f.txt").write_text("changed")
    monkeypatch.setattr(worktree, "ROOT", repo)
    assert _gate(tmp_path, "--update-baseline") == 2
    err = capsys.readouterr().err
    assert "dirty" in err and "f.txt" in err and "--allow-dirty" in err
    assert not (tmp_path / f"{MC}.json").exists()


def test_worktree_is_removed_and_old_commits_are_refused(tmp_path, monkeypatch):
    repo = _repo(tmp_path / "repo" if (tmp_path / "repo").mkdir() is None else None)
    monkeypatch.setattr(worktree, "ROOT", repo)
    with pytest.raises(GateInputError, match="lacks benchmarks/worker.py"):
        with worktree.worktree(worktree.resolve_commit("HEAD")):
            pass
    listed = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout
    assert len(listed.strip().splitlines()) == 1
    with pytest.raises(GateInputError, match="not in this repository"):
        worktree.resolve_commit("f" * 40)


# ----------------------------------------------------------------------------- cells and the protocol handshake

SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec))
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
OLD = Protocol(0, ("flax", "keras-jax", "keras-tf"), SPEC_FIELDS, TRAIN_FIELDS)  # as 248ca9b reads from its source
NEW = Protocol(1, registry.NAMES, SPEC_FIELDS, TRAIN_FIELDS)
ROOTS = {"base": Path("/base"), "head": Path("/head")}
COMMIT = "248ca9be6f81d341df01cdda919e21dc40496160"


def _cell(impl="flax", **spec):
    return Cell("step", impl, "cpu", ModelSpec(32, **spec), TrainConfig(batch_size=32))


def _fit(cell, base=OLD, head=NEW):
    from benchmarks.harness import payload

    return ab.fit_sides(cell, payload(cell, {"source": "synthetic"}), {"base": base, "head": head}, ROOTS, COMMIT)


def test_cells_keep_the_committed_baseline_keys():
    step = [c for c in cells(profile("quick"), ["flax", "keras-tf"], ("cpu",)) if c.kind == "step"]
    assert [baseline.key(c) for c in step] == ["flax-cpu-s32-p1-b32", "keras-tf-cpu-s32-p1-b32"]
    committed = json.loads((ROOT / "benchmarks" / "baselines" / "x86_64-2c-nogpu.json").read_text())
    for name, fig in committed["cells"].items():
        cell = Cell("step", fig["impl"], fig["device"], ModelSpec(fig["image_size"], pool_stride=fig["pool_stride"]),
                    TrainConfig(batch_size=fig["batch_size"]))
        assert baseline.key(cell) == name and {**baseline.describe(cell), "step_s": fig["step_s"]}.items() <= fig.items()


def test_an_implementation_the_baseline_lacks_is_skipped():
    with pytest.raises(CellSkipped, match="^baseline commit 248ca9b lacks flax-nnx$"):
        _fit(_cell("flax-nnx"))


def test_each_side_gets_only_the_fields_its_tree_knows():
    old = dataclasses.replace(OLD, spec_fields=tuple(f for f in SPEC_FIELDS if f != "channels"))
    base, head = _fit(_cell(), base=old)
    assert "channels" not in base.payload["spec"] and head.payload["spec"]["channels"] == 3
    assert (base.name, base.root, head.name, head.root) == ("base", ROOTS["base"], "head", ROOTS["head"])
    assert base.error is None and head.error is None
    # a field the baseline does not know, set away from its default: the baseline would measure another model
    with pytest.raises(CellSkipped, match="^baseline commit 248ca9b: .*spec field.*channels"):
        _fit(_cell(channels=1), base=old)


def test_a_head_that_cannot_run_the_cell_fails_it_and_a_mute_baseline_is_no_regression():
    base, head = _fit(_cell("flax-nnx"), base=NEW, head=OLD)
    assert base.payload and "lacks flax-nnx" in head.error
    said = []
    rec = ab.measure_cell(_cell("flax-nnx"), base, head, None, {}, 0.01, 0.0, said.append)
    assert rec["status"] == "failed" and rec["regressed"] and rec["key"] == "flax-nnx-cpu-s32-p1-b32" and said
    base, head = _fit(_cell(), base="cannot say what it speaks: boom")
    rec = ab.measure_cell(_cell(), base, head, None, {}, 0.01, 0.0, said.append)
    assert rec["status"] == "failed" and not rec["regressed"] and "boom" in rec["reason"]


def test_skipped_cells_pass_and_are_recorded(tmp_path, capsys):
    ok = {**baseline.describe(_cell()), "key": "flax-cpu-s32-p1-b32", "status": "ok", "regressed": False, "ratio": 1.0}
    skipped = {**baseline.describe(_cell("flax-nnx")), "key": "flax-nnx-cpu-s32-p1-b32", "status": "skipped",
               "regressed": False, "reason": "baseline commit 248ca9b lacks flax-nnx"}
    args = argparse.Namespace(alpha=0.01, margin=0.03, last=str(tmp_path / "last.json"), json=None)
    assert cli.report(args, [ok, skipped], "ab", tmp_path / "b.json", 1.0, print) == 0
    assert "no step-time regression in 1 cell(s); 1 skipped (flax-nnx)" in capsys.readouterr().out
    last = json.loads((tmp_path / "last.json").read_text())
    assert last["cells"][1]["status"] == "skipped" and last["regressions"] == []


BASE_FILE = ROOT / "benchmarks" / "baselines" / f"{MC}.json"


@pytest.mark.skipif(not (ROOT / "impl_flax" / "nnx.py").exists(), reason="impl_flax/nnx.py is not written yet")
@pytest.mark.skipif(not BASE_FILE.exists(), reason=f"no committed baseline for this machine class ({MC})")
def test_gate_against_the_real_baseline_measures_flax_and_skips_flax_nnx(tmp_path, monkeypatch, capsys):
    commit = json.loads(BASE_FILE.read_text())["commit"]
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, check=False).returncode:
        pytest.skip(f"baseline commit {commit[:12]} is not in this clone")
    monkeypatch.setenv("XFBENCH_HOME", str(tmp_path / "home"))
    rc = cli_main(["gate", "--impls", "flax,flax-nnx", "--pairs", "12", "--budget-s", "40", "--no-calibrate",
                   "--last", str(tmp_path / "last.json")])
    out = capsys.readouterr().out
    by_impl = {c["impl"]: c for c in json.loads((tmp_path / "last.json").read_text())["cells"]}
    assert by_impl["flax-nnx"]["status"] == "skipped" and f"{commit[:7]} lacks flax-nnx" in by_impl["flax-nnx"]["reason"]
    assert f"flax-nnx-cpu-s32-p1-b32: skipped -- baseline commit {commit[:7]} lacks flax-nnx" in out
    assert by_impl["flax"]["status"] == "ok" and by_impl["flax"]["pairs"] >= 12
    assert rc == (1 if by_impl["flax"]["regressed"] else 0)
