"""What a cell's worker is set up with, shared by the pytest session and the gate (neither pytest
nor a framework is imported here): the setup payload, the session's data choice, the code and
environment that key cached figures, and where runs and caches live."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import registry, workloads
from benchmarks.profiles import Cell
from benchmarks.workloads import ORIGIN

# the checkout; not pytest's rootdir, which a path-valued option before plugins load can move
ROOT = Path(__file__).resolve().parents[1]
# harness code whose change invalidates cached figures, beside every implementation's package
CODE_PATHS = ("shared_data", "benchmarks/runtimes", "benchmarks/spec.py", "benchmarks/contract.py",
              "benchmarks/training.py", "benchmarks/worker.py", "benchmarks/registry.py", "benchmarks/weights.py",
              "benchmarks/harness.py", "benchmarks/test_matrix.py", "benchmarks/profiles.py",
              "benchmarks/inputs.py", "benchmarks/record.py", "benchmarks/workloads.py")
# The tuned series (`--xf-tuned IMPL`, JAX implementations on the CPU): what closed keras-tf's lead on
# this 2-core CPU. jaxlib gets a fresh scratch buffer from glibc every step (90 MiB at 64 px, pool
# stride 2), above glibc's mmap threshold, so each step faults every page of it in again; these glibc
# tunables keep it on the heap. The XLA flag keeps convolutions out of YNNPACK, whose weight gradients
# were about 3x slower than XLA's own here. Evidence and commands: README, "Why keras-tf leads on the CPU".
TUNED_ENV = {
    "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296:glibc.malloc.arena_max=1",
    "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
}
# environment that changes what the frameworks compile or how they run it: part of every reuse key
COMPILE_ENV = ("XLA_FLAGS", "TF_XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION",
               "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
               "TF_NUM_INTEROP_THREADS", "GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF")


def code_fingerprint() -> str:
    """sha256 of every implementation's package (from the registry), the harness code above, and each
    installed package's workload: its distribution's name and version, and its code."""
    h = hashlib.sha256()
    roots = [ROOT / p for p in (*registry.code_packages(), *CODE_PATHS)]
    files = sorted({f for r in roots for f in ([r] if r.is_file() else r.rglob("*.py"))})
    for path in files:
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    for w in workloads.installed().values():
        h.update(w.source.encode())
        for path in sorted({f for r in map(Path, w.package_code) for f in ([r] if r.is_file() else r.rglob("*.py"))}):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@dataclass
class DataChoice:
    """How every process of this session loads the data (source resolved once, here)."""

    source: str | None  # as asked; None: chosen per image size, on the first load of that size
    data_dir: str | None
    cache_dir: str
    summaries: dict = field(default_factory=dict)
    resolved: dict = field(default_factory=dict)  # image size -> the automatic choice's summary

    def source_for(self, image_size: int) -> str | None:
        return self.source or self.resolved.get(image_size, {}).get("source")

    def kwargs(self, image_size: int, protocol: str, source: str | None = None) -> dict:
        own = source in (None, self.source)  # the step cells may use another source (synthetic)
        return {
            "source": self.source_for(image_size) if own else source,
            "data_dir": self.data_dir if own else None,
            "image_size": image_size,
            "protocol": protocol,
            "seed": 0,
            "cache_dir": self.cache_dir,
        }

    def prepare(self, image_size: int, protocol: str, log, source: str | None = None) -> dict:
        """Build or reuse the cache in this process, so workers only read it."""
        from shared_data import load_dataset

        kw = self.kwargs(image_size, protocol, source)
        key = json.dumps(kw, sort_keys=True)
        if key not in self.summaries:
            summary = portable(load_dataset(log=log, **kw).summary())
            if self.source is None and source is None:
                # every later load of this size names the source; the summaries keep why it was chosen
                first = self.resolved.setdefault(image_size, summary)
                summary.update({k: first[k] for k in ("source_reason", "notice")})
            self.summaries[key] = summary
        return self.summaries[key]


def portable(summary: dict) -> dict:
    """A data summary without this machine's absolute paths (results get published):
    the image folder and the cache file relative to the checkout."""
    out = dict(summary)
    for key in ("source_detail", "cache_path"):
        value = out.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            out[key] = os.path.relpath(value, ROOT)
            if isinstance(out.get("source_reason"), str):
                out["source_reason"] = out["source_reason"].replace(value, out[key])
    return out


def home(path: str | None = None) -> Path:
    """Where runs and caches live: `path`, else $XFBENCH_HOME, else .xfbench in the checkout."""
    h = Path(path or os.environ.get("XFBENCH_HOME", ".xfbench"))
    return h if h.is_absolute() else ROOT / h


def payload(cell: Cell, data: dict, seed: int = 0) -> dict:
    """What a worker's `setup` gets for one cell; `data` is `load_dataset`'s keyword arguments. The origin's
    payload names no workload: it stays what older workers (the gate's baseline) accept."""
    out = {"impl": cell.impl, "device": cell.device, "spec": cell.spec.to_dict(), "train": cell.train.to_dict(),
           "seed": seed, "data": data}
    if cell.workload != ORIGIN:
        out["workload"] = cell.workload
    return out


def data_choice(config) -> DataChoice:
    """The data of a pytest session, from its options."""
    return DataChoice(source=config.getoption("xf_source"), data_dir=config.getoption("xf_data_dir"),
                      cache_dir=str(home(config.getoption("xf_home")) / "cache" / "data"))
