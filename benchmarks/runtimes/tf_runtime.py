"""The TensorFlow `Runtime` (no extras: cost analysis and the matmul rate are JAX's)."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from benchmarks.runtimes import process_peak_rss, process_threads

COMPILE_EVENTS = ("trace_s", "lower_s", "compile_only_s")


def device(kind: str) -> str:
    """The TF device string for "cpu" or "gpu"; lets a GPU's memory grow instead of taking it all."""
    if kind == "cpu":
        return "/CPU:0"
    if kind != "gpu":
        raise ValueError(f"device must be 'cpu' or 'gpu', got {kind!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise RuntimeError("device='gpu' requested, but TensorFlow sees no GPU")
    for g in gpus:
        try:
            tf.config.experimental.set_memory_growth(g, True)
        except RuntimeError:  # already initialised: the setting stays as it was
            pass
    return "/GPU:0"


def start_up(kind: str) -> None:
    """Initialise the runtime on the device before anything is timed: one throwaway XLA-compiled
    function running a convolution and a matmul there (on a GPU that loads cuDNN and cuBLAS), so that
    start-up falls on no implementation's first step."""
    with tf.device(device(kind)):
        x, w = tf.ones((1, 8, 8, 3)), tf.ones((3, 3, 3, 4))

    @tf.function(jit_compile=True)
    def conv_matmul(x, w):
        y = tf.nn.conv2d(x, w, 1, "SAME")
        return tf.reshape(y, (1, -1)) @ tf.ones((8 * 8 * 4, 2))

    conv_matmul(x, w).numpy()


def device_name(dev: str) -> str:
    """"cpu", or the first GPU's model name as TensorFlow reports it."""
    if dev.startswith("/CPU"):
        return "cpu"
    gpu = tf.config.list_physical_devices("GPU")[0]
    return tf.config.experimental.get_device_details(gpu).get("device_name", "gpu")


def put_batch(batch: dict, dev: str) -> dict:
    """A host batch {"image": uint8 NHWC, "label": int32} placed on the device, once."""
    with tf.device(dev):
        # tf.identity under the device scope places a copy there (convert_to_tensor alone may not)
        return {"image": tf.identity(tf.constant(np.asarray(batch["image"], np.uint8))),
                "label": tf.identity(tf.constant(np.asarray(batch["label"], np.int32)))}


def platform_version(kind: str) -> str:
    """What the runtime runs on: "cpu", or the CUDA and cuDNN versions TensorFlow was built with."""
    if kind == "cpu":
        return "cpu"
    info = tf.sysconfig.get_build_info()
    return f"cuda {info.get('cuda_version')}, cudnn {info.get('cudnn_version')}"


def block(tree: Any) -> None:
    """Wait until the outputs in `tree` are computed: the outputs of one compiled function are ready
    together, so reading the smallest one back waits for all of them."""
    min(tf.nest.flatten(tree), key=lambda t: t.shape.num_elements()).numpy()


def to_float(value: tf.Tensor) -> float:
    """Wait for a scalar tensor; return it as a float."""
    return float(value.numpy())


def threads() -> dict:
    """TF's intra- and inter-op pools (0: TF picks, one per usable core)."""
    return {**process_threads(), "framework": f"tensorflow {tf.__version__}",
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def memory_limit_bytes(kind: str) -> int | None:
    """None: TensorFlow does not report a GPU's size before allocating."""
    return None


def reset_peak_memory(kind: str) -> bool:
    """On a GPU, restart TensorFlow's peak count (so the peak read later spans the timed steps)."""
    if kind == "cpu":
        return False
    tf.config.experimental.reset_memory_stats("GPU:0")
    return True


def peak_memory(kind: str) -> dict:
    """The peak (labelled with what it spans) and, on a GPU, the bytes in use now."""
    if kind != "cpu":
        info = tf.config.experimental.get_memory_info("GPU:0")
        return {"peak_memory_bytes": info["peak"], "device_bytes_in_use": info["current"],
                "memory_source": "device peak (TensorFlow), since the peak was reset"}
    return process_peak_rss()


class CompileEvents:
    """TensorFlow has no compile-event stream: compiles are counted as step traces by the implementation."""

    compiles = 0

    def listen(self) -> None:
        pass

    def split(self) -> dict[str, float | None]:
        """No durations: every part None."""
        return dict.fromkeys(COMPILE_EVENTS)

    def clear(self) -> None:
        pass
