"""`FlaxImpl`: the adapter the harness drives for the Flax implementation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from benchmarks.spec import ModelSpec, TrainConfig
from impl_flax import train as T

LAYERS = ("conv1", "conv2", "dense1", "dense2")


def jax_device(device: str) -> jax.Device:
    if device == "cpu":
        return jax.devices("cpu")[0]
    if device == "gpu":
        try:
            return jax.devices("gpu")[0]
        except RuntimeError as e:
            raise RuntimeError(f"device='gpu' requested, but JAX sees no GPU ({e})") from None
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def jax_device_name(dev: jax.Device) -> str:
    return "cpu" if dev.platform == "cpu" else dev.device_kind


def cost_analysis_flops(compiled) -> float | None:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):  # older jax returned one dict per device
        ca = ca[0] if ca else None
    if not ca or "flops" not in ca:
        return None
    return float(ca["flops"])


class FlaxImpl:
    backend = "jax"

    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        self.name = name
        self.spec = spec
        self.train_cfg = train
        self.seed = seed
        self.device = jax_device(device)
        with jax.default_device(self.device):
            params = T.init_params(spec, seed)
        self._set_params(params)

    # -- weights ----------------------------------------------------------------
    def _set_params(self, params: Any) -> None:
        params = jax.device_put(params, self.device)
        with jax.default_device(self.device):
            state = T.create_train_state(self.spec, self.train_cfg, params)
        self.state = jax.device_put(state, self.device)

    def num_params(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.state.params)))

    def get_weights(self) -> dict[str, np.ndarray]:
        flat = traverse_util.flatten_dict(jax.device_get(self.state.params), sep="/")
        return {k: np.array(v) for k, v in flat.items()}  # writable copies

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        current = self.get_weights()
        if set(weights) != set(current):
            raise ValueError(f"weight keys differ: expected {sorted(current)}, got {sorted(weights)}")
        for k, v in weights.items():
            if np.shape(v) != current[k].shape:
                raise ValueError(f"{k}: expected shape {current[k].shape}, got {np.shape(v)}")
        params = traverse_util.unflatten_dict(
            {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in weights.items()}, sep="/"
        )
        self._set_params(params)  # fresh optimizer state

    # -- devices ----------------------------------------------------------------
    def device_name(self) -> str:
        return jax_device_name(self.device)

    def to_device(self, batch: dict) -> dict:
        return {
            "image": jax.device_put(np.asarray(batch["image"], np.uint8), self.device),
            "label": jax.device_put(np.asarray(batch["label"], np.int32), self.device),
        }

    # -- steps ------------------------------------------------------------------
    def train_step(self, device_batch: dict) -> jax.Array:
        self.state, metrics = T.train_step(self.state, device_batch)
        return metrics["loss"]

    def sync(self, value: Any) -> float:
        return float(jax.block_until_ready(value))

    def evaluate(self, batches) -> dict:
        from benchmarks.training import padded

        totals = None
        size = None
        for batch in batches:
            size = size or len(batch["label"])
            dev = jax.device_put(padded(batch, size), self.device)
            out = T.eval_step(self.state, dev)
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        if totals is None:
            raise ValueError("evaluate() got no batches")
        totals = jax.device_get(totals)
        n = float(totals["count"])
        return {"loss": float(totals["loss_sum"]) / n, "accuracy": float(totals["correct"]) / n, "count": int(n)}

    def logits(self, images: np.ndarray) -> np.ndarray:
        x = jax.device_put(np.asarray(images, np.uint8), self.device)
        return np.asarray(T.predict_step(self.state, x))

    def flops_per_step(self, device_batch: dict) -> float | None:
        return cost_analysis_flops(T.train_step.lower(self.state, device_batch).compile())

    def trace_count(self) -> int | None:
        return None  # JAX compiles are counted by the harness through jax.monitoring
