"""The ResNet workload's network in plain numpy (float64), written from `ResNetSpec` alone: an independent
implementation the framework versions are checked against (eval mode: BatchNorm from its running statistics)."""

from __future__ import annotations

import numpy as np

from benchmarks.spec import ResNetSpec


def conv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """SAME as XLA pads: the total (out-1)*stride + k - in, the smaller half before."""
    side, k = x.shape[1], kernel.shape[0]
    out = -(-side // stride)
    pad = max((out - 1) * stride + k - side, 0)
    x = np.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2), (0, 0)))
    span = (out - 1) * stride + 1
    return sum(x[:, i:i + span:stride, j:j + span:stride] @ kernel[i, j] for i in range(k) for j in range(k))


def relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0)


def forward(spec: ResNetSpec, w: dict, images: np.ndarray) -> np.ndarray:
    """Inference logits: BatchNorm from its running statistics."""
    convs = {c.name: c for c in spec.convs()}

    def conv_bn(x, name):
        c = convs[name]
        z = conv(x, w[f"{name}/kernel"], c.stride)
        return (z - w[f"{c.bn}/mean"]) / np.sqrt(w[f"{c.bn}/var"] + spec.bn_epsilon) * w[f"{c.bn}/scale"] \
            + w[f"{c.bn}/bias"]

    x = relu(conv_bn(images.astype(np.float64) / 255, "stem/conv"))
    for i in range(len(spec.widths)):
        for j in range(spec.blocks):
            block = f"stage{i + 1}/block{j + 1}"
            y = conv_bn(relu(conv_bn(x, f"{block}/conv1")), f"{block}/conv2")
            x = relu(y + (conv_bn(x, f"{block}/proj") if f"{block}/proj" in convs else x))
    return x.mean((1, 2)) @ w["head/kernel"] + w["head/bias"]


def random_weights(spec: ResNetSpec, rng) -> dict:
    w = {}
    for key, shape in spec.weight_shapes().items():
        part = key.rsplit("/", 1)[1]
        if part == "kernel":
            v = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))
        elif part == "scale":
            v = 1 + 0.1 * rng.standard_normal(shape)
        elif part == "var":
            v = rng.uniform(0.5, 1.5, shape)
        else:  # bias, mean
            v = 0.1 * rng.standard_normal(shape)
        w[key] = v.astype(np.float32)
    return w
