"""The step-time gate: its decision rule, its refusals of bad input, how it chooses the baseline commit,
its exit status when a worker fails (fake workers), what it skips when the baseline commit lacks a cell
(fast, no workers), and one short A/B run against the real pinned commit with no per-machine file."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import machine, registry
from benchmarks.cli import main as cli_main
from benchmarks.gate import GateInputError, ab, baseline, cli, history, stats, worktree
from benchmarks.inputs import payload
from benchmarks.profiles import Cell
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.worker_client import CellSkipped, Protocol, WorkerError

MC = machine.machine_class([])
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- module layout

LAYERS = ("stats", "history", "worktree", "baseline", "ab", "selftest", "cli")  # each may import only those before it


def _imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "benchmarks" / "gate" / f"{module}.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            names |= {f"{n.module}.{a.name}" for a in n.names} if n.module == "benchmarks.gate" else {n.module}
    return names


def test_gate_modules_import_one_way_and_stats_is_pure():
    assert {m.split(".")[0] for m in _imports("stats")} <= {"__future__", "math", "dataclasses", "numpy"}
    assert {m for m in _imports("history") if m.startswith("benchmarks")} <= {"benchmarks.store", "benchmarks.record"}
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


def test_a_cell_regresses_only_when_every_process_pair_shows_it():
    def dec(regressed, ratio=1.2, p=0.001):
        return stats.Decision(20, ratio, (ratio * 0.9, ratio * 1.1), p, regressed, 0.01, 0.03)

    rule = stats.ProcessPairs(3)
    assert rule.add(dec(True, 1.2)) is None and rule.add(dec(True, 1.3, 0.004)) is None
    assert rule.add(dec(True, 1.25)) == "regressed" and rule.regressed and rule.p == 0.004
    ratio, (lo, hi) = rule.ratio()
    assert ratio == pytest.approx(math.exp(np.mean(np.log([1.2, 1.3, 1.25]))))
    half = stats.T975[2] * np.std(np.log([1.2, 1.3, 1.25]), ddof=1) / math.sqrt(3)
    assert (lo, hi) == pytest.approx((ratio * math.exp(-half), ratio * math.exp(half)))
    rule = stats.ProcessPairs(3)  # the first quiet pair ends the cell as a pass
    assert rule.add(dec(True)) is None and rule.add(dec(False, 1.01, 0.4)) == "pass" and not rule.regressed
    one = stats.ProcessPairs(1)
    assert one.add(dec(False, 1.01, 0.5)) == "pass" and one.ratio() == (1.01, (1.01 * 0.9, 1.01 * 1.1))


def test_process_effects_raise_one_pairs_false_alarms_but_not_a_cells():
    """The simulation behind the design: each process carries a fixed offset (sd 2%), which a single
    pair's test takes for a slowdown; three fresh pairs must all be fooled the same way."""
    rng = np.random.default_rng(5)

    def pair(shift):
        offset = rng.normal(0, 0.02) - rng.normal(0, 0.02)
        t = stats.SequentialTest(0.01, 0.03, 36)
        stop = None
        while stop is None:
            stop = t.add(rng.normal(0, 0.05) + offset + math.log(shift))
        return t.decision()

    def cell(shift, n=3):
        rule = stats.ProcessPairs(n)
        verdict = None
        while verdict is None:
            verdict = rule.add(pair(shift))
        return rule.regressed

    single = sum(pair(1.0).regressed for _ in range(400)) / 400
    assert single > 0.015  # the process effect does fool one pair's test (alpha 0.01 is split over looks)
    assert sum(cell(1.0) for _ in range(400)) <= 2  # ~single^3
    assert sum(cell(1.15) for _ in range(100)) >= 95


def test_wilson_interval():
    assert stats.wilson(0, 0) == (0.0, 1.0)
    lo, hi = stats.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = stats.wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-3)


# ----------------------------------------------------------------------------- bad input -> exit 2


CALIBRATION = "jax 2048x2048 float32 matmul, precision HIGHEST, best of 10"

def _baseline(**over):
    b = {
        "format": baseline.FORMAT, "machine_class": MC, "cpu": "x", "cpu_count": 2, "commit": "0" * 40,
        "cells": {"flax-cpu-s32-p1-b32": {"impl": "flax", "device": "cpu", "image_size": 32, "pool_stride": 1,
                                          "batch_size": 32, "step_s": 0.1, "peak_flops": 4e10,
                                          "calibration": CALIBRATION}},
    }
    b.update(over)
    return b


