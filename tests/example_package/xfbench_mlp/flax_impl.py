"""The MLP in Flax Linen, on xfbench's implementation contract (through its JAX adapter base)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util
from flax.training import train_state

from impl_flax.adapter import JaxImplementation
from impl_flax.common import cross_entropy, make_optimizer, scale_images


class MLP(nn.Module):
    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden, kernel_init=nn.initializers.he_normal(), name="dense1")(x))
        return nn.Dense(self.num_classes, name="dense2")(x)


def _loss(apply_fn, params, batch):
    return jnp.mean(cross_entropy(apply_fn({"params": params}, scale_images(batch["image"])), batch["label"]))


@functools.partial(jax.jit, donate_argnums=0)
def _train_step(state, batch):
    loss, grads = jax.value_and_grad(functools.partial(_loss, state.apply_fn))(state.params, batch)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def _predict(state, images):
    return state.apply_fn({"params": state.params}, scale_images(images))


class FlaxMLPImpl(JaxImplementation):
    timed_region = "one jitted train step (forward, backward, Adam update; the loss out) on a batch on the device"

    def __init__(self, name, spec, train, seed, device="cpu"):
        if train.precision != "float32":
            raise ValueError(f"the mlp workload runs in float32 only, not {train.precision}")
        super().__init__(name, spec, train, seed, device)
        self.model = MLP(spec.hidden, spec.num_classes)
        x = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels), jnp.float32)
        with jax.default_device(self.device):
            self._set_params(self.model.init(jax.random.PRNGKey(seed), x)["params"])

    def _set_params(self, params) -> None:
        state = train_state.TrainState.create(apply_fn=self.model.apply, params=params, tx=make_optimizer(self.train_cfg))
        self.state = jax.device_put(state, self.device)

    def num_params(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.state.params)))

    def _get_weights(self):
        return traverse_util.flatten_dict(jax.device_get(self.state.params), sep="/")

    def _set_weights(self, weights) -> None:
        self._set_params(traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in weights.items()}, sep="/"))

    def train_step(self, device_batch):
        self.state, loss = _train_step(self.state, device_batch)
        return loss

    def phases(self, device_batch):
        loss = functools.partial(_loss, self.state.apply_fn)
        forward, forward_backward = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
        update = jax.jit(lambda state, grads: state.apply_gradients(grads=grads))
        grads = jax.tree.map(jnp.ones_like, self.state.params)
        return {"forward": lambda: forward(self.state.params, device_batch),
                "forward_backward": lambda: forward_backward(self.state.params, device_batch),
                "update": lambda: update(self.state, grads)}

    def _logits_on_device(self, images):
        return _predict(self.state, images)

    def _lower_step(self, device_batch):
        return _train_step.lower(self.state, device_batch)
