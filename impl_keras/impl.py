"""`KerasImpl`: the Keras twin on the contract, on the JAX or the TensorFlow backend.

The backend is whatever Keras was imported with (`registry.load` sets
KERAS_BACKEND first); what differs between backends lives in one class per
backend (`_JaxBackend`, `_TensorFlowBackend`), chosen once at construction. The
timed steps run Keras's own compiled train function (`model.make_train_function()`,
what `fit` calls), driven as `fit` drives it: no per-step sync and, on JAX, no
per-step copy of the state back into the variables. `train_step` resets the loss
tracker before each step, as `train_on_batch` does, so it returns that batch's
loss (parity and training need it); the timed steps (`run_steps`) never reset it:
`before_timing` does, once, as `fit` does once per epoch.
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from typing import Any, Callable

import keras
import numpy as np

from benchmarks import runtimes
from benchmarks.contract import Implementation
from benchmarks.spec import ModelSpec, TrainConfig
from impl_keras.model import build_model, compile_model


class _Backend(abc.ABC):
    """The backend's pieces: its device and scope, the train loop's state, the phases, the compiled step's upkeep.
    `model` is set once the model is built under `scope()`."""

    name: str  # keras.backend.backend(), which is also the `benchmarks.runtimes` backend
    model: keras.Model

    def __init__(self, kind: str):
        self.runtime = runtimes.for_backend(self.name)
        self.device = self.runtime.device(kind)

    @abc.abstractmethod
    def scope(self) -> AbstractContextManager:
        """Where new variables and ops go: the device."""

    @abc.abstractmethod
    def steps(self, device_batch: tuple, n: int, reset_each: bool) -> Any:
        """n calls of Keras's train function (the metrics reset before each with `reset_each`); the last loss."""

    @abc.abstractmethod
    def phases(self, device_batch: tuple) -> dict[str, Callable[[], Any]]:
        """The contract's `phases`, from Keras's own pieces."""

    @abc.abstractmethod
    def forget_compiled(self) -> None:
        """The contract's `forget_compiled`."""

    def sync_state(self) -> None:
        """Write the live training state back into the Keras variables (none here: the variables are it)."""

    def drop_state(self) -> None:
        """The variables changed outside the train loop: the next step starts from them (nothing held here)."""

    def reset_metrics(self) -> None:
        """The loss tracker reset, as `fit` does at the start of an epoch."""
        with self.scope():
            self.model.reset_metrics()

    def flops_per_step(self, device_batch: tuple) -> float | None:
        """The contract's `flops_per_step`: None, no cost analysis here."""
        return None


