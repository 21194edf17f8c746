"""`JaxImplementation`: the contract's plumbing that every JAX adapter (Linen, NNX) shares."""

from __future__ import annotations

import abc
from typing import Any

import jax
import numpy as np

from benchmarks.contract import Implementation
from benchmarks.runtimes import jax_runtime
from benchmarks.spec import ModelSpec, TrainConfig


class JaxImplementation(Implementation):
    """An implementation on one JAX device (`self.device`): a subclass provides its model, weights, steps and
    phases, and the two hooks below that reach its compiled functions."""

    backend = "jax"

    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        super().__init__(name, spec, train, seed, device)
        self.device = jax_runtime.device(device)

    @abc.abstractmethod
    def _logits_on_device(self, images: jax.Array) -> jax.Array:
        """Logits of uint8 NHWC images already on the device, from the compiled predict function."""

    @abc.abstractmethod
    def _lower_step(self, device_batch: dict) -> jax.stages.Lowered:
        """The jitted train step lowered on the current state and `device_batch` (nothing runs)."""

    def device_name(self) -> str:
        return jax_runtime.device_name(self.device)

    def to_device(self, batch: dict) -> dict:
        return jax_runtime.put_batch(batch, self.device)

    def sync(self, value: Any) -> float:
        return jax_runtime.to_float(value)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._logits_on_device(jax.device_put(np.asarray(images, np.uint8), self.device)))

    def flops_per_step(self, device_batch: dict) -> float | None:
        return jax_runtime.cost_analysis_flops(self._lower_step(device_batch).compile())

    def trace_count(self) -> int | None:
        return None  # JAX compiles are counted through jax.monitoring

    def forget_compiled(self) -> None:
        jax_runtime.forget_compiled()
