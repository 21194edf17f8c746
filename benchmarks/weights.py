"""The reference implementation's initial weights as a file, for paired training.

Made once per (spec, seed, code) in a separate CPU-only process, so that
neither the pytest process nor a TensorFlow worker imports the reference's
framework; workers read the .npz (about 150 MB at 64x64: too much for the pipe).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.store import write_atomic


def reference_weights_file(workload: str, spec, seed: int, cache_dir: Path, code_key: str) -> Path:
    """The cached file of the reference's weights for `workload`'s `spec`; made on first use."""
    key = hashlib.sha256(json.dumps([workload, spec.to_dict(), seed, code_key], sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"reference-{workload}-s{spec.image_size}-{spec.variant}-seed{seed}-{key}.npz"
    if not path.exists():
        cmd = [sys.executable, "-m", "benchmarks.weights", "--workload", workload, "--spec", json.dumps(spec.to_dict()),
               "--seed", str(seed), "--out", str(path)]
        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"could not make the reference weights for {path.name}:\n{out.stderr[-3000:]}")
    return path


def main(argv: list[str]) -> int:
    from benchmarks import registry, workloads

    p = argparse.ArgumentParser(prog="python -m benchmarks.weights")
    p.add_argument("--workload", default=workloads.ORIGIN)
    p.add_argument("--spec", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    weights = registry.reference_weights(workloads.get(a.workload).spec(json.loads(a.spec)), a.seed, a.workload)
    buf = io.BytesIO()
    np.savez(buf, **weights)
    write_atomic(Path(a.out), buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
