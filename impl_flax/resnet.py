"""The ResNet workload (`ResNetSpec`) in Flax Linen, and `FlaxResNetImpl`, its adapter on the contract.

Modules are named by the framework-neutral keys' parts ("stem", "stage2", "block1", "conv1", "bn1", "proj",
"proj_bn", "head"), so the Linen "params" ("kernel", BatchNorm's "scale", "bias") and "batch_stats"
("mean", "var") flatten onto `ResNetSpec.weight_shapes()` one to one.

Convs: no bias, `padding="SAME"` (XLA's: a stride-2 conv on an even side pads 0 before, 1 after),
He-normal kernels (Flax's `he_normal`: truncated normal, fan-in, scale 2, the usual ResNet choice before
ReLUs); the head is `nn.Dense`'s default, LeCun-normal kernel and zero bias. BatchNorm: scale 1, bias 0,
running mean 0 and variance 1, momentum and epsilon from the spec, and `use_fast_variance=False`: Flax's
default (True) computes the batch variance as E[x^2] - E[x]^2, while Keras 3 (`jnp.var` on JAX,
`tf.nn.moments` on TensorFlow) computes the two-pass E[(x - E[x])^2], which is what False computes:
the running variances come out bit-identical to `keras.layers.BatchNormalization`'s on both backends
(with True, on inputs of mean 3 and deviation 0.05, they differ by ~2e-7 and the normalised outputs by ~1e-3).

The step mirrors `impl_flax.train`: jitted at module level, the state donated, uint8 images scaled inside.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.training import train_state

from benchmarks.spec import Conv, ResNetSpec, TrainConfig
from impl_flax.adapter import JaxImplementation
from impl_flax.common import cross_entropy, make_optimizer, scale_images

KERNEL_INIT = nn.initializers.he_normal()


# -- what the Linen and NNX networks share ----------------------------------------------
def check_precision(cfg: TrainConfig) -> None:
    if cfg.precision != "float32":
        raise ValueError(f"the resnet workload runs in float32 only, got precision={cfg.precision!r}")


def leaf(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def stages(spec: ResNetSpec) -> dict[str, tuple[tuple[str, tuple[Conv, ...]], ...]]:
    """Each stage's blocks, in order, with their convs: {"stage2": (("block1", (conv1, conv2, proj)), ...)}."""
    out: dict[str, dict[str, tuple[Conv, ...]]] = {}
    for c in spec.convs()[1:]:  # [0] is the stem
        stage, block, _ = c.name.split("/")
        blocks = out.setdefault(stage, {})
        blocks[block] = blocks.get(block, ()) + (c,)
    return {stage: tuple(blocks.items()) for stage, blocks in out.items()}


def unit_forward(convs: tuple[Conv, ...], conv_bn: Callable[[Conv, jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """The stem (conv, BatchNorm, ReLU) or a basic block (two of them, the second without ReLU, plus the
    shortcut -- a projection conv and BatchNorm where the spec lists one -- then ReLU); `conv_bn(c, x)` applies
    conv `c` and its BatchNorm."""
    by_name = {leaf(c.name): c for c in convs}
    if "conv" in by_name:
        return jax.nn.relu(conv_bn(by_name["conv"], x))
    y = conv_bn(by_name["conv2"], jax.nn.relu(conv_bn(by_name["conv1"], x)))
    return jax.nn.relu(y + (conv_bn(by_name["proj"], x) if "proj" in by_name else x))


def global_average_pool(x_BHWC: jax.Array) -> jax.Array:
    return jnp.mean(x_BHWC, axis=(1, 2))


# -- the Linen network --------------------------------------------------------------------
class Unit(nn.Module):
    """The stem or one basic block; `train`: batch statistics (updating the running ones) or running ones."""
    spec: ResNetSpec
    convs: tuple[Conv, ...]

    @nn.compact
    def __call__(self, x, train: bool):
        def conv_bn(c: Conv, x):
            x = nn.Conv(c.cout, (c.kernel, c.kernel), strides=c.stride, padding="SAME", use_bias=False,
                        kernel_init=KERNEL_INIT, name=leaf(c.name))(x)
            return nn.BatchNorm(use_running_average=not train, momentum=self.spec.bn_momentum,
                                epsilon=self.spec.bn_epsilon, use_fast_variance=False, name=leaf(c.bn))(x)

        return unit_forward(self.convs, conv_bn, x)


class Stage(nn.Module):
    spec: ResNetSpec
    blocks: tuple[tuple[str, tuple[Conv, ...]], ...]

    @nn.compact
    def __call__(self, x, train: bool):
        for name, convs in self.blocks:
            x = Unit(self.spec, convs, name=name)(x, train)
        return x


class ResNet(nn.Module):
    spec: ResNetSpec = ResNetSpec()

    @nn.compact
    def __call__(self, x_BHWC, train: bool):
        """Float images in [0, 1], NHWC -> logits (N, num_classes)."""
        x = Unit(self.spec, self.spec.convs()[:1], name="stem")(x_BHWC, train)
        for name, blocks in stages(self.spec).items():
            x = Stage(self.spec, blocks, name=name)(x, train)
        return nn.Dense(self.spec.num_classes, name="head")(global_average_pool(x))


# -- train state and compiled functions ----------------------------------------------------
class TrainState(train_state.TrainState):
    batch_stats: Any  # BatchNorm's running statistics: replaced by each step, not by the optimizer


def _loss(params, state: TrainState, batch: dict):
    """The training-mode loss and the updated running statistics."""
    logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                     scale_images(batch["image"]), train=True, mutable=["batch_stats"])
    return jnp.mean(cross_entropy(logits, batch["label"])), updates["batch_stats"]


@functools.partial(jax.jit, donate_argnums=0)  # the old state is dead after the step, as in Keras
def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    (loss, batch_stats), grads = jax.value_and_grad(_loss, has_aux=True)(state.params, state, batch)
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), {"loss": loss}  # no accuracy


@jax.jit
def predict_step(state: TrainState, images_BHWC: jax.Array) -> jax.Array:
    return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, scale_images(images_BHWC),
                          train=False)


