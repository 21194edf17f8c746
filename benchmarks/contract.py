"""The contract every implementation fulfils, and the logic they all share.

An implementation imports only this module, `benchmarks.spec`, one runtime
helper module (`benchmarks.runtimes.jax_runtime` or `.tf_runtime`) and its own
framework. The harness reaches it only through `benchmarks.registry`.

What an implementation must provide (the abstract methods below):

    num_params()                 trainable parameter count
    _get_weights()               {"conv1/kernel": array, ...} as numpy, HWIO / (in, out) layout
    _set_weights(weights)        load checked weights and reset the optimizer state
    device_name()                "cpu" or the accelerator's model name
    to_device(batch)             place a host batch {"image": uint8 NHWC, "label": int32} once
    train_step(device_batch)     one optimizer step; returns the batch's loss, not synchronised
    sync(value)                  block until `value` is ready; return it as a float
    logits(images)               uint8 NHWC images -> numpy logits (inference mode)
    flops_per_step(device_batch) FLOPs of one step from the compiler's cost analysis, or None
    trace_count()                step traces so far (None where the runtime counts compiles)
    prepare(device_batch)        everything the first step would otherwise do besides tracing and
                                 compiling it (default: nothing; Keras builds its optimizer here)
    phases(device_batch)         the step taken apart, for the step breakdown: {"forward",
                                 "forward_backward", "update"} -> a zero-argument call of a compiled
                                 function whose result the runtime's `block` waits for
    forget_compiled()            drop the compiled step: the next train_step traces and compiles
                                 again (compile time sampled repeatedly in one process)
    timed_region                 one sentence: what a timed step contains

Shared here: weight key and shape checks (`get_weights`, `set_weights`), padded
evaluation (`evaluate`), so every implementation scores a split the same way, and
two defaults an implementation overrides where its framework's own loop differs:
`run_steps`, the timed body (n `train_step`s), `before_timing`, what the framework's
loop does once before them (nothing; Keras resets its metrics, as `fit` does once per
epoch), and `fit_epoch`, an epoch as the framework's users run it (one step per host
batch; Keras users call `model.fit`), described by `user_loop`.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Iterable

import numpy as np

from benchmarks.spec import ModelSpec, TrainConfig

DEVICES = ("cpu", "gpu")


def padded(batch: dict, size: int) -> dict:
    """Pad a (possibly short) host batch to `size` rows and add a 0/1 `mask`."""
    images = np.asarray(batch["image"], np.uint8)
    labels = np.asarray(batch["label"], np.int32)
    n = len(labels)
    if n > size:
        raise ValueError(f"batch of {n} is larger than the padded size {size}")
    mask = np.zeros(size, np.float32)
    mask[:n] = 1
    if n < size:
        images = np.concatenate([images, np.zeros((size - n, *images.shape[1:]), np.uint8)])
        labels = np.concatenate([labels, np.zeros(size - n, np.int32)])
    return {"image": images, "label": labels, "mask": mask}


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


class Implementation(abc.ABC):
    """Base class of every implementation; see the module docstring for what to provide."""

    backend: str  # "jax" or "tensorflow": which runtime helpers the worker uses
    timed_region: str

    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        self.name = name
        self.spec = spec
        self.train_cfg = train
        self.seed = seed
        self.device_kind = check_device(device)

    # -- weights: checked here, moved by the implementation -----------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self._get_weights().items()}  # writable copies

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load framework-neutral weights (keys and shapes checked); resets the optimizer."""
        expected = self.spec.weight_shapes()
        if set(weights) != set(expected):
            raise ValueError(f"weight keys differ: expected {sorted(expected)}, got {sorted(weights)}")
        for key, shape in expected.items():
            if tuple(np.shape(weights[key])) != shape:
                raise ValueError(f"{key}: expected shape {shape}, got {tuple(np.shape(weights[key]))}")
        self._set_weights({k: np.asarray(v, np.float32) for k, v in weights.items()})

    # -- evaluation: one padded shape for every batch, scored on the host ---------------------
    def evaluate(self, batches: Iterable[dict]) -> dict:
        """{"loss", "accuracy", "count"} over host batches; the last, shorter one is padded
        to the first one's size so that no batch triggers a new compile."""
        loss_sum = correct = count = 0.0
        size = None
        for batch in batches:
            size = size or len(batch["label"])
            b = padded(batch, size)
            mask = b["mask"].astype(bool)
            logits = np.asarray(self.logits(b["image"]), np.float64)[mask]
            labels = b["label"][mask]
            z = logits - logits.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            loss_sum += float(-logp[np.arange(len(labels)), labels].sum())
            correct += float((logits.argmax(-1) == labels).sum())
            count += len(labels)
        if not count:
            raise ValueError("evaluate() got no batches")
        return {"loss": loss_sum / count, "accuracy": correct / count, "count": int(count)}

    # -- the timed steps: n train steps unless the framework's own loop does less per step --
    def run_steps(self, device_batch: Any, n: int) -> Any:
        """n steps as the framework's own training loop runs them; the last loss, not synchronised."""
        loss = None
        for _ in range(n):
            loss = self.train_step(device_batch)
        return loss

    def prepare(self, device_batch: Any) -> None:
        """Called in set-up, after the runtime started and the weights exist: build whatever the first
        train step would otherwise build besides its own compiled function (model and optimizer state),
        so that the first step's extra time is the step's trace and compile alone, in every framework."""

    @abc.abstractmethod
    def phases(self, device_batch: Any) -> dict[str, Callable[[], Any]]:
        """The step's phases, each its own compiled function on `device_batch` and the current state:
        "forward" (the training loss), "forward_backward" (the loss and every gradient) and "update" (the
        optimizer applied to fixed gradients). Nothing is changed; each result holds all it computed,
        so no part of it is dead code."""

    def before_timing(self) -> None:
        """Once, after the warm-up and before the timed rounds: what the framework's own loop does
        once per epoch rather than per step, so that no timed call does it."""

    user_loop = "one jitted train step per host batch, each batch copied to the device, one sync at the end"

    def fit_epoch(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
        """One epoch over host arrays (whole batches) as the framework's users write it."""
        loss = None
        for i in range(0, len(labels), batch_size):
            loss = self.train_step(self.to_device({"image": images[i:i + batch_size],
                                                   "label": labels[i:i + batch_size]}))
        self.sync(loss)

    # -- what each implementation provides ----------------------------------------------
    @abc.abstractmethod
    def num_params(self) -> int: ...

    @abc.abstractmethod
    def _get_weights(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _set_weights(self, weights: dict[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def device_name(self) -> str: ...

    @abc.abstractmethod
    def to_device(self, batch: dict) -> Any: ...

    @abc.abstractmethod
    def train_step(self, device_batch: Any) -> Any: ...

    @abc.abstractmethod
    def sync(self, value: Any) -> float: ...

    @abc.abstractmethod
    def logits(self, images: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def flops_per_step(self, device_batch: Any) -> float | None: ...

    @abc.abstractmethod
    def trace_count(self) -> int | None: ...

    @abc.abstractmethod
    def forget_compiled(self) -> None: ...
