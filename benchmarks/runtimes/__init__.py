"""Framework runtime helpers, one module per runtime, with the same functions (the matmul rate: JAX only).

Any implementation, and the worker, may use them: device lookup and naming,
XLA cost analysis, memory figures, compile-event listeners (and, in JAX's, the
matmul rate: the one calibration every run uses, `worker._Cell.matmul_rate`).
`for_backend(backend)` imports only the one asked for (a TensorFlow worker never
imports JAX, and the other way round).
"""

from __future__ import annotations

import importlib
import os
import resource

MODULES = {"jax": "benchmarks.runtimes.jax_runtime", "tensorflow": "benchmarks.runtimes.tf_runtime"}


def for_backend(backend: str):
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
