"""Checks what the rehearsed GPU run wrote (benchmarks/gpu_rehearsal.sh runs this in the image's venv):

    python -m benchmarks.gpu_rehearsal RESULT.json WHEELS_DIR MERGED.html

- flax, flax-nnx and keras-jax ran every cell ok; keras-tf was skipped, every cell, saying TensorFlow is
  missing; nothing else was skipped or failed;
- the workers imported the carried wheels' versions (keras, flax, optax), and the image's jax 0.11.2;
- the result merges into one report with the published CPU result.

Exits 1 with every problem found, one per line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.record import Info

RUNS = ("flax", "flax-nnx", "keras-jax")
SKIPPED = "keras-tf"
IMAGE_JAX = "0.11.2"


def carried_versions(wheels: Path) -> dict[str, str]:
    """name -> version of each carried wheel (file names: name-version-...whl)."""
    out = {}
    for whl in wheels.glob("*.whl"):
        name, version = whl.name.split("-")[:2]
        out[name.lower().replace("_", "-")] = version
    return out


def problems(result: dict, carried: dict[str, str]) -> list[str]:
    found = []
    ok = [e for e in (Info.read(b.get("extra_info")) for b in result.get("benchmarks", [])) if e.status == "ok"]
    not_ok = result.get("xfbench_cells_not_ok", [])
    skipped_impl = [c for c in not_ok if c["id"].split("-", 1)[1].startswith(SKIPPED + "-")]
    for impl in RUNS:
        kinds = {e.kind for e in ok if e.impl == impl}
        if not {"step", "accuracy"} <= kinds:
            found.append(f"{impl}: no ok {' and '.join(sorted({'step', 'accuracy'} - kinds))} cell")
    for c in not_ok:
        if c not in skipped_impl:
            found.append(f"{c['id']}: {c['status']}: {c['reason']}")
        elif c["status"] != "skipped" or "tensorflow" not in str(c["reason"]).lower():
            found.append(f"{c['id']}: should be skipped for want of TensorFlow, is {c['status']}: {c['reason']}")
    if not skipped_impl:
        found.append(f"{SKIPPED}: not listed as skipped")
    if any(e.impl == SKIPPED for e in ok):
        found.append(f"{SKIPPED}: ran, but the image has no TensorFlow")
    for e in (e for e in ok if e.kind == "step"):
        imported = e.imported_versions or {}
        for name in ("keras", "flax", "optax"):
            if name in imported and imported[name] != carried.get(name):
                found.append(f"{e.impl}: imported {name} {imported[name]}, the carried wheel is {carried.get(name)}")
        if imported.get("jax") != IMAGE_JAX:
            found.append(f"{e.impl}: imported jax {imported.get('jax')}, the image's is {IMAGE_JAX}")
    versions = result.get("machine_info", {}).get("xfbench", {}).get("versions", {})
    for name in ("keras", "flax", "optax"):
        if versions.get(name) != carried.get(name):
            found.append(f"recorded {name} version {versions.get(name)}, the carried wheel is {carried.get(name)}")
    return found


def merged(result_path: Path, out: Path) -> list[str]:
    """Build one page from the result and the published results; the rehearsal's run must be in it."""
    from reports.build import build_report
    from reports.loading import load

    model = load([result_path], include_published=True)
    sources = {str(c.measured_in) for c in model.cells}
    if len(sources) < 2:
        return [f"the merged report holds {len(sources)} run(s), not the rehearsal's beside the published ones"]
    build_report([result_path], out)
    return []


def main(argv: list[str]) -> int:
    result_path, wheels, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    result = json.loads(result_path.read_text())
    found = problems(result, carried_versions(wheels)) + merged(result_path, out)
    for p in found:
        print(f"gpu_rehearsal: {p}", file=sys.stderr)
    if not found:
        print(f"gpu_rehearsal: {', '.join(RUNS)} ran ok with the carried wheels; {SKIPPED} skipped (no TensorFlow); "
              f"merged report {out}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
