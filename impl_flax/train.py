"""Train state and the two compiled functions of the Flax Linen implementation.

`train_step(state, batch) -> (state, metrics)` and `predict_step(state, images)`
are pure and jitted once, at module level; `train_step` donates the state it is
given, as Keras's compiled train function does, so XLA may update it in place. Images arrive as uint8 and are
scaled by 1/255 inside the compiled step (as a multiplication by the float32
constant, which is what Keras's `Rescaling` layer does, so both see the same
floats).

The optimizer, the loss and the scaling come from `impl_flax.common`, shared with NNX.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state

from benchmarks.spec import ModelSpec, TrainConfig
from impl_flax.common import compute_dtype, cross_entropy, make_optimizer, scale_images
from impl_flax.model import CNN


def init_params(spec: ModelSpec, seed: int) -> Any:
    model = CNN(spec)
    x = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels), jnp.float32)
    return jax.jit(model.init)(jax.random.PRNGKey(seed), x)["params"]


def create_train_state(spec: ModelSpec, cfg: TrainConfig, params: Any) -> train_state.TrainState:
    return train_state.TrainState.create(apply_fn=CNN(spec, compute_dtype(cfg)).apply, params=params,
                                         tx=make_optimizer(cfg))


@functools.partial(jax.jit, donate_argnums=0)  # the old state is dead after the step, as in Keras
def train_step(state: train_state.TrainState, batch: dict) -> tuple[train_state.TrainState, dict]:
    images = scale_images(batch["image"])
    labels = batch["label"]

    def loss_fn(params):
        return jnp.mean(cross_entropy(state.apply_fn({"params": params}, images), labels))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    # the batch's loss only, as Keras's step tracks: no accuracy computed per step
    return state.apply_gradients(grads=grads), {"loss": loss}


def phase_functions():
    """The train step's phases as separate jitted functions (the step breakdown): the loss, the loss
    and its gradients, the update from given gradients (state not donated: nothing changes)."""

    def loss(params, state, batch):
        return jnp.mean(cross_entropy(state.apply_fn({"params": params}, scale_images(batch["image"])), batch["label"]))

    forward = jax.jit(lambda state, batch: loss(state.params, state, batch))
    forward_backward = jax.jit(lambda state, batch: jax.value_and_grad(loss)(state.params, state, batch))
    update = jax.jit(lambda state, grads: state.apply_gradients(grads=grads))
    return forward, forward_backward, update


@jax.jit
def predict_step(state: train_state.TrainState, images_BHWC: jax.Array) -> jax.Array:
    return state.apply_fn({"params": state.params}, scale_images(images_BHWC)).astype(jnp.float32)