def _gate(tmp_path, *argv):
    return cli_main(["gate", "--baseline-dir", str(tmp_path), "--last", str(tmp_path / "last.json"), *argv])


def _last(tmp_path) -> dict:
    return json.loads((tmp_path / "last.json").read_text())


def test_no_pin_says_how_and_writes_the_verdict(tmp_path, capsys):
    assert _gate(tmp_path, "--base", "pin") == 2
    err = capsys.readouterr().err
    assert "pin.json does not exist" in err and "--base REV" in err and "--update-baseline" in err
    last = _last(tmp_path)
    assert last["exit_status"] == 2 and last["verdict"] == "error" and "pin.json does not exist" in last["reason"]


@pytest.mark.parametrize("text", ["{not json", json.dumps({"why": "no commit"}), json.dumps({"commit": ""})])
def test_corrupt_pin(tmp_path, capsys, text):
    (tmp_path / "pin.json").write_text(text)
    assert _gate(tmp_path) == 2
    assert "corrupt pin file" in capsys.readouterr().err


def _fake_ab(monkeypatch, records):
    seen = {}

    def run_ab(args, commit, reference, gcells, say):
        seen.update(commit=commit, reference=reference, cells=[gc.key for gc in gcells])
        return records

    monkeypatch.setattr(ab, "run_ab", run_ab)
    return seen


def _ok(impl="flax", **over):
    return {**baseline.describe(_cell(impl)), "key": f"{impl}-cpu-s32-p1-b32", "status": "ok", "regressed": False,
            "ratio": 1.0, **over}


def test_no_per_machine_file_is_a_note_not_an_error(tmp_path, monkeypatch, capsys):
    """Only the commit is needed: the A/B pairs run on this machine, both sides."""
    head = worktree.git("rev-parse", "HEAD")
    (tmp_path / "pin.json").write_text(json.dumps({"commit": head, "why": "test"}))
    seen = _fake_ab(monkeypatch, [_ok()])
    assert _gate(tmp_path, "--impls", "flax") == 0
    out = capsys.readouterr().out
    assert f"no reference figures for this machine class ({MC})" in out and "information only" in out
    assert seen == {"commit": head, "reference": None,
                    "cells": ["flax-cpu-s32-p1-b32-compile", "flax-cpu-s32-p1-b32", "flax-cpu-s32-p2-b32"]}
    last = _last(tmp_path)
    assert last["verdict"] == "pass" and last["base"]["commit"] == head and "pinned in pin.json (test)" in \
        last["base"]["chosen_by"] and last["reference_file"] is None and MC in last["reference_note"]


def test_baseline_from_another_machine_class(tmp_path, capsys):
    """An explicitly named reference file must fit this machine (a missing default one is only a note)."""
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
    assert _last(tmp_path)["exit_status"] == 2 and "pytorch" in _last(tmp_path)["reason"]


@pytest.mark.parametrize("argv, says", [
    (["--samples", "3"], "--samples: '3' is out of range; pass an integer 12..10000"),
    (["--samples", "many"], "--samples: 'many' is not an integer"),
    (["--process-pairs", "0"], "--process-pairs"), (["--compile-samples", "7"], "--compile-samples"),
    (["--trials", "0"], "--trials"), (["--compile-margin", "2"], "--compile-margin"),
    (["--alpha", "0"], "--alpha: '0' is out of range; pass a number > 0 and <= 0.5"),
    (["--alpha", "nan"], "--alpha: 'nan' is out of range"),
    (["--margin", "-0.1"], "--margin"), (["--budget-s", "0"], "--budget-s"), (["--block-s", "x"], "--block-s"),
    (["--nice", "40"], "--nice"), (["--seed", "-1"], "--seed"), (["--results-threshold", "-1"], "--results-threshold"),
])
def test_bad_option_values_exit_2_naming_the_option(tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit) as e:
        _gate(tmp_path, *argv)
    assert e.value.code == 2
    assert f"xfbench gate: error: argument {says}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- --results mode


def _results(tmp_path, step_s, peak, method=None):
    run = {"benchmarks": [{"fullname": "x", "stats": {"ops": 1.0}, "extra_info": {
        "kind": "step", "status": "ok", "impl": "flax", "device": "cpu", "device_kind": "cpu", "image_size": 32,
        "pool_stride": 1, "batch_size": 32, "step_s_median": step_s, "peak_flops": peak,
        "matmul_rate_method": method or CALIBRATION}}]}
    path = tmp_path / "output.json"
    path.write_text(json.dumps(run))
    return path


