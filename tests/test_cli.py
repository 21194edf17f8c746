"""Bad values on the command line: every xfbench subcommand refuses them the same way, before any work
(`xfbench CMD: error: argument --option: ...`, exit status 2, no traceback), and a missing or bad
explicit data source stops `pytest --benchmark-only` once, before any cell, as a usage error (exit 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import main

ROOT = Path(__file__).resolve().parents[1]

BAD = [
    ("parity", ["--image-size", "0"], "--image-size: '0' is out of range; pass an integer 8..1024"),
    ("parity", ["--image-size", "big"], "--image-size: 'big' is not an integer"),
    ("parity", ["--pool-stride", "3"], "--pool-stride: invalid choice: 3"),
    ("parity", ["--steps", "0"], "--steps: '0' is out of range; pass an integer 1..10000"),
    ("parity", ["--batch-size", "-4"], "--batch-size: '-4' is out of range"),
    ("parity", ["--seed", "-1"], "--seed: '-1' is out of range"),
    ("parity", ["--device", "tpu"], "--device: invalid choice: 'tpu'"),
    ("parity", ["--impls", "flax,pytorch"], "--impls: unknown implementation 'pytorch'"),
    ("parity", ["--impls", " , "], "--impls: no implementation named"),
    ("data", ["--image-size", "2000"], "--image-size: '2000' is out of range; pass an integer 8..1024"),
    ("data", ["--image-size", "7.5"], "--image-size: '7.5' is not an integer"),
    ("data", ["--seed", "x"], "--seed: 'x' is not an integer"),
    ("data", ["--source", "s3"], "--source: invalid choice: 's3'"),
    ("data", ["--protocol", "kfold"], "--protocol: invalid choice: 'kfold'"),
    ("report", ["/nonexistent/run"], "RESULTS: /nonexistent/run does not exist"),
    ("report", ["--history", "/nonexistent"], "--history: /nonexistent is not a folder"),
    ("report", ["-o", "/"], "-o/--output: / is a folder; pass the HTML file to write"),
    ("gate", ["--samples", "0"], "--samples: '0' is out of range; pass an integer 12..10000"),
    ("gate", ["--alpha", "1"], "--alpha: '1' is out of range; pass a number > 0 and <= 0.5"),
    ("gate", ["--margin", "x"], "--margin: 'x' is not a number"),
    ("gate", ["--budget-s", "-5"], "--budget-s: '-5' is out of range; pass a number > 0"),
    ("gate", ["--block-s", "0"], "--block-s: '0' is out of range"),
    ("gate", ["--nice", "-21"], "--nice: '-21' is out of range; pass an integer -20..19"),
    ("gate", ["--seed", "-1"], "--seed: '-1' is out of range; pass an integer >= 0"),
    ("gate", ["--results-threshold", "0"], "--results-threshold: '0' is out of range"),
]


@pytest.mark.parametrize("cmd, argv, says", BAD, ids=[f"{c}{'_'.join(a)}" for c, a, _ in BAD])
def test_a_bad_value_exits_2_naming_the_option(cmd, argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"xfbench {cmd}: error: argument {says}" in err, err
    assert "Traceback" not in err


def test_values_checked_when_the_command_runs_say_so_the_same_way(tmp_path, capsys):
    """What only running can tell (a folder's content, a registry name) is refused as clearly, exit 2."""
    assert main(["data", "--source", "folder", "--data-dir", str(tmp_path / "nope"),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    assert f"xfbench data: error: data folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert main(["gate", "--impls", "pytorch", "--last", str(tmp_path / "last.json")]) == 2
    assert "xfbench gate: --impls: unknown implementation 'pytorch'" in capsys.readouterr().err


def test_the_process_exits_2_without_a_traceback():
    """The reported bug: `xfbench parity --image-size 0` ended in a ValueError from spec.py."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "parity", "--image-size", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "xfbench parity: error: argument --image-size: '0' is out of range" in proc.stderr


# ----------------------------------------------------------------------------- pytest --benchmark-only


def _bench(tmp_path, *argv, env=None):
    env = {**os.environ, **(env or {})}
    env.pop("XFBENCH_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--benchmark-only", "-p", "no:cacheprovider", "--xf-profile", "quick",
         "--xf-devices", "cpu", f"--xf-home={tmp_path / 'home'}", f"--xf-report={tmp_path / 'index.html'}",
         f"--benchmark-storage={tmp_path / 'storage'}", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False)


@pytest.mark.parametrize("how", ["options", "env"])
def test_a_bad_explicit_data_source_stops_the_run_once_before_any_cell(tmp_path, how):
    if how == "options":
        proc = _bench(tmp_path, "--xf-source=folder", "--xf-data-dir=/nonexistent")
        says = "data folder /nonexistent does not exist"
    else:
        (tmp_path / "images" / "train").mkdir(parents=True)
        env = {"XFBENCH_DATA_DIR": str(tmp_path / "images")}
        proc = _bench(tmp_path, env=env)
        says = f"data folder {tmp_path / 'images'} has no validation/ folder"
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # pytest's usage error
    assert out.count(says) == 1 and out.count("DataError") == 0 and "Traceback" not in out, out
    assert "ERROR: xfbench: the data source cannot be used: " + says in out
    assert " passed" not in out and " error" not in out.replace("ERROR: xfbench", "")
    assert not (tmp_path / "home" / "runs").exists() and not (tmp_path / "index.html").exists()
