"""The JAX `Runtime` (devices, memory, compile events) and JAX's extras: cost analysis, dropping compiled
functions, the matmul rate."""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.runtimes import process_peak_rss, process_threads

# jax.monitoring duration events of one compile, by the name the results use
COMPILE_EVENTS = {
    "trace_s": "/jax/core/compile/jaxpr_trace_duration",
    "lower_s": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "compile_only_s": "/jax/core/compile/backend_compile_duration",
}


def device(kind: str) -> jax.Device:
    """The first JAX device of kind "cpu" or "gpu"; a clear error when there is none."""
    if kind == "cpu":
        return jax.devices("cpu")[0]
    if kind == "gpu":
        try:
            return jax.devices("gpu")[0]
        except RuntimeError as e:
            raise RuntimeError(f"device='gpu' requested, but JAX sees no GPU ({e})") from None
    raise ValueError(f"device must be 'cpu' or 'gpu', got {kind!r}")


def device_name(dev: jax.Device) -> str:
    """"cpu", or the GPU's model name (`device_kind`)."""
    return "cpu" if dev.platform == "cpu" else dev.device_kind


def put_batch(batch: dict, dev: jax.Device) -> dict:
    """A host batch {"image": uint8 NHWC, "label": int32} placed on the device, once."""
    return {"image": jax.device_put(np.asarray(batch["image"], np.uint8), dev),
            "label": jax.device_put(np.asarray(batch["label"], np.int32), dev)}


def to_float(value: jax.Array) -> float:
    """Block until a scalar is computed; return it as a float."""
    return float(jax.block_until_ready(value))


def start_up(kind: str) -> None:
    """Initialise the runtime on the device before anything is timed: one throwaway compiled function
    running a convolution and a matmul there (on a GPU that loads cuDNN and cuBLAS), so that start-up
    falls on no implementation's first step."""
    x = jax.device_put(jnp.ones((1, 8, 8, 3), jnp.float32), device(kind))
    w = jax.device_put(jnp.ones((3, 3, 3, 4), jnp.float32), device(kind))

    def conv_matmul(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(1, -1) @ jnp.ones((y.size, 2), jnp.float32)

    jax.block_until_ready(jax.jit(conv_matmul)(x, w))


def platform_version(kind: str) -> str:
    """What the runtime runs on: "cpu", or the CUDA (or ROCm) version its GPU client reports."""
    return str(device(kind).client.platform_version)


def block(tree: Any) -> None:
    """Wait until everything in `tree` is computed."""
    jax.block_until_ready(tree)


def forget_compiled() -> None:
    """Drop every jitted function's compiled and traced forms: the next call compiles cold."""
    jax.clear_caches()


def cost_analysis_flops(compiled: jax.stages.Compiled) -> float | None:
    """FLOPs from XLA's cost analysis of a compiled function, or None where XLA gives none."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):  # older jax returned one dict per device
        ca = ca[0] if ca else None
    if not ca or "flops" not in ca:
        return None
    return float(ca["flops"])


def matmul_rate(kind: str, n: int, repeats: int, precision: str = "highest", dtype: str = "float32") -> float:
    """Best n x n matmul rate (FLOP/s) on the device, of `dtype` at a `jax.lax.Precision` ("highest": full
    float32; "default": what JAX picks, TF32 on NVIDIA GPUs since Ampere)."""
    a = jax.device_put(jnp.ones((n, n), dtype), device(kind))
    mm = jax.jit(lambda x: jnp.matmul(x, x, precision=jax.lax.Precision[precision.upper()]))
    mm(a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def threads() -> dict:
    """XLA's CPU client runs one intra-op thread per core it may use (no setting exposes a count)."""
    return {**process_threads(), "framework": f"jax {jax.__version__}",
            "intra_op": "XLA CPU: one per usable core", "inter_op": "XLA CPU: async dispatch thread"}


def memory_limit_bytes(kind: str) -> int | None:
    """The device's memory limit, where JAX reports one (GPUs); None on the CPU."""
    if kind == "cpu":
        return None
    return (device(kind).memory_stats() or {}).get("bytes_limit")


def reset_peak_memory(kind: str) -> bool:
    """JAX has no call to reset a device's peak: its peak stays the process's lifetime one."""
    return False


def peak_memory(kind: str) -> dict:
    """The peak (labelled with what it spans) and, on a GPU, the bytes in use now."""
    if kind != "cpu":
        stats = device(kind).memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return {"peak_memory_bytes": stats["peak_bytes_in_use"], "device_bytes_in_use": stats.get("bytes_in_use"),
                    "memory_source": "device peak_bytes_in_use over the process's lifetime (compile scratch included)"}
    return process_peak_rss()


class CompileEvents:
    """Sums jax.monitoring's compile durations and counts backend compiles, from `listen()` on."""

    def __init__(self) -> None:
        self.durations: dict[str, float] = {}
        self.compiles = 0

    def listen(self) -> None:
        names = {v: k for k, v in COMPILE_EVENTS.items()}

        def on_duration(event: str, duration_secs: float, **kwargs: str | int) -> None:
            if event in names:
                self.durations[names[event]] = self.durations.get(names[event], 0.0) + duration_secs
            if event == COMPILE_EVENTS["compile_only_s"]:
                self.compiles += 1

        jax.monitoring.register_event_duration_secs_listener(on_duration)

    def split(self) -> dict[str, float | None]:
        """trace / lower / compile seconds since the last `clear()`."""
        return {k: self.durations.get(k) for k in COMPILE_EVENTS}

    def clear(self) -> None:
        self.durations.clear()
