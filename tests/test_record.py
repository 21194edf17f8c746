"""The result format (`benchmarks.record`): names, the typed figures, old files, and who reads it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import record
from benchmarks.record import CellRecord, Info

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = sorted((ROOT / "reports" / "published").glob("*.json"))


def test_cell_ids_are_spelled_as_the_history_knows_them():
    assert record.cell_id("step", "flax", "cpu", 64, "p2", 32) == "step-flax-cpu-s64-p2-b32"
    assert record.cell_id("step", "flax", "gpu", 300, "p2", 256, "bf16", 2) == "step-flax-gpu-s300-p2-b256-bf16-r2"
    assert record.cell_id("accuracy", record.series_id("keras-tf"), "cpu", 64, "p1", 32, protocol="resplit",
                          augment=True) == "acc-keras-tf-cpu-s64-p1-b32-resplit-aug"
    assert record.cell_id("step", "flax", "cpu", 64, "", 32, workload="resnet") == "resnet.step-flax-cpu-s64-b32"
    assert record.parity_id(64, "p1") == "parity-s64-p1"
    assert record.parity_id(64, "", workload="resnet") == "resnet.parity-s64"
    assert record.series_id("flax", aa_copy=True) == "flax~aa"
    assert record.series_label("flax", aa_copy=True) == "flax (A/A copy)"
    assert record.series_label("flax", tuned=True) == "flax (tuned)"
    assert record.select_expression("step-flax~aa-cpu-s32-p2-b16") == "step-flax and aa-cpu-s32-p2-b16"


@pytest.mark.parametrize("path", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_published_results_write_only_declared_fields_and_read_typed(path):
    for b in json.loads(path.read_text())["benchmarks"]:
        Info.check(b["extra_info"])
        cell = CellRecord.from_benchmark_entry(b, str(path), machine="m")
        assert cell.kind in record.KINDS and cell.status == "ok"
        if cell.kind == "step":
            assert isinstance(cell.info.batch_size, int) and cell.info.step_s_median > 0
            assert cell.step_s == cell.info.step_s_median


def test_an_undeclared_field_is_refused_when_written():
    with pytest.raises(ValueError, match="not declared.*step_ms"):
        record.run_file("step-x", "step", "ok", None, None, {"impl": "flax", "step_ms": 1.0})


def test_old_and_malformed_records_still_load():
    # an early pytest-benchmark entry: no kind, status or stats_unit; stats per timed call of 4 steps
    old = {"name": "test_step[step-flax-cpu-s32-p1-b32]", "stats": {"median": 0.4},
           "extra_info": {"impl": "flax", "steps_per_call": 4, "batch_size": "32", "compile_s": float("nan"),
                          "aa_copy": 1, "someone_elses_key": [1]}}
    cell = CellRecord.from_benchmark_entry(old, "old.json", machine="m")
    assert (cell.kind, cell.status, cell.precision, cell.replicate) == ("step", "ok", "float32", 0)
    assert cell.step_s == pytest.approx(0.1)  # per call ÷ steps per call
    assert cell.info.batch_size is None and cell.info.compile_s is None and not cell.aa_copy
    run = CellRecord.from_run_file({"status": "PASSED", "extra_info": {"kind": "accuracy"}}, "f.json", "acc-x",
                                   machine="m")
    assert (run.id, run.kind, run.status) == ("acc-x", "accuracy", "ok")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return out | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_the_record_module_is_standard_library_only():
    assert all(m.split(".")[0] in sys.stdlib_module_names | {"__future__"} for m in _imports(ROOT / "benchmarks" / "record.py"))


def test_the_report_and_the_gate_read_cells_only_through_the_record_module():
    """No reader indexes a cell's extra_info by string key, and neither imports the pytest session."""
    for path in [*(ROOT / "reports").glob("*.py"), *(ROOT / "benchmarks" / "gate").glob("*.py")]:
        text = path.read_text()
        assert ".extra.get(" not in text and ".extra[" not in text and ".x(" not in text, path.name
        assert "benchmarks.harness" not in _imports(path), path.name
    code = ("import sys, benchmarks.gate.cli, reports.build; "
            "print(sorted(m for m in ('pytest', 'benchmarks.harness', 'benchmarks.plugin', 'jax', 'tensorflow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
