"""Names -> implementations. Adding a framework is one folder plus one line here.

Each entry is loaded lazily: Keras fixes its backend at import, so a process
may import only the entries of one backend (the harness uses one process per
cell). `load(name)` sets KERAS_BACKEND before importing.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:Class"
    backend: str  # "jax" or "tensorflow"
    keras_backend: str | None = None  # set for Keras entries: KERAS_BACKEND to export


def _entries(*entries: Entry) -> dict[str, Entry]:
    table: dict[str, Entry] = {}
    for e in entries:
        if e.name in table:
            raise ValueError(f"duplicate implementation name {e.name!r}")
        table[e.name] = e
    return table


REGISTRY = _entries(
    Entry("flax", "impl_flax.impl:FlaxImpl", backend="jax"),
    Entry("keras-jax", "impl_keras.impl:KerasImpl", backend="jax", keras_backend="jax"),
    Entry("keras-tf", "impl_keras.impl:KerasImpl", backend="tensorflow", keras_backend="tensorflow"),
)

NAMES = tuple(REGISTRY)


def entry(name: str) -> Entry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown implementation {name!r}; choose one of: {', '.join(NAMES)}"
        ) from None


def load(name: str) -> type["Impl"]:
    """Import and return the implementation class (sets KERAS_BACKEND first)."""
    e = entry(name)
    if e.keras_backend:
        current = os.environ.get("KERAS_BACKEND")
        import sys

        if "keras" in sys.modules and current not in (None, e.keras_backend):
            raise RuntimeError(
                f"{name} needs KERAS_BACKEND={e.keras_backend}, but keras is already "
                f"imported with {current}; run it in its own process"
            )
        os.environ["KERAS_BACKEND"] = e.keras_backend
    module, cls = e.target.split(":")
    return getattr(importlib.import_module(module), cls)


class Impl(Protocol):
    """What the harness drives. Batches are dicts {"image": uint8 NHWC, "label": int32 N}.

    Weights are framework-neutral: numpy arrays keyed "conv1/kernel",
    "conv1/bias", "conv2/...", "dense1/...", "dense2/..."; kernels in
    HWIO (conv) and (in, out) (dense) layout, as Flax and Keras both store them.
    """

    name: str
    backend: str

    def __init__(self, name: str, spec: Any, train: Any, seed: int, device: str = "cpu") -> None: ...  # device: "cpu" or "gpu"
    def num_params(self) -> int: ...
    def get_weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...  # resets optimizer
    def device_name(self) -> str: ...  # "cpu" or the accelerator model
    def to_device(self, batch: dict) -> Any: ...  # place once; reused across timed steps
    def train_step(self, device_batch: Any) -> Any: ...  # one optimizer step; returns loss, unsynced
    def sync(self, value: Any) -> float: ...  # block until ready; returns it as a float
    def evaluate(self, batches) -> dict: ...  # {"loss", "accuracy"} over host batches
    def logits(self, images: np.ndarray) -> np.ndarray: ...
    def flops_per_step(self, device_batch: Any) -> float | None: ...  # XLA cost analysis
    def trace_count(self) -> int | None: ...  # non-JAX backends: step traces so far