def test_results_mode_flags_a_normalised_regression(tmp_path, capsys):
    (tmp_path / f"{MC}.json").write_text(json.dumps(_baseline()))
    # the machine ran 2x slower (calibration halved) and the step took 3x: normalised 1.5
    out = _results(tmp_path, 0.3, 2e10)
    assert _gate(tmp_path, "--impls", "flax", "--results", str(out), "--json", str(tmp_path / "v.json")) == 1
    text = capsys.readouterr().out
    assert "flax step time (cpu, 32px, pool stride 1, batch 32)" in text and "1.500x" in text
    last = json.loads((tmp_path / "last.json").read_text())
    assert last["regressions"][0]["impl"] == "flax" and last["regressions"][0]["ratio"] == pytest.approx(1.5)
    assert json.loads((tmp_path / "v.json").read_text()) == last


def test_results_mode_passes_a_slower_machine(tmp_path):
    (tmp_path / f"{MC}.json").write_text(json.dumps(_baseline()))
    out = _results(tmp_path, 0.2, 2e10)  # 2x slower step, but the machine is 2x slower too
    assert _gate(tmp_path, "--impls", "flax", "--results", str(out)) == 0


def test_results_mode_normalises_only_by_one_calibration_method(tmp_path):
    """A reference rated by another matmul (size, framework or precision) is not the same figure: the
    step is compared raw, and the rule says so."""
    (tmp_path / f"{MC}.json").write_text(json.dumps(_baseline()))
    out = _results(tmp_path, 0.2, 2e10, method="tensorflow 1024x1024 float32 matmul, best of 5")
    assert _gate(tmp_path, "--impls", "flax", "--results", str(out)) == 1  # raw: 2x the reference step
    (cell,) = _last(tmp_path)["cells"]
    assert cell["ratio"] == pytest.approx(2.0) and "same method on both sides" in cell["rule"]


def test_results_mode_with_no_comparable_cell_exits_2_naming_what_is_missing(tmp_path, capsys):
    out = _results(tmp_path, 0.1, 4e10)
    # no reference figures at all: nothing to compare a single run with
    assert _gate(tmp_path, "--impls", "flax", "--results", str(out)) == 2
    assert "--results compares with this machine class's reference figures" in capsys.readouterr().err
    # reference figures, but not for this cell
    ref = _baseline()
    ref["cells"] = {"keras-tf-cpu-s32-p1-b32": {**ref["cells"]["flax-cpu-s32-p1-b32"], "impl": "keras-tf"}}
    (tmp_path / f"{MC}.json").write_text(json.dumps(ref))
    assert _gate(tmp_path, "--impls", "flax", "--results", str(out)) == 2
    err = capsys.readouterr().err
    assert "no comparable cell" in err and "flax-cpu-s32-p1-b32" in err and "keras-tf-cpu-s32-p1-b32" in err
    assert _last(tmp_path)["verdict"] == "error" and "flax-cpu-s32-p1-b32" in _last(tmp_path)["reason"]
    # the run holds no step cell of the implementations asked for
    assert _gate(tmp_path, "--impls", "keras-jax", "--results", str(out)) == 2
    assert "no ok step cell of keras-jax" in capsys.readouterr().err


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


def _git(repo, *a):
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *a], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def _history(tmp_path, monkeypatch):
    """main: one -- two; feature (HEAD) branches off at two; origin/main is main."""
    repo = _repo(tmp_path / "repo" if (tmp_path / "repo").mkdir() is None else None)
    _git(repo, "branch", "-M", "main")
    one = _git(repo, "rev-parse", "HEAD")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "two")
    two = _git(repo, "rev-parse", "HEAD")
    _git(repo, "update-ref", "refs/remotes/origin/main", two)
    _git(repo, "switch", "-q", "-c", "feature")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "three")
    _git(repo, "switch", "-q", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "main moves on")  # local main ahead of origin/main
    _git(repo, "switch", "-q", "feature")
    monkeypatch.setattr(worktree, "ROOT", repo)
    pin = tmp_path / "pin.json"
    pin.write_text(json.dumps({"commit": one, "why": "the first"}))
    return one, two, pin


def test_base_auto_on_a_pull_request_is_the_merge_base_with_the_target(tmp_path, monkeypatch):
    one, two, pin = _history(tmp_path, monkeypatch)
    commit, how = baseline.choose_base("auto", pin, {"GITHUB_BASE_REF": "main", "XF_GATE_BEFORE": one})
    assert commit == two and "merge base of HEAD with origin/main" in how
    with pytest.raises(GateInputError, match="no merge base with origin/nowhere.*fetch-depth: 0"):
        baseline.choose_base("auto", pin, {"GITHUB_BASE_REF": "nowhere"})