def phase_functions():
    """The step's phases as separate jitted functions: the loss (with the running statistics it updates), the
    loss and its gradients, the update from given gradients (state not donated: nothing changes)."""
    forward = jax.jit(lambda state, batch: _loss(state.params, state, batch))
    forward_backward = jax.jit(lambda state, batch: jax.value_and_grad(_loss, has_aux=True)(state.params, state, batch))
    update = jax.jit(lambda state, grads: state.apply_gradients(grads=grads))
    return forward, forward_backward, update


class FlaxResNetImpl(JaxImplementation):
    timed_region = ("one jitted train step (forward in training mode, backward, Adam update of the parameters, "
                    "BatchNorm's running statistics replaced; the loss out, no accuracy) on a batch already on the "
                    "device; the donated state is replaced by the new one, nothing else per step")

    def __init__(self, name: str, spec: ResNetSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        super().__init__(name, spec, train, seed, device)
        check_precision(train)
        self._model = ResNet(spec)  # one module and one optimizer: every state after `set_weights` has the
        self._tx = make_optimizer(train)  # same static fields, so the compiled step is not traced again
        with jax.default_device(self.device):
            x = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels), jnp.float32)
            variables = jax.jit(functools.partial(self._model.init, train=False))(jax.random.PRNGKey(seed), x)
        self._set_variables(variables["params"], variables["batch_stats"])

    def _set_variables(self, params: Any, batch_stats: Any) -> None:
        params, batch_stats = jax.device_put((params, batch_stats), self.device)
        with jax.default_device(self.device):
            state = TrainState.create(apply_fn=self._model.apply, params=params, tx=self._tx,
                                      batch_stats=batch_stats)
        self.state = jax.device_put(state, self.device)

    # -- weights ----------------------------------------------------------------
    def num_params(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.state.params)))

    def num_state(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.state.batch_stats)))

    def _get_weights(self) -> dict[str, np.ndarray]:
        params, batch_stats = jax.device_get((self.state.params, self.state.batch_stats))
        return {**traverse_util.flatten_dict(params, sep="/"), **traverse_util.flatten_dict(batch_stats, sep="/")}

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        def tree(state: bool):
            return traverse_util.unflatten_dict(
                {k: jnp.asarray(v) for k, v in weights.items() if self.spec.is_state(k) == state}, sep="/")

        self._set_variables(tree(False), tree(True))  # fresh optimizer state

    # -- steps ------------------------------------------------------------------
    def train_step(self, device_batch: dict) -> jax.Array:
        self.state, metrics = train_step(self.state, device_batch)
        return metrics["loss"]

    def _logits_on_device(self, images: jax.Array) -> jax.Array:
        return predict_step(self.state, images)

    def _lower_step(self, device_batch: dict) -> jax.stages.Lowered:
        return train_step.lower(self.state, device_batch)

    def phases(self, device_batch: dict) -> dict:
        forward, forward_backward, update = phase_functions()
        grads = jax.tree.map(jnp.ones_like, self.state.params)  # fixed gradients for the update alone
        return {"forward": lambda: forward(self.state, device_batch),
                "forward_backward": lambda: forward_backward(self.state, device_batch),
                "update": lambda: update(self.state, grads)}
