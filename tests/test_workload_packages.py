"""A workload from outside the repository: the example package (tests/example_package), installed
offline into a site folder the workers see, through parity, the contract tests, a step cell and the
report; its name, version and code in the reuse keys. No xfbench file names it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic_cache

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tests" / "example_package"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The package installed as a user would, offline, from a copy (the build leaves files beside its source)."""
    tmp = tmp_path_factory.mktemp("package")
    shutil.copytree(PACKAGE, tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    "--target", str(tmp / "site"), str(tmp / "src")], check=True, capture_output=True, timeout=300)
    return tmp / "site"


def run(site: Path | None, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site or ""), os.environ.get("PYTHONPATH")])))
    env.pop("KERAS_BACKEND", None)
    return subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_its_entry_point_registers_the_workload_and_parity_proves_it(site):
    proc = run(site, "-m", "benchmarks.cli", "parity", "--workload", "mlp", "--image-size", "16", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["ok"] and result["workload"] == "mlp" and set(result["impls"]) == {"flax", "keras-jax", "keras-tf"}
    assert {row["params"] for row in result["impls"].values()} == {16 * 16 * 3 * 64 + 64 + 64 * 2 + 2}
    missing = run(None, "-m", "benchmarks.cli", "parity", "--workload", "mlp")
    assert missing.returncode != 0 and "mlp" in missing.stderr  # without the package there is no such workload


def test_the_contract_tests_take_it_in(site):
    proc = run(site, "-m", "pytest", "tests/test_contract.py", "-q", "-p", "no:cacheprovider", "-k", "mlp", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    per_case = (ROOT / "tests" / "test_contract.py").read_text().count('@pytest.mark.parametrize("case"')
    assert f"{per_case * 3} passed" in proc.stdout, proc.stdout[-500:]  # every check, for its 3 implementations


def test_a_step_cell_and_the_report(site, tmp_path):
    synthetic_cache.seeded(tmp_path / "home" / "cache" / "data")
    proc = run(site, "-m", "pytest", "--benchmark-only", "-q", "-p", "no:cacheprovider", "--xf-profile=quick",
               "--xf-workloads=mlp", "--xf-impls=flax", "--xf-image-sizes=16", "--xf-batch-sizes=8",
               "--xf-source=synthetic", f"--xf-home={tmp_path / 'home'}", f"--xf-report={tmp_path / 'index.html'}",
               f"--benchmark-storage=file://{tmp_path / 'storage'}", f"--benchmark-json={tmp_path / 'out.json'}",
               "-k", "step")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (step,) = json.loads((tmp_path / "out.json").read_text())["benchmarks"]
    assert step["extra_info"]["workload"] == "mlp" and step["name"] == "test_step[mlp.step-flax-cpu-s16-b8]"
    assert step["extra_info"]["status"] == "ok" and step["extra_info"]["flops_per_step"] > 0
    html = (tmp_path / "index.html").read_text()
    assert 'id="workload-mlp"' in html and "mlp · " in html


def test_its_version_and_code_enter_the_reuse_keys(site):
    code = "from benchmarks.inputs import code_fingerprint; print(code_fingerprint())"
    without, installed = run(None, "-c", code).stdout, run(site, "-c", code).stdout
    (site / "xfbench_mlp" / "spec.py").write_text((site / "xfbench_mlp" / "spec.py").read_text() + "\n# changed\n")
    changed = run(site, "-c", code).stdout
    assert len({without, installed, changed}) == 3 and all(len(x.strip()) == 64 for x in (without, installed, changed))