class _JaxBackend(_Backend):
    """Keras on JAX: the train function is stateless, so the live (trainable, non-trainable, optimizer,
    metrics) state is held here between steps and written back into the variables only when asked."""

    name = "jax"

    def __init__(self, kind: str):
        import jax

        from benchmarks.runtimes import jax_runtime

        self._jax = jax
        self._jax_runtime = jax_runtime  # `runtime` with JAX's extras: cost analysis, forget_compiled
        super().__init__(kind)
        # Keras-on-JAX creates its variables on JAX's default device.
        jax.config.update("jax_default_device", self.device)
        self._state: tuple | None = None
        self._state_dirty = False
        self._zero_metrics: list[np.ndarray] = []  # the metrics' initial values, read with the state

    def scope(self) -> AbstractContextManager:
        return self._jax.default_device(self.device)

    def sync_state(self) -> None:
        """Write the live state back into the Keras variables (what `fit` does per epoch)."""
        if self._state is not None and self._state_dirty:
            tv, ntv, ov, mv = self._state
            self.model._jax_state = {
                "trainable_variables": tv,
                "non_trainable_variables": ntv,
                "optimizer_variables": ov,
                "metrics_variables": mv,
            }
            self.model._jax_state_synced = False
            self.model.jax_state_sync()
            self._state_dirty = False
            # The variables now hold these very buffers, and Keras's compiled functions donate
            # what they are given: re-read the state from the variables at the next step.
            self._state = None

    def drop_state(self) -> None:
        self._state = None

    def reset_metrics(self) -> None:
        if self._state is None:
            super().reset_metrics()
            return
        tv, ntv, ov, _ = self._state  # the live state holds the metrics
        self._state = (tv, ntv, ov, [self._jax.device_put(z, self.device) for z in self._zero_metrics])

    def steps(self, device_batch: tuple, n: int, reset_each: bool) -> Any:
        x, y = device_batch
        m = self.model
        if self._state is None:
            m._symbolic_build(data_batch=(x, y, None))
            m.make_train_function()
            self._state = m._get_jax_state(
                trainable_variables=True, non_trainable_variables=True,
                optimizer_variables=True, metrics_variables=True, purge_model_variables=False,
            )
            self._zero_metrics = [np.zeros(tuple(v.shape), v.dtype) for v in m.metrics_variables]
        for _ in range(n):
            tv, ntv, ov, mv = self._state
            if reset_each:  # fresh zeros (the step donates its state, so no reuse)
                mv = [self._jax.device_put(z, self.device) for z in self._zero_metrics]
            logs, self._state = m.train_function((tv, ntv, ov, mv), iter([(x, y, None)]))
        self._state_dirty = True
        return logs["loss"]

    def phases(self, device_batch: tuple) -> dict[str, Callable[[], Any]]:
        """`compute_loss_and_updates` and `optimizer.stateless_apply`, each jitted on its own."""
        x, y = device_batch
        m = self.model
        jax = self._jax
        self.sync_state()
        tv, ntv, ov, mv = m._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                           optimizer_variables=True, metrics_variables=True)

        def loss(tv, x, y):
            return m.compute_loss_and_updates(tv, ntv, mv, x, y, None, training=True, optimizer_variables=ov)

        forward = jax.jit(lambda tv, x, y: loss(tv, x, y)[0])
        forward_backward = jax.jit(lambda tv, x, y: jax.value_and_grad(loss, has_aux=True)(tv, x, y))
        update = jax.jit(m.optimizer.stateless_apply)
        grads = [jax.numpy.ones_like(v) for v in tv]
        return {"forward": lambda: forward(tv, x, y), "forward_backward": lambda: forward_backward(tv, x, y),
                "update": lambda: update(ov, grads, tv)}

    def flops_per_step(self, device_batch: tuple) -> float | None:
        """XLA cost analysis of Keras's own train step (the function `make_train_function` jits)."""
        x, y = device_batch
        m = self.model
        m._symbolic_build(data_batch=(x, y, None))
        self.sync_state()
        state = m._get_jax_state(
            trainable_variables=True, non_trainable_variables=True,
            optimizer_variables=True, metrics_variables=True,
        )
        step = type(m).train_step.__get__(m)  # uncounted: this is analysis, not a training trace
        return self._jax_runtime.cost_analysis_flops(self._jax.jit(step).lower(state, (x, y, None)).compile())

    def forget_compiled(self) -> None:
        """Keras's jitted step stays, and JAX's caches go."""
        self._jax_runtime.forget_compiled()


class _TensorFlowBackend(_Backend):
    """Keras on TensorFlow: the variables are the training state; the train function is a tf.function."""

    name = "tensorflow"

    def __init__(self, kind: str):
        import tensorflow as tf

        self._tf = tf
        super().__init__(kind)

    def scope(self) -> AbstractContextManager:
        return self._tf.device(self.device)

    def steps(self, device_batch: tuple, n: int, reset_each: bool) -> Any:
        x, y = device_batch
        m = self.model
        with self._tf.device(self.device):
            m.make_train_function()
            for _ in range(n):
                if reset_each:
                    m.reset_metrics()
                logs = m.train_function(iter([(x, y, None)]))
        return logs["loss"]

    def phases(self, device_batch: tuple) -> dict[str, Callable[[], Any]]:
        """The model and `compute_loss` under a GradientTape, and `optimizer.apply`, each XLA-compiled on its
        own."""
        x, y = device_batch
        m = self.model
        tf = self._tf
        variables = m.trainable_variables
        with tf.device(self.device):  # the update works on copies: the model's weights stay as they are
            shadow = [tf.Variable(v) for v in variables]
            grads = [tf.ones_like(v) for v in variables]
        opt = keras.optimizers.Adam.from_config(m.optimizer.get_config())
        opt.build(shadow)

        @tf.function(jit_compile=True)
        def forward():
            with keras.StatelessScope():  # the model's assignments (BatchNorm's running statistics) are dropped
                return m.compute_loss(x, y, m(x, training=True))

        @tf.function(jit_compile=True)
        def forward_backward():
            with tf.GradientTape() as tape, keras.StatelessScope():
                loss = m.compute_loss(x, y, m(x, training=True))
            return [loss, *tape.gradient(loss, variables)]

        @tf.function(jit_compile=True)
        def update():
            opt.apply(grads, shadow)
            return opt.iterations + 0  # returned once every assignment of the cluster is done

        return {"forward": forward, "forward_backward": forward_backward, "update": update}

    def forget_compiled(self) -> None:
        """A new train function: a new tf.function traces and compiles again."""
        self.model.make_train_function(force=True)


BACKENDS: dict[str, type[_Backend]] = {b.name: b for b in (_JaxBackend, _TensorFlowBackend)}


