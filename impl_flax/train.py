"""Train state, optimizer, and the two compiled steps of the Flax implementation.

`train_step(state, batch) -> (state, metrics)` and `eval_step(params, batch)`
are pure and jitted once, at module level. Images arrive as uint8 and are
scaled by 1/255 inside the compiled step (as a multiplication by the float32
constant, which is what Keras's `Rescaling` layer does, so both see the same
floats).

Adam comes in two forms (`TrainConfig.adam_form`):
- "keras": `keras_adam`, Keras's formulation -- epsilon is added to sqrt(v)
  *before* bias correction -- so every framework runs the same algorithm;
- "optax": `optax.adam`, epsilon added to sqrt(v_hat) *after* bias correction.
  It equals the Keras form with eps_optax = eps_keras / sqrt(1 - b2**t).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from benchmarks.spec import ModelSpec, TrainConfig
from impl_flax.model import CNN

INV_255 = 1.0 / 255.0


class KerasAdamState(NamedTuple):
    count: jax.Array  # int32 step counter
    mu: optax.Updates
    nu: optax.Updates


def keras_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7):
    """Adam exactly as `keras.optimizers.Adam.update_step` computes it.

        m += (g - m) * (1 - b1);  v += (g^2 - v) * (1 - b2)
        alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)
        p -= m * alpha / (sqrt(v) + eps)
    """

    def init_fn(params):
        zeros = lambda p: jnp.zeros_like(p)
        return KerasAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(zeros, params),
            nu=jax.tree.map(zeros, params),
        )

    def update_fn(grads, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        lr = jnp.asarray(learning_rate, jnp.float32)
        b1_power = jnp.power(jnp.asarray(b1, jnp.float32), t)
        b2_power = jnp.power(jnp.asarray(b2, jnp.float32), t)
        alpha = lr * jnp.sqrt(1 - b2_power) / (1 - b1_power)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - b2), state.nu, grads)
        updates = jax.tree.map(lambda m, v: -((m * alpha) / (jnp.sqrt(v) + eps)), mu, nu)
        return updates, KerasAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    if cfg.adam_form == "keras":
        return keras_adam(cfg.learning_rate, cfg.b1, cfg.b2, cfg.eps)
    return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


def init_params(spec: ModelSpec, seed: int) -> Any:
    model = CNN(spec)
    x = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels), jnp.float32)
    return jax.jit(model.init)(jax.random.PRNGKey(seed), x)["params"]


def create_train_state(spec: ModelSpec, cfg: TrainConfig, params: Any) -> train_state.TrainState:
    return train_state.TrainState.create(apply_fn=CNN(spec).apply, params=params, tx=make_optimizer(cfg))


def scale_images(images_BHWC: jax.Array) -> jax.Array:
    return images_BHWC.astype(jnp.float32) * jnp.float32(INV_255)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy from logits and integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@jax.jit
def train_step(state: train_state.TrainState, batch: dict) -> tuple[train_state.TrainState, dict]:
    images = scale_images(batch["image"])
    labels = batch["label"]

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, images)
        return jnp.mean(cross_entropy(logits, labels)), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    return state, {"loss": loss, "accuracy": accuracy}


@jax.jit
def eval_step(state: train_state.TrainState, batch: dict) -> dict:
    """Sums over the examples whose `mask` is 1 (padding lets one shape serve every batch)."""
    logits = state.apply_fn({"params": state.params}, scale_images(batch["image"]))
    mask = batch["mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }


@jax.jit
def predict_step(state: train_state.TrainState, images_BHWC: jax.Array) -> jax.Array:
    return state.apply_fn({"params": state.params}, scale_images(images_BHWC))
