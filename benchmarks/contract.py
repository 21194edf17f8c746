"""The contract every implementation fulfils, and the logic they all share.

An implementation imports only this module, `benchmarks.spec`, the runtime
helpers (`benchmarks.runtimes`: one module per runtime, each a `Runtime`) and its
own framework. The harness reaches it only through `benchmarks.registry`.

`Implementation` is the contract: its abstract methods are what an implementation
provides, each documented where it is declared. Shared here, on top of them: weight
key and shape checks (`get_weights`, `set_weights`) and padded evaluation
(`evaluate`), so every implementation scores a split the same way, and the defaults
an implementation overrides where its framework's own loop differs (`run_steps`,
`prepare`, `before_timing`, `fit_epoch` with `user_loop`).
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
    """Base class of every implementation: provide the abstract methods; override the defaults only where
    the framework's own loop differs."""

    backend: str  # "jax" or "tensorflow": the `Runtime` the worker uses beside it (`runtimes.for_backend`)
    timed_region: str  # one sentence: what a timed step contains

    def __init__(self, name: str, spec: ModelSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        """`name`: the registry name; `device`: "cpu" or "gpu" (the model goes on the first one of that kind)."""
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

    # -- defaults, overridden where the framework's own loop differs ----------------------
    def run_steps(self, device_batch: Any, n: int) -> Any:
        """The timed body: n steps as the framework's own training loop runs them (default: n `train_step`s);
        the last loss, not synchronised."""
        loss = None
        for _ in range(n):
            loss = self.train_step(device_batch)
        return loss

    def prepare(self, device_batch: Any) -> None:
        """Called in set-up, after the runtime started and the weights exist: build whatever the first
        train step would otherwise build besides its own compiled function (model and optimizer state),
        so that the first step's extra time is the step's trace and compile alone, in every framework.
        Default: nothing (Keras builds its optimizer here)."""

    def before_timing(self) -> None:
        """Once, after the warm-up and before the timed rounds: what the framework's own loop does
        once per epoch rather than per step, so that no timed call does it. Default: nothing (Keras resets
        its metrics, as `fit` does once per epoch)."""

    user_loop = "one jitted train step per host batch, each batch copied to the device, one sync at the end"

    def fit_epoch(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
        """One epoch over host arrays (whole batches) as the framework's users write it, described by
        `user_loop`; returns once it is computed. Default: one `train_step` per host batch."""
        loss = None
        for i in range(0, len(labels), batch_size):
            loss = self.train_step(self.to_device({"image": images[i:i + batch_size],
                                                   "label": labels[i:i + batch_size]}))
        self.sync(loss)

    # -- what each implementation provides ----------------------------------------------
    @abc.abstractmethod
    def num_params(self) -> int:
        """The number of trainable parameters (every kernel and bias)."""

    def num_state(self) -> int:
        """The number of non-trainable state values the model carries between steps (BatchNorm's running
        statistics); 0 for a model without any."""
        return 0

    @abc.abstractmethod
    def _get_weights(self) -> dict[str, Any]:
        """The current weights, one array (numpy or the framework's, copied by `get_weights`) per key of
        `spec.weight_shapes()` ("conv1/kernel", ...): kernels HWIO for convolutions, (in, out) for dense
        layers, so they map one to one onto every other implementation's."""

    @abc.abstractmethod
    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load `weights` (float32 numpy in `_get_weights`'s layout, keys and shapes already checked by
        `set_weights`) and start the optimizer state afresh, as at construction."""

    @abc.abstractmethod
    def device_name(self) -> str:
        """"cpu", or the accelerator's model name (e.g. "NVIDIA H200"): what the results record."""

    @abc.abstractmethod
    def to_device(self, batch: dict) -> Any:
        """Place a host batch {"image": uint8 NHWC, "label": int32} on the device, once. The result, in
        whatever form the implementation's own step takes, is the `device_batch` every other method gets;
        no step copies it again."""

    @abc.abstractmethod
    def train_step(self, device_batch: Any) -> Any:
        """One optimizer step (forward, backward, update) on a batch from `to_device`, replacing the
        training state. Returns this batch's loss as the framework's scalar, not synchronised (see
        `sync`). The first call also traces and compiles the step."""

    @abc.abstractmethod
    def sync(self, value: Any) -> float:
        """Block until `value` (a loss from `train_step` or `run_steps`) is computed, and with it every
        step before it; return it as a Python float."""

    @abc.abstractmethod
    def logits(self, images: np.ndarray) -> np.ndarray:
        """Inference-mode logits of uint8 NHWC host images: float32 numpy of shape (N, num_classes),
        computed by the time it returns."""

    @abc.abstractmethod
    def phases(self, device_batch: Any) -> dict[str, Callable[[], Any]]:
        """The step taken apart, for the step breakdown: "forward" (the training loss), "forward_backward"
        (the loss and every gradient) and "update" (the optimizer applied to fixed gradients), each a
        zero-argument call of its own compiled function on `device_batch` and the current state. A call
        returns without synchronising; the worker waits with the runtime's `block` on its result, which holds
        all it computed, so no part of it is dead code. Nothing is changed."""

    @abc.abstractmethod
    def flops_per_step(self, device_batch: Any) -> float | None:
        """FLOPs of one train step on `device_batch`, from the compiler's cost analysis of the compiled
        step; None where the runtime gives none. Compiles for the analysis only: no state changes and no
        step trace is counted."""

    @abc.abstractmethod
    def trace_count(self) -> int | None:
        """How often the train step has been traced so far (a retrace in the timed steps shows as a change);
        None where the runtime's `CompileEvents` counts the compiles instead."""

    @abc.abstractmethod
    def forget_compiled(self) -> None:
        """Drop the compiled step, so that the next `train_step` traces and compiles it again (compile time
        sampled repeatedly in one process); the weights and the optimizer state stay as they are."""