class KerasImpl(Implementation):
    timed_region = ("Keras's compiled train function (what fit calls per batch: forward, backward, Adam update, "
                    "loss-tracker update) on a batch already on the device; metrics reset once before timing")

    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        super().__init__(name, spec, train, seed, device)
        self.backend = keras.backend.backend()
        if self.backend not in BACKENDS:
            raise RuntimeError(f"{name}: unsupported Keras backend {self.backend!r}; "
                               f"supported: {', '.join(BACKENDS)}")
        self._keras_backend = BACKENDS[self.backend](device)
        self.device = self._keras_backend.device
        self._runtime = self._keras_backend.runtime
        self._steps = self._keras_backend.steps  # bound once: the timed steps call it directly
        self._traces = 0
        with self._keras_backend.scope():
            keras.utils.set_random_seed(seed)
            self.model = compile_model(self._build_model(), train)
            self._count_traces()
        self._keras_backend.model = self.model

    def _build_model(self) -> keras.Model:
        """The uncompiled model of `self.spec` (a subclass builds another workload's)."""
        return build_model(self.spec, self.seed, self.train_cfg.precision)

    def _count_traces(self) -> None:
        """Count how often Keras traces its train step (a retrace would show up here)."""
        inner = self.model.train_step

        def counting_train_step(*args, **kwargs):
            self._traces += 1
            return inner(*args, **kwargs)

        self.model.train_step = counting_train_step

    # -- weights ----------------------------------------------------------------
    def _variable(self, key: str) -> keras.Variable:
        """"conv1/kernel" -> that Keras variable (layer names match the neutral keys)."""
        layer, attr = key.split("/")
        return getattr(self.model.get_layer(layer), attr)

    def num_params(self) -> int:
        return int(self.model.count_params())

    def _get_weights(self) -> dict[str, np.ndarray]:
        self._keras_backend.sync_state()
        return {key: keras.ops.convert_to_numpy(self._variable(key)) for key in self.spec.weight_shapes()}

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._keras_backend.sync_state()
        with self._keras_backend.scope():
            for key, value in weights.items():
                self._variable(key).assign(value)
            self._reset_optimizer()
        self._keras_backend.drop_state()

    def _reset_optimizer(self) -> None:
        opt = self.model.optimizer
        if not opt.built:
            return
        lr = getattr(opt, "_learning_rate", None)
        for v in opt.variables:
            if v is not lr:
                v.assign(np.zeros(tuple(v.shape), keras.backend.standardize_dtype(v.dtype)))

    # -- devices ----------------------------------------------------------------
    def device_name(self) -> str:
        return self._runtime.device_name(self.device)

    def to_device(self, batch: dict) -> tuple:
        placed = self._runtime.put_batch(batch, self.device)
        return placed["image"], placed["label"]

    # -- steps ------------------------------------------------------------------
    def train_step(self, device_batch: tuple) -> Any:
        """One step and this batch's own loss (the loss tracker reset first, as train_on_batch)."""
        return self._steps(device_batch, 1, reset_each=True)

    def prepare(self, device_batch: tuple) -> None:
        """The symbolic build (model, optimizer and metric variables; on JAX a few small compiles) and the
        train function object, which `fit` makes before its first step: nothing of it in the first step."""
        x, y = device_batch
        with self._keras_backend.scope():
            self.model._symbolic_build(data_batch=(x, y, None))
            self.model.make_train_function()

    def run_steps(self, device_batch: tuple, n: int) -> Any:
        """n steps as `fit` runs them within an epoch: no metric reset."""
        return self._steps(device_batch, n, reset_each=False)

    def before_timing(self) -> None:
        """The loss tracker reset once, as `fit` does at the start of an epoch."""
        self._keras_backend.reset_metrics()

    user_loop = "model.fit(x, y, batch_size, epochs=1, verbose=0, shuffle=False) on host arrays"

    def fit_epoch(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
        self._keras_backend.sync_state()
        with self._keras_backend.scope():
            self.model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
        self._keras_backend.drop_state()  # fit wrote its state into the variables

    def sync(self, value: Any) -> float:
        return self._runtime.to_float(value)

    def logits(self, images: np.ndarray) -> np.ndarray:
        self._keras_backend.sync_state()
        with self._keras_backend.scope():
            out = self.model.predict_on_batch(np.asarray(images, np.uint8))
        return np.asarray(keras.ops.convert_to_numpy(out), np.float32)

    def phases(self, device_batch: tuple) -> dict:
        return self._keras_backend.phases(device_batch)

    def flops_per_step(self, device_batch: tuple) -> float | None:
        return self._keras_backend.flops_per_step(device_batch)

    def trace_count(self) -> int | None:
        return self._traces

    def forget_compiled(self) -> None:
        self._keras_backend.forget_compiled()