def test_base_auto_on_a_push_is_the_commit_before_it_else_the_pin(tmp_path, monkeypatch):
    one, two, pin = _history(tmp_path, monkeypatch)
    before = "--base auto: the commit before the push (XF_GATE_BEFORE)"
    assert baseline.choose_base("auto", pin, {"XF_GATE_BEFORE": two}) == (two, before)
    for env, why in [({"XF_GATE_BEFORE": "0" * 40}, "a new branch's first push"),
                     ({"XF_GATE_BEFORE": "ab" * 20}, "is not in this clone (a force push?)"),
                     ({"XF_GATE_BEFORE": ""}, "neither a pull request nor a push"), ({}, "neither")]:
        commit, how = baseline.choose_base("auto", pin, env)
        assert commit == one and why in how and "the commit pinned in pin.json (the first)" in how, how
    assert baseline.choose_base(None, pin, {"XF_GATE_BEFORE": two})[0] == one  # the default is the pin
    assert baseline.choose_base("pin", pin, {})[0] == one
    assert baseline.choose_base("HEAD~1", pin, {}) == (two, "--base HEAD~1")
    pin.write_text(json.dumps({"commit": "f" * 40}))
    with pytest.raises(GateInputError, match="pinned in .*pin.json.* is not in this repository"):
        baseline.choose_base(None, pin, {})
    # no pin file (a fresh clone with benchmarks/baselines/ emptied): the default is auto, whose last resort is HEAD
    head, missing = _git(worktree.ROOT, "rev-parse", "HEAD"), tmp_path / "none.json"
    commit, how = baseline.choose_base(None, missing, {})
    assert commit == head and "no pin (none.json), so HEAD" in how
    assert baseline.choose_base(None, missing, {"XF_GATE_BEFORE": two})[0] == two
    with pytest.raises(GateInputError, match="none.json does not exist"):
        baseline.choose_base("pin", missing, {})


def test_changed_impls_follow_the_packages_and_the_harness(tmp_path, monkeypatch):
    monkeypatch.setattr(worktree, "changed_paths", lambda commit: paths)
    paths = ["README.md", "benchmarks/gate/cli.py", "tests/test_gate.py"]
    assert baseline.changed_impls("x") == []
    paths = ["impl_keras/impl.py"]
    assert baseline.changed_impls("x") == [n for n in registry.NAMES if n.startswith("keras")]
    paths = ["benchmarks/worker.py"]
    assert baseline.changed_impls("x") == list(registry.NAMES)
    head = worktree.git("rev-parse", "HEAD")
    (tmp_path / "pin.json").write_text(json.dumps({"commit": head, "why": "test"}))
    paths = ["docs.md"]
    assert _gate(tmp_path, "--impls", "changed") == 0
    assert _last(tmp_path)["verdict"] == "pass" and _last(tmp_path)["changed_impls"] == []


@pytest.mark.parametrize("argv, says", [
    (["--strides", "3"], "--strides: '3'; choose from 1, 2"), (["--metrics", "speed"], "--metrics: 'speed'"),
    (["--self-test", "--slowdown", "fast"], "--slowdown: 'fast'"), (["--self-test", "--slowdown", "-1"], "--slowdown"),
    (["--alpha", "0.001"], "--compile-samples 8 can never reach --alpha 0.001"),
])
def test_bad_lists_exit_2_naming_the_option(tmp_path, capsys, argv, says):
    assert _gate(tmp_path, *argv) == 2
    assert says in capsys.readouterr().err and _last(tmp_path)["exit_status"] == 2


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


def _fit(cell, base=OLD, head=NEW, metric="step"):
    from benchmarks.inputs import payload

    return ab.fit_cell(ab.GateCell(cell, metric), payload(cell, {"source": "synthetic"}), {"base": base, "head": head},
                       COMMIT)


def test_cells_keep_the_committed_baseline_keys():
    keys = [gc.key for gc in ab.gate_cells(["flax", "keras-tf"])]
    assert keys == ["flax-cpu-s32-p1-b32-compile", "flax-cpu-s32-p1-b32", "flax-cpu-s32-p2-b32",
                    "keras-tf-cpu-s32-p1-b32-compile", "keras-tf-cpu-s32-p1-b32", "keras-tf-cpu-s32-p2-b32"]
    assert [gc.key for gc in ab.gate_cells(["flax"], (2,), ("step",))] == ["flax-cpu-s32-p2-b32"]
    for path in (ROOT / "benchmarks" / "baselines").glob("*-*c-*.json"):  # optional files: any there are
        _check_keys(json.loads(path.read_text()))


