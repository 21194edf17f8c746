"""`FlaxImpl`: the Flax Linen implementation on the contract the harness drives."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from benchmarks.spec import ModelSpec, TrainConfig
from impl_flax import train as T
from impl_flax.adapter import JaxImplementation


class FlaxImpl(JaxImplementation):
    timed_region = ("one jitted train step (forward, backward, Adam update; the loss out, no accuracy) on a batch "
                    "already on the device; the donated state is replaced by the new one, nothing else per step")

    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        super().__init__(name, spec, train, seed, device)
        with jax.default_device(self.device):
            params = T.init_params(spec, seed)
        self._set_params(params)

    def _set_params(self, params: Any) -> None:
        params = jax.device_put(params, self.device)
        with jax.default_device(self.device):
            state = T.create_train_state(self.spec, self.train_cfg, params)
        self.state = jax.device_put(state, self.device)

    # -- weights ----------------------------------------------------------------
    def num_params(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.state.params)))

    def _get_weights(self) -> dict[str, np.ndarray]:
        return traverse_util.flatten_dict(jax.device_get(self.state.params), sep="/")

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        params = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in weights.items()}, sep="/")
        self._set_params(params)  # fresh optimizer state

    # -- steps ------------------------------------------------------------------
    def train_step(self, device_batch: dict) -> jax.Array:
        self.state, metrics = T.train_step(self.state, device_batch)
        return metrics["loss"]

    def _logits_on_device(self, images: jax.Array) -> jax.Array:
        return T.predict_step(self.state, images)

    def _lower_step(self, device_batch: dict) -> jax.stages.Lowered:
        return T.train_step.lower(self.state, device_batch)

    def phases(self, device_batch: dict) -> dict:
        forward, forward_backward, update = T.phase_functions()
        grads = jax.tree.map(jnp.ones_like, self.state.params)  # fixed gradients for the update alone
        return {"forward": lambda: forward(self.state, device_batch),
                "forward_backward": lambda: forward_backward(self.state, device_batch),
                "update": lambda: update(self.state, grads)}
