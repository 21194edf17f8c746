"""Framework runtime helpers: one module per runtime, each a `Runtime` (the protocol below).

Any implementation, and the worker, may use them: device lookup and naming,
memory figures, compile-event listeners and, in JAX's alone, XLA cost analysis,
dropping compiled functions and the matmul rate (the one calibration every run
uses, `worker._Cell.matmul_rate`). `for_backend(backend)` imports only the one
asked for (a TensorFlow worker never imports JAX, and the other way round).
"""

from __future__ import annotations

import importlib
import os
import resource
from typing import Any, Protocol

MODULES = {"jax": "benchmarks.runtimes.jax_runtime", "tensorflow": "benchmarks.runtimes.tf_runtime"}


class CompileEventLog(Protocol):
    """The runtime's compile events, from `listen()` on."""

    compiles: int  # backend compiles seen so far (0 where the runtime reports none)

    def listen(self) -> None:
        """Start receiving the runtime's compile events (once per process)."""

    def split(self) -> dict[str, float | None]:
        """Seconds spent in "trace_s", "lower_s" and "compile_only_s" since the last `clear()`; None
        where the runtime does not report that part."""

    def clear(self) -> None:
        """Start summing the durations afresh (the compile count goes on)."""


class Runtime(Protocol):
    """What the worker and the implementations use of a runtime; `kind` is "cpu" or "gpu", a device
    is the runtime's own handle (a `jax.Device`, a TensorFlow device string)."""

    def device(self, kind: str) -> Any:
        """The first device of that kind; a clear error when there is none."""

    def device_name(self, dev: Any) -> str:
        """"cpu", or the accelerator's model name."""

    def put_batch(self, batch: dict, dev: Any) -> dict:
        """A host batch {"image": uint8 NHWC, "label": int32} placed on the device, once."""

    def to_float(self, value: Any) -> float:
        """Block until a scalar is computed; return it as a float."""

    def start_up(self, kind: str) -> None:
        """Initialise the runtime on the device (a throwaway compiled convolution and matmul), untimed."""

    def platform_version(self, kind: str) -> str:
        """What the runtime runs on: "cpu", or the GPU's CUDA (or ROCm) version as the runtime reports it."""

    def block(self, tree: Any) -> None:
        """Wait until every output in `tree` (a nest of the runtime's arrays) is computed."""

    def threads(self) -> dict:
        """The process's CPU affinity and thread environment, with the framework's thread pools."""

    def memory_limit_bytes(self, kind: str) -> int | None:
        """The device's memory limit in bytes, where the runtime reports one; else None."""

    def reset_peak_memory(self, kind: str) -> bool:
        """Restart the device's peak-memory count where the runtime can; whether it did."""

    def peak_memory(self, kind: str) -> dict:
        """{"peak_memory_bytes", "memory_source"} (what the peak spans) and, on a GPU, "device_bytes_in_use"."""

    def CompileEvents(self) -> CompileEventLog:  # a class in each module
        """A new, not yet listening, log of the runtime's compile events."""


def for_backend(backend: str) -> Runtime:
    """The runtime module of "jax" or "tensorflow", imported now."""
    try:
        return importlib.import_module(MODULES[backend])
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(MODULES)}") from None


LIFETIME_RSS = "process lifetime peak RSS (imports, data and the compiler included)"


def process_peak_rss() -> dict:
    """The process's lifetime peak resident memory: framework, data and compiler included."""
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_source": LIFETIME_RSS}


# environment that decides how many threads a framework uses, recorded beside every cell
THREAD_ENV = ("OMP_NUM_THREADS", "XLA_FLAGS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
              "TF_ENABLE_ONEDNN_OPTS")


def process_threads() -> dict:
    """CPU affinity and the thread-deciding environment of this process."""
    return {"cpu_affinity": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
            **{k: os.environ.get(k) for k in THREAD_ENV}}