def _check_keys(committed: dict) -> None:
    for name, fig in committed["cells"].items():
        cell = Cell("step", fig["impl"], fig["device"], ModelSpec(fig["image_size"], pool_stride=fig["pool_stride"]),
                    TrainConfig(batch_size=fig["batch_size"]))
        assert baseline.key(cell) == name and {**baseline.describe(cell), "step_s": fig["step_s"]}.items() <= fig.items()


def test_an_implementation_the_baseline_lacks_is_skipped():
    with pytest.raises(CellSkipped, match="^baseline commit 248ca9b lacks flax-nnx$"):
        _fit(_cell("flax-nnx"))


def test_compile_time_needs_a_baseline_that_can_sample_it():
    with pytest.raises(CellSkipped, match="^baseline commit 248ca9b speaks worker protocol 0, which cannot sample"):
        _fit(_cell(), metric="compile")
    three = dataclasses.replace(NEW, version=ab.COMPILE_PROTOCOL)
    assert _fit(_cell(), base=three, head=three, metric="compile")["base"]["impl"] == "flax"
    assert "protocol 1" in _fit(_cell(), base=three, head=NEW, metric="compile")["head"]


def test_each_side_gets_only_the_fields_its_tree_knows():
    old = dataclasses.replace(OLD, spec_fields=tuple(f for f in SPEC_FIELDS if f != "channels"))
    fitted = _fit(_cell(), base=old)
    assert "channels" not in fitted["base"]["spec"] and fitted["head"]["spec"]["channels"] == 3
    # a field the baseline does not know, set away from its default: the baseline would measure another model
    with pytest.raises(CellSkipped, match="^baseline commit 248ca9b: .*spec field.*channels"):
        _fit(_cell(channels=1), base=old)


def test_a_head_that_cannot_run_the_cell_fails_it_and_a_mute_baseline_is_no_regression():
    said = []
    args = argparse.Namespace(process_pairs=3, seed=0, budget_s=10.0)
    run = ab.Measurement(args, None, ROOTS, {}, time.monotonic(), said.append)
    gc = ab.GateCell(_cell("flax-nnx"), "step")
    rec = run.implementation([gc], {gc: _fit(gc.cell, base=NEW, head=OLD)}, 0)[gc]
    assert rec["status"] == "failed" and rec["regressed"] and rec["key"] == "flax-nnx-cpu-s32-p1-b32" and said
    assert "lacks flax-nnx" in rec["reason"]
    gc = ab.GateCell(_cell(), "step")
    rec = run.implementation([gc], {gc: _fit(gc.cell, base="cannot say what it speaks: boom")}, 0)[gc]
    assert rec["status"] == "failed" and not rec["regressed"] and "boom" in rec["reason"]


def test_skipped_cells_pass_and_are_recorded_but_only_skipped_cells_cannot_vouch(tmp_path, capsys):
    skipped = {**baseline.describe(_cell("flax-nnx")), "key": "flax-nnx-cpu-s32-p1-b32", "status": "skipped",
               "regressed": False, "reason": "baseline commit 248ca9b lacks flax-nnx"}
    args = argparse.Namespace(alpha=0.01, margin=0.03, last=str(tmp_path / "last.json"), json=None)
    assert cli.report(args, [_ok(), skipped], {"mode": "ab"}, 1.0) == 0
    assert "no regression in 1 cell(s); 1 skipped (flax-nnx-cpu-s32-p1-b32)" in capsys.readouterr().out
    last = _last(tmp_path)
    assert last["cells"][1]["status"] == "skipped" and last["regressions"] == [] and last["verdict"] == "pass"
    assert cli.report(args, [skipped], {"mode": "ab"}, 1.0) == 2
    assert "no comparable cell: flax-nnx-cpu-s32-p1-b32: baseline commit 248ca9b lacks flax-nnx" in capsys.readouterr().err
    assert _last(tmp_path)["verdict"] == "cannot vouch"


# ----------------------------------------------------------------------------- workers failing (fake workers)


