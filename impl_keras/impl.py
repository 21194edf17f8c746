"""`KerasImpl`: the adapter for the Keras twin, on the JAX or the TensorFlow backend.

The backend is whatever Keras was imported with (`registry.load` sets
KERAS_BACKEND first). The timed step is Keras's own compiled train function
(`model.make_train_function()`, i.e. what `fit` and `train_on_batch` call),
driven the way `fit` drives it: no per-step sync, no per-step copy of the
model state back into the variables. What `train_on_batch` adds on top --
`float()` of every log (a host sync) and, on JAX, re-assigning every variable
after every step -- is left out, as `fit` leaves it out.

Per step we reset the loss tracker (as `train_on_batch` does), so the loss
returned is this batch's loss rather than the running mean `fit` displays.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from benchmarks.spec import ModelSpec, TrainConfig
from impl_keras.model import build_model, compile_model

LAYERS = ("conv1", "conv2", "dense1", "dense2")


class KerasImpl:
    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        self.name = name
        self.spec = spec
        self.train_cfg = train
        self.seed = seed
        self.backend = keras.backend.backend()
        if self.backend not in ("jax", "tensorflow"):
            raise RuntimeError(f"{name}: unsupported Keras backend {self.backend!r}")
        self._traces = 0
        self._state = None  # JAX: the live (trainable, non_trainable, optimizer, metrics) state
        self._state_dirty = False
        if self.backend == "jax":
            import jax

            from impl_flax.impl import jax_device

            self._jax = jax
            self.device = jax_device(device)
            # Keras-on-JAX creates its variables on JAX's default device.
            jax.config.update("jax_default_device", self.device)
        else:
            import tensorflow as tf

            self._tf = tf
            if device == "gpu":
                gpus = tf.config.list_physical_devices("GPU")
                if not gpus:
                    raise RuntimeError("device='gpu' requested, but TensorFlow sees no GPU")
                for g in gpus:  # TF otherwise grabs all GPU memory
                    try:
                        tf.config.experimental.set_memory_growth(g, True)
                    except RuntimeError:
                        pass
                self.device = "/GPU:0"
            else:
                self.device = "/CPU:0"
        with self._scope():
            keras.utils.set_random_seed(seed)
            self.model = compile_model(build_model(spec, seed), train)
            self._count_traces()

    # -- plumbing ---------------------------------------------------------------
    def _scope(self):
        if self.backend == "tensorflow":
            return self._tf.device(self.device)
        return self._jax.default_device(self.device)

    def _count_traces(self):
        """Count how often Keras traces its train step (a retrace would show up here)."""
        inner = self.model.train_step

        def counting_train_step(*args, **kwargs):
            self._traces += 1
            return inner(*args, **kwargs)

        self.model.train_step = counting_train_step

    def _sync_state(self):
        """JAX: write the live state back into the Keras variables (what `fit` does per epoch)."""
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
            # The variables now hold these very buffers, and Keras's predict/test/train functions
            # donate what they are given: re-read the state from the variables at the next step,
            # as `fit` does after a sync.
            self._state = None

    def _layer(self, name: str):
        return self.model.get_layer(name)

    # -- weights ----------------------------------------------------------------
    def num_params(self) -> int:
        return int(self.model.count_params())

    def get_weights(self) -> dict[str, np.ndarray]:
        self._sync_state()
        out = {}
        for name in LAYERS:
            layer = self._layer(name)
            out[f"{name}/kernel"] = np.array(keras.ops.convert_to_numpy(layer.kernel))
            out[f"{name}/bias"] = np.array(keras.ops.convert_to_numpy(layer.bias))
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        expected = {f"{n}/{p}" for n in LAYERS for p in ("kernel", "bias")}
        if set(weights) != expected:
            raise ValueError(f"weight keys differ: expected {sorted(expected)}, got {sorted(weights)}")
        self._sync_state()
        with self._scope():
            for name in LAYERS:
                layer = self._layer(name)
                for p in ("kernel", "bias"):
                    var = getattr(layer, p)
                    value = np.asarray(weights[f"{name}/{p}"], np.float32)
                    if value.shape != tuple(var.shape):
                        raise ValueError(f"{name}/{p}: expected shape {tuple(var.shape)}, got {value.shape}")
                    var.assign(value)
            self._reset_optimizer()
        self._state = None  # re-read from the variables at the next step

    def _reset_optimizer(self):
        opt = self.model.optimizer
        if not opt.built:
            return
        lr = getattr(opt, "_learning_rate", None)
        for v in opt.variables:
            if v is lr:
                continue
            v.assign(np.zeros(tuple(v.shape), keras.backend.standardize_dtype(v.dtype)))

    # -- devices ----------------------------------------------------------------
    def device_name(self) -> str:
        if self.backend == "jax":
            from impl_flax.impl import jax_device_name

            return jax_device_name(self.device)
        if self.device.startswith("/CPU"):
            return "cpu"
        gpu = self._tf.config.list_physical_devices("GPU")[0]
        return self._tf.config.experimental.get_device_details(gpu).get("device_name", "gpu")

    def to_device(self, batch: dict) -> tuple:
        x = np.asarray(batch["image"], np.uint8)
        y = np.asarray(batch["label"], np.int32)
        if self.backend == "jax":
            return (self._jax.device_put(x, self.device), self._jax.device_put(y, self.device))
        with self._tf.device(self.device):
            # tf.identity under the device scope places a copy there (convert_to_tensor alone may not)
            return (self._tf.identity(self._tf.constant(x)), self._tf.identity(self._tf.constant(y)))

    # -- steps ------------------------------------------------------------------
    def train_step(self, device_batch: tuple) -> Any:
        x, y = device_batch
        m = self.model
        if self.backend == "jax":
            return self._train_step_jax(x, y)
        with self._tf.device(self.device):
            m.make_train_function()
            m.reset_metrics()  # per-batch loss, as train_on_batch
            logs = m.train_function(iter([(x, y, None)]))
        return logs["loss"]

    def _train_step_jax(self, x, y):
        jax = self._jax
        m = self.model
        if self._state is None:
            m._symbolic_build(data_batch=(x, y, None))
            m.make_train_function()
            m.reset_metrics()
            self._state = m._get_jax_state(
                trainable_variables=True,
                non_trainable_variables=True,
                optimizer_variables=True,
                metrics_variables=True,
                purge_model_variables=False,
            )
            self._zero_metrics = [np.zeros(tuple(v.shape), v.dtype) for v in m.metrics_variables]
        tv, ntv, ov, _ = self._state
        # fresh zeros for the loss tracker (the step donates its state, so no reuse)
        mv = [jax.device_put(z, self.device) for z in self._zero_metrics]
        logs, self._state = m.train_function((tv, ntv, ov, mv), iter([(x, y, None)]))
        self._state_dirty = True
        return logs["loss"]

    def sync(self, value: Any) -> float:
        if self.backend == "jax":
            return float(self._jax.block_until_ready(value))
        return float(value.numpy())

    def _predict(self, images: np.ndarray) -> np.ndarray:
        self._sync_state()
        with self._scope():
            return np.asarray(keras.ops.convert_to_numpy(self.model.predict_on_batch(images)))

    def evaluate(self, batches) -> dict:
        from benchmarks.training import padded

        loss_sum = correct = count = 0.0
        size = None
        for batch in batches:
            size = size or len(batch["label"])
            b = padded(batch, size)  # one shape for every batch: no retrace for the last one
            logits = self._predict(b["image"]).astype(np.float64)
            mask = b["mask"].astype(bool)
            logits, labels = logits[mask], b["label"][mask]
            z = logits - logits.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            loss_sum += float(-logp[np.arange(len(labels)), labels].sum())
            correct += float((logits.argmax(-1) == labels).sum())
            count += len(labels)
        if not count:
            raise ValueError("evaluate() got no batches")
        return {"loss": loss_sum / count, "accuracy": correct / count, "count": int(count)}

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self._predict(np.asarray(images, np.uint8))

    def flops_per_step(self, device_batch: tuple) -> float | None:
        """JAX: XLA cost analysis of Keras's own train step (the function `make_train_function` jits)."""
        if self.backend != "jax":
            return None
        from impl_flax.impl import cost_analysis_flops

        jax = self._jax
        x, y = device_batch
        m = self.model
        m._symbolic_build(data_batch=(x, y, None))
        self._sync_state()
        state = m._get_jax_state(
            trainable_variables=True, non_trainable_variables=True,
            optimizer_variables=True, metrics_variables=True,
        )
        step = type(m).train_step.__get__(m)  # uncounted: this is analysis, not a training trace
        return cost_analysis_flops(jax.jit(step).lower(state, (x, y, None)).compile())

    def trace_count(self) -> int | None:
        return self._traces
