"""What the Flax implementations (Linen and NNX) share: input scaling, loss, and Adam in two forms.

Adam comes in two forms (`TrainConfig.adam_form`):
- "keras": `keras_adam`, Keras's formulation -- epsilon is added to sqrt(v)
  *before* bias correction -- so every framework runs the same algorithm;
- "optax": `optax.adam`, epsilon added to sqrt(v_hat) *after* bias correction.
  It equals the Keras form with eps_optax = eps_keras / sqrt(1 - b2**t).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from benchmarks.spec import TrainConfig

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


def compute_dtype(cfg: TrainConfig) -> jnp.dtype:
    """What the layers compute in (`TrainConfig.precision`); parameters, loss and Adam stay float32."""
    return jnp.bfloat16 if cfg.precision == "bf16" else jnp.float32


def scale_images(images_BHWC: jax.Array) -> jax.Array:
    return images_BHWC.astype(jnp.float32) * jnp.float32(INV_255)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy from logits and integer labels, in float32 (as Keras's loss
    computes it whatever the layers computed in)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