class FakeWorker:
    """Answers as a worker does; `fail` (an exception) is raised from the `fail_at`-th timed sample on.
    `inject` slows its virtual steps down by the fraction asked. Seeds count from 0 in each test."""

    made = 0

    def __init__(self, fail=None, fail_at=1):
        self.fail, self.fail_at, self.samples, self.timeout_s, self.closed = fail, fail_at, 0, 300.0, False
        self.slow, self.rng, self.last_step_s = 1.0, np.random.default_rng(FakeWorker.made), None
        FakeWorker.made += 1

    def _sample(self):
        self.samples += 1
        if self.fail is not None and self.samples >= self.fail_at:
            raise self.fail

    def call(self, op, **kw):
        if op == "warmup":
            return [0.002] * kw["n"]
        if op == "steps":  # no sleep: its time per step is virtual, 2 ms +- 1%, deterministic
            self._sample()
            self.last_step_s = 0.002 * self.slow * (1 + 0.01 * self.rng.standard_normal())
            return 0.69
        if op == "recompile":
            self._sample()
            return {"compile_s": [0.01], "compiles": 1}
        if op == "inject":
            self.slow = 1 + kw["fraction"]
            return {"step_s": 0.002, "work_units_per_step": 1, "injected_fraction": kw["fraction"]}
        raise AssertionError(op)

    def close(self):
        self.closed = True


@pytest.fixture
def fake_gate(tmp_path, monkeypatch):
    """`xfbench gate` with the worktree and the workers faked; returns run(fakes, capsys, impls, *argv) ->
    (exit, last.json, out, err, made), fakes: {(impl, side): FakeWorker | str (a start failure)}."""
    monkeypatch.setattr(worktree, "worktree", lambda commit: contextlib.nullcontext(tmp_path))
    monkeypatch.setattr(worktree, "changed_paths", lambda commit: [])
    monkeypatch.setattr(FakeWorker, "made", 0)
    three = dataclasses.replace(NEW, version=ab.COMPILE_PROTOCOL)
    monkeypatch.setattr(ab.Workers, "speaks", lambda self, roots: {"base": three, "head": three})
    monkeypatch.setattr(ab.Workers, "payload", lambda self, c: payload(c, {"source": "synthetic"}))
    monkeypatch.setattr(ab.Workers, "calibration", lambda self, device: 1e10)
    monkeypatch.setattr(ab.Workers, "calibration_method", lambda self, device: CALIBRATION)

    def timed_block(side, k):  # the real call (failures and all), the fake's virtual time
        ab.call(side, "steps", n=k)
        return side.worker.last_step_s

    monkeypatch.setattr(ab, "timed_block", timed_block)

    def go(fakes, capsys, impls="flax,keras-jax", *argv):
        made = {}

        def ready(self, side, cell, fitted):
            fake = fakes.get((cell.impl, side.name), FakeWorker())
            if isinstance(fake, str):
                raise ab.SideFailed(side.name, fake)
            side.worker, side.step_est = fake, 0.002
            made[(cell.impl, side.name)] = fake

        monkeypatch.setattr(ab.Workers, "ready", ready)
        rc = _gate(tmp_path, "--impls", impls, "--base", "HEAD", "--samples", "12", "--compile-samples", "8",
                   "--no-nice", "--seed", "1", "--block-s", "0.002", "--json", str(tmp_path / "v.json"), *argv)
        out = capsys.readouterr()
        last = _last(tmp_path)
        assert json.loads((tmp_path / "v.json").read_text()) == last
        return rc, last, out.out, out.err, made

    return go


def test_a_base_worker_crashing_while_timed_means_the_gate_cannot_vouch(fake_gate, capsys):
    died = WorkerError("worker died (killed by SIGSEGV); log tail:\n...")
    rc, last, _, err, made = fake_gate({("flax", "base"): FakeWorker(died, fail_at=10)}, capsys)
    assert rc == 2 and last["exit_status"] == 2 and last["verdict"] == "cannot vouch"
    cells_ = {c["key"]: c for c in last["cells"]}
    assert cells_["flax-cpu-s32-p1-b32-compile"]["status"] == "ok"  # its 8 samples went through
    step = cells_["flax-cpu-s32-p1-b32"]
    assert step["status"] == "failed" and step["side"] == "base" and not step["regressed"]
    assert "while measured: worker died (killed by SIGSEGV)" in step["reason"]
    assert cells_["flax-cpu-s32-p2-b32"]["status"] == "failed"  # the rest of that pair's cells
    assert all(cells_[k]["status"] == "ok" for k in cells_ if k.startswith("keras-jax"))  # the others went on
    assert "the gate cannot vouch" in err and "flax step time (cpu, 32px, pool stride 1, batch 32): base: " in err
    assert "SIGSEGV" in last["reason"] and "Traceback" not in err
    assert all(w.closed for w in made.values()) and made[("flax", "base")].timeout_s == 60.0  # --hang-s


