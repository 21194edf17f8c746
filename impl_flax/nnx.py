"""The origin CNN in Flax NNX, and `FlaxNNXImpl`, its adapter on the contract the harness drives.

The model is an `nnx.Module` built eagerly from a `ModelSpec`, layer for layer the
Linen `CNN`: `nnx.Conv` pads SAME with LeCun-normal kernels and zero biases (the
same defaults as Linen's `nn.Conv`), the pools are `nnx.max_pool` (Linen's
`max_pool`, re-exported) with window `spec.pool_window`, stride `spec.pool_stride`
and VALID padding, `dense1` is He-normal and `dense2` LeCun-normal. Kernels are
stored as Linen stores them -- HWIO for convolutions, (in, out) for `nnx.Linear` --
so the framework-neutral weights map one to one onto `nnx.Param`s. uint8 images
are scaled by 1/255 inside the compiled step with `impl_flax.common.scale_images`.

Training uses `nnx.Optimizer(model, make_optimizer(cfg), wrt=nnx.Param)` (the
Keras-form Adam as an optax transformation) and `optimizer.update(model, grads)`.

Why `jax.jit` over (graphdef, state) rather than `nnx.jit`: Flax's "Performance
considerations" guide says `nnx.jit` traverses the object graph in pure Python on
every call (split the inputs, check them, merge/update the outputs), an overhead
that matters for small models like this one, and recommends the "functional
training loop" to remove it: `nnx.split` once, a pure `jax.jit`-ed step that
`nnx.merge`s inside the trace (so the merge runs once, at trace time), and
`nnx.merge`/`nnx.update` outside only when the objects are needed. The adapter
therefore keeps no live NNX objects: only the `GraphDef` of {model, optimizer}
(closed over by the jitted functions, so it is never hashed per call) and their
state as a plain nested dict of arrays (`nnx.to_pure_dict`), which JAX flattens in
C++ -- an `nnx.State` of `Variable`s would be flattened through Python callbacks,
one per variable, on every call. A timed step is one jitted call and nothing else.

The state is donated to the step (`donate_argnums=0`), as Keras's compiled train
function donates its state and the Linen `FlaxImpl` donates too: the adapter holds
no other reference to the old state. (On the CPU, XLA inserts copies of the dense1
kernel and four smaller arrays to honour the aliasing; on a GPU donation halves the
state's memory.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from benchmarks.spec import ModelSpec, TrainConfig
from impl_flax.adapter import JaxImplementation
from impl_flax.common import compute_dtype, cross_entropy, make_optimizer, scale_images


class CNN(nnx.Module):
    """The origin CNN; `__call__` takes float images in [0, 1], NHWC, and returns logits."""

    def __init__(self, spec: ModelSpec, dtype=jnp.float32, *, rngs: nnx.Rngs):
        """`dtype`: what the layers compute in; parameters stay float32."""
        kernel = (spec.kernel_size, spec.kernel_size)
        f1, f2 = spec.filters
        dtypes = {"dtype": dtype, "param_dtype": jnp.float32, "rngs": rngs}
        self.window = (spec.pool_window, spec.pool_window)
        self.strides = (spec.pool_stride, spec.pool_stride)
        self.conv1 = nnx.Conv(spec.channels, f1, kernel_size=kernel, **dtypes)
        self.conv2 = nnx.Conv(f1, f2, kernel_size=kernel, **dtypes)
        self.dense1 = nnx.Linear(spec.flat_features, spec.dense_units, kernel_init=nnx.initializers.he_normal(),
                                 **dtypes)
        self.dense2 = nnx.Linear(spec.dense_units, spec.num_classes, **dtypes)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        pool = lambda x: nnx.max_pool(x, window_shape=self.window, strides=self.strides, padding="VALID")
        x = pool(nnx.relu(self.conv1(x_BHWC)))
        x = pool(nnx.relu(self.conv2(x)))
        x = jnp.reshape(x, (x.shape[0], -1))
        return self.dense2(nnx.relu(self.dense1(x)))


# -- the pure functions jitted per adapter, with the GraphDef bound ------------------------
def _loss_fn(model: CNN, images: jax.Array, labels: jax.Array):
    return jnp.mean(cross_entropy(model(images), labels))


def _train_step(graphdef: nnx.GraphDef, state: dict, batch: dict) -> tuple[dict, dict]:
    nodes = nnx.merge(graphdef, state)  # at trace time only
    model, optimizer = nodes["model"], nodes["optimizer"]
    images = scale_images(batch["image"])
    labels = batch["label"]
    loss, grads = nnx.value_and_grad(_loss_fn)(model, images, labels)
    optimizer.update(model, grads)
    return nnx.to_pure_dict(nnx.state(nodes)), {"loss": loss}  # no accuracy per step, as in Keras


def _predict_step(graphdef: nnx.GraphDef, state: dict, images_BHWC: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)["model"]
    return model(scale_images(images_BHWC)).astype(jnp.float32)


class FlaxNNXImpl(JaxImplementation):
    timed_region = ("one jax.jit-ed train step (forward, backward, Adam update via nnx.Optimizer, the NNX graph "
                    "merged only at trace time; the loss out, no accuracy) on a batch already on the device; "
                    "the donated state is replaced by the new one, nothing else per step")

    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        super().__init__(name, spec, train, seed, device)
        self._tx = make_optimizer(train)  # one object, so every reset gives the same GraphDef
        with jax.default_device(self.device):
            model = self._model(nnx.Rngs(seed))
        self._graphdef, self._state = self._split(model)
        self._step = jax.jit(functools.partial(_train_step, self._graphdef), donate_argnums=0)
        self._predict = jax.jit(functools.partial(_predict_step, self._predict_graphdef()))

    def _model(self, rngs: nnx.Rngs) -> nnx.Module:
        """The model of `self.spec`, in training mode (a subclass builds another workload's)."""
        return CNN(self.spec, compute_dtype(self.train_cfg), rngs=rngs)

    def _predict_graphdef(self) -> nnx.GraphDef:
        """The graph predictions run: the step's, for a model without a training mode of its own."""
        return self._graphdef

    def _split(self, model: CNN) -> tuple[nnx.GraphDef, dict]:
        """GraphDef and pure-dict state of {model, fresh optimizer}, placed on the device."""
        with jax.default_device(self.device):
            optimizer = nnx.Optimizer(model, self._tx, wrt=nnx.Param)
        graphdef, state = nnx.split({"model": model, "optimizer": optimizer})
        return graphdef, jax.device_put(nnx.to_pure_dict(state), self.device)

    # -- weights ----------------------------------------------------------------
    def _count(self, kind: type[nnx.Variable]) -> int:
        model = nnx.merge(self._graphdef, self._state)["model"]
        return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(model, kind))))

    def num_params(self) -> int:
        return self._count(nnx.Param)

    def num_state(self) -> int:
        return self._count(nnx.BatchStat)

    def _get_weights(self) -> dict[str, np.ndarray]:
        """The model's variables by attribute path: "conv1/kernel", "stage2/block1/bn1/mean", ..."""
        return traverse_util.flatten_dict(jax.device_get(self._state["model"]), sep="/")

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        model = nnx.eval_shape(lambda: self._model(nnx.Rngs(0)))  # no init
        nnx.update(model, traverse_util.unflatten_dict(
            {k: jax.device_put(v, self.device) for k, v in weights.items()}, sep="/"))
        graphdef, state = self._split(model)  # fresh optimizer state
        if graphdef != self._graphdef:
            raise RuntimeError("set_weights built a model whose graph differs from the compiled one")
        self._state = state

    # -- steps ------------------------------------------------------------------
    def train_step(self, device_batch: dict) -> jax.Array:
        self._state, metrics = self._step(self._state, device_batch)
        return metrics["loss"]

    def _logits_on_device(self, images: jax.Array) -> jax.Array:
        return self._predict(self._state, images)

    def _lower_step(self, device_batch: dict) -> jax.stages.Lowered:
        return self._step.lower(self._state, device_batch)

    def phases(self, device_batch: dict) -> dict:
        graphdef = self._graphdef

        def loss_and_grads(state, batch):
            model = nnx.merge(graphdef, state)["model"]
            return nnx.value_and_grad(_loss_fn)(model, scale_images(batch["image"]), batch["label"])

        def update(state, grads):
            nodes = nnx.merge(graphdef, state)
            nodes["optimizer"].update(nodes["model"], grads)
            return nnx.to_pure_dict(nnx.state(nodes))

        forward = jax.jit(lambda state, batch: _loss_fn(nnx.merge(graphdef, state)["model"],
                                                        scale_images(batch["image"]), batch["label"]))
        forward_backward = jax.jit(loss_and_grads)
        grads = jax.tree.map(jnp.ones_like, forward_backward(self._state, device_batch)[1])
        update = jax.jit(update)
        return {"forward": lambda: forward(self._state, device_batch),
                "forward_backward": lambda: forward_backward(self._state, device_batch),
                "update": lambda: update(self._state, grads)}
