"""What machine this is: versions, CPU, GPUs, XLA flags, and a class name for baselines."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata

# the harness's own, beside those of every registered implementation
HARNESS_PACKAGES = ("tensorflow-datasets", "pytest-benchmark")


def versions() -> dict[str, str | None]:
    from benchmarks import registry

    out = {}
    for name in (*registry.packages(), *HARNESS_PACKAGES):
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name.replace("-", "_")] = None
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_gpus(timeout_s: float = 120) -> list[str]:
    """GPU names JAX sees, from a throwaway process so this one never touches a GPU."""
    code = (
        "import json, jax\n"
        "try:\n    print(json.dumps([d.device_kind for d in jax.devices('gpu')]))\n"
        "except RuntimeError:\n    print('[]')\n"
    )
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        return []


def machine_class(gpus: list[str]) -> str:
    """Machines of one class share a step-time baseline: same architecture, core count and GPU.
    The CPU model is recorded beside it but left out: the gate's verdict is an A/B comparison
    on the machine at hand, so a 2-core CI box of another CPU model may use the same baseline."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpus[0].lower()).strip("-") if gpus else "nogpu"
    return f"{platform.machine()}-{os.cpu_count()}c-{gpu}"


def gpu_driver() -> str | None:
    """The NVIDIA driver version, where nvidia-smi answers."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def info(gpus: list[str]) -> dict:
    return {
        "versions": versions(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "gpu_driver": gpu_driver() if gpus else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "machine_class": machine_class(gpus),
    }