def test_a_head_worker_hanging_while_timed_is_a_regression_with_its_reason(fake_gate, capsys):
    hung = WorkerError("worker hung: no answer within 60 s (killed)")
    rc, last, out, *_ = fake_gate({("keras-jax", "head"): FakeWorker(hung, fail_at=2)}, capsys)
    assert rc == 1 and last["verdict"] == "regressed"
    assert {r["impl"] for r in last["regressions"]} == {"keras-jax"} and len(last["regressions"]) == 3
    assert "worker hung" in last["regressions"][0]["reason"] and "worker hung" in last["reason"]
    assert "REGRESSED in 3 cell(s)" in out and "keras-jax compile time (cpu" in out and "worker hung" in out


def test_nonsense_from_a_worker_and_start_failures_name_the_side(fake_gate, capsys):
    rc, last, *_ = fake_gate({("flax", "head"): FakeWorker(ValueError("bad reply"), fail_at=1)}, capsys, "flax")
    assert rc == 1 and "head: while measured: ValueError: bad reply" in last["cells"][0]["reason"]
    rc, last, *_ = fake_gate({("flax", "base"): "cannot say what it speaks: boom"}, capsys, "flax")
    assert rc == 2 and last["cells"][0]["reason"] == "base: while starting: cannot say what it speaks: boom"
    rc, last, *_ = fake_gate({("flax", "head"): "worker died (exit 1)"}, capsys, "flax")
    assert rc == 1 and last["cells"][0]["reason"] == "head: while starting: worker died (exit 1)"


def test_fake_workers_with_nothing_wrong_pass(fake_gate, capsys):
    rc, last, out, *_ = fake_gate({}, capsys)
    assert rc == 0 and last["verdict"] == "pass" and "no regression in 6 cell(s)" in out
    assert all(c["process_pairs"] == 1 for c in last["cells"])  # a quiet first pair ends each cell


def test_a_slow_head_must_show_in_every_process_pair(fake_gate, capsys):
    class Slow(FakeWorker):
        def call(self, op, **kw):
            self.slow = 1.5
            return super().call(op, **kw)

    rc, last, out, *_ = fake_gate({("flax", "head"): Slow()}, capsys, "flax", "--metrics", "step", "--strides", "1")
    cell = last["cells"][0]
    assert rc == 1 and cell["regressed"] and cell["process_pairs"] == 3 and len(cell["pairs"]) == 3
    assert all(p["regressed"] for p in cell["pairs"]) and cell["ratio"] > 1.2 and cell["ratio_ci95"][0] > 1.0
    assert "all 3 process pairs showed a regression" in cell["stopped"] and "REGRESSED in 1 cell(s)" in out


def test_self_test_reports_false_alarms_and_power(fake_gate, capsys):
    rc, last, out, *_ = fake_gate({}, capsys, "flax", "--self-test", "--trials", "3", "--slowdown", "0.01,1.0")
    summary = last["self_test"]
    assert rc == 0 and last["mode"] == "self-test" and summary["trials"] == 3
    assert summary["aa"]["false_alarms"] == 0 and summary["aa"]["rate_ci95"][1] < 0.6
    big = summary["slowdowns"][1]
    assert big["requested"] == 1.0 and big["caught"] == 3 and big["cell_power"] == 1.0
    assert big["cell_power_lower95"] == pytest.approx(stats.wilson(3, 3)[0] ** 3)
    assert summary["smallest_caught_95"] == 1.0 and summary["smallest_caught_95_measured"] == pytest.approx(2.0, rel=0.05)
    assert summary["slowdowns"][0]["caught"] == 0  # +1% is inside the 3% margin
    assert "self-test of flax-cpu-s32-p1-b32: 3 fresh process pair(s)" in out and "+100%" in out


# ----------------------------------------------------------------------------- the history file for github-action-benchmark


def test_history_keeps_only_ok_per_step_step_entries(tmp_path):
    def bench(name, **info):
        return {"fullname": name, "stats": {"ops": 10.0, "mean": 0.1}, "extra_info": info}

    run = {"machine_info": {"x": 1}, "commit_info": {"id": "abc"}, "benchmarks": [
        bench("step-ok", kind="step", status="ok", stats_unit="step"),
        bench("step-per-call", kind="step", status="ok"),  # an older run: per timed call, not per step
        bench("step-failed", kind="step", status="failed", stats_unit="step"),
        bench("accuracy", kind="accuracy", status="ok"),
        bench("parity", kind="parity", status="ok"),
        {"fullname": "no-extra", "stats": {}},
    ]}
    src, dst = tmp_path / "output.json", tmp_path / "steps.json"
    src.write_text(json.dumps(run))
    assert history.main([str(src), str(dst)]) == 0
    kept = json.loads(dst.read_text())
    assert [b["fullname"] for b in kept["benchmarks"]] == ["step-ok"] and kept["commit_info"] == {"id": "abc"}
    assert kept["xfbench_history_filter"]["dropped"] == 5
    # nothing to keep, or not a pytest-benchmark file: exit 2 with the reason
    src.write_text(json.dumps({"benchmarks": run["benchmarks"][1:]}))
    assert history.main([str(src), str(dst)]) == 2
    src.write_text("[]")
    assert history.main([str(src), str(dst)]) == 2
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gate.history", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "github-action-benchmark" in proc.stdout


PIN_FILE = ROOT / "benchmarks" / "baselines" / "pin.json"


def test_the_committed_pin_names_a_full_commit_and_why():
    pin = baseline.load_pin(PIN_FILE)
    assert len(pin["commit"]) == 40 and int(pin["commit"], 16) >= 0 and pin["why"].strip()


@pytest.mark.skipif(not (ROOT / "impl_flax" / "nnx.py").exists(), reason="impl_flax/nnx.py is not written yet")
def test_gate_against_a_real_legacy_commit_with_no_per_machine_file(tmp_path, monkeypatch, capsys):
    """As in a fresh clone on another machine class: a baseline commit alone is enough for a verdict.
    248ca9b predates the worker's `hello` (protocol 0) and flax-nnx: the gate reads what it speaks
    from its source, measures flax and skips flax-nnx."""
    commit = COMMIT
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, check=False).returncode:
        pytest.skip(f"baseline commit {commit[:12]} is not in this clone")
    monkeypatch.setenv("XFBENCH_HOME", str(tmp_path / "home"))
    shutil.copy(PIN_FILE, tmp_path / "pin.json")  # and no <machine class>.json beside it
    rc = cli_main(["gate", "--impls", "flax,flax-nnx", "--base", commit, "--samples", "12", "--budget-s", "40",
                   "--strides", "1", "--process-pairs", "1", "--no-calibrate", "--baseline-dir", str(tmp_path),
                   "--last", str(tmp_path / "last.json")])
    out = capsys.readouterr().out
    last = _last(tmp_path)
    by_impl = {c["impl"]: c for c in last["cells"] if c["metric"] == "step"}
    compile_ = [c for c in last["cells"] if c["metric"] == "compile"]
    assert [c["status"] for c in compile_] == ["skipped", "skipped"] and "protocol 0" in compile_[0]["reason"]
    assert last["base"]["commit"] == commit and last["reference_file"] is None
    assert f"no reference figures for this machine class ({MC})" in out
    assert by_impl["flax-nnx"]["status"] == "skipped" and f"{commit[:7]} lacks flax-nnx" in by_impl["flax-nnx"]["reason"]
    assert f"flax-nnx-cpu-s32-p1-b32: skipped -- baseline commit {commit[:7]} lacks flax-nnx" in out
    assert by_impl["flax"]["status"] == "ok" and by_impl["flax"]["pairs"][0]["samples"] >= 12
    assert rc == (1 if by_impl["flax"]["regressed"] else 0) == last["exit_status"]


def test_the_gate_gates_the_origin_unless_asked_and_never_an_installed_packages_workload(monkeypatch):
    from benchmarks import workloads

    assert {gc.cell.workload for gc in ab.gate_cells(["flax"])} == {"origin"}
    both = ab.gate_cells(["flax"], workload_names=cli.parse_workloads("all"))
    assert [gc.key for gc in both if gc.cell.workload == "resnet"] == ["resnet.flax-cpu-s32-b32-compile",
                                                                         "resnet.flax-cpu-s32-b32"]
    foreign = workloads.Workload("mlp", "an MLP", None, None, {}, source="xfbench-example-mlp 0.1")
    monkeypatch.setattr(workloads, "all_workloads", lambda: {**workloads.BUILT_IN, "mlp": foreign})
    with pytest.raises(GateInputError, match="mlp come.*installed package"):
        cli.parse_workloads("mlp")
