"""The single source of truth for the network and its optimizer.

Every implementation builds from a `ModelSpec` and trains with a `TrainConfig`;
neither holds framework objects, so both travel as JSON to worker processes.

The default spec is the origin model as its code actually runs: Flax's
`nn.max_pool` without `strides` pools with stride 1, so the feature maps shrink
by one pixel per pool and `dense1` sees (H-2)*(W-2)*32 inputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

ORIGIN_POOL_STRIDE = 1


@dataclass(frozen=True)
class ModelSpec:
    image_size: int = 64
    filters: tuple[int, int] = (16, 32)
    kernel_size: int = 3
    pool_window: int = 2
    pool_stride: int = ORIGIN_POOL_STRIDE
    dense_units: int = 64
    num_classes: int = 2
    channels: int = 3

    def __post_init__(self):
        if self.pool_stride not in (1, 2):
            raise ValueError(f"pool_stride must be 1 or 2, got {self.pool_stride!r}")
        if not (isinstance(self.image_size, int) and self.image_size >= 8):
            raise ValueError(f"image_size must be an integer >= 8, got {self.image_size!r}")
        object.__setattr__(self, "filters", tuple(self.filters))

    @property
    def variant(self) -> str:
        """What a cell id adds after the image size: the pool stride."""
        return f"p{self.pool_stride}"

    @property
    def is_origin(self) -> bool:
        """True when this is the origin model's architecture (any image size)."""
        return self == ModelSpec(image_size=self.image_size)

    def pooled_size(self, size: int) -> int:
        # VALID pooling: floor((size - window) / stride) + 1
        return (size - self.pool_window) // self.pool_stride + 1

    @property
    def flat_features(self) -> int:
        side = self.pooled_size(self.pooled_size(self.image_size))
        return side * side * self.filters[1]

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The framework-neutral weights: "layer/kernel" in HWIO (conv) or (in, out) (dense)."""
        k, c = self.kernel_size, self.channels
        f1, f2 = self.filters
        return {
            "conv1/kernel": (k, k, c, f1), "conv1/bias": (f1,),
            "conv2/kernel": (k, k, f1, f2), "conv2/bias": (f2,),
            "dense1/kernel": (self.flat_features, self.dense_units), "dense1/bias": (self.dense_units,),
            "dense2/kernel": (self.dense_units, self.num_classes), "dense2/bias": (self.num_classes,),
        }

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.weight_shapes().values())

    @staticmethod
    def is_state(key: str) -> bool:
        """No weight of the origin is non-trainable state."""
        return False

    num_state = 0

    def layer_flops(self, batch_size: int) -> dict[str, int]:
        """Multiply-adds x2 of each conv and dense layer in one forward pass (pools, ReLUs ignored)."""
        k, c = self.kernel_size, self.channels
        f1, f2 = self.filters
        s0 = self.image_size
        s1 = self.pooled_size(s0)
        per_image = {
            "conv1": 2 * s0 * s0 * k * k * c * f1,
            "conv2": 2 * s1 * s1 * k * k * f1 * f2,
            "dense1": 2 * self.flat_features * self.dense_units,
            "dense2": 2 * self.dense_units * self.num_classes,
        }
        return {name: batch_size * f for name, f in per_image.items()}

    def train_flops(self, batch_size: int) -> int:
        """Analytic count for one training step, the one FLOP count every implementation is rated by:
        forward, plus the weight gradient of every layer, plus the input gradient of every layer but
        conv1 (its input is the image, whose gradient nobody computes)."""
        layers = self.layer_flops(batch_size)
        return 3 * sum(layers.values()) - layers["conv1"]

    def train_memory_bytes(self, batch_size: int) -> int:
        """Rough float32 footprint of one training step: weights, gradients and two Adam
        moments, plus activations kept for the backward pass (x3 for their gradients)."""
        f1, f2 = self.filters
        s0, s1 = self.image_size, self.pooled_size(self.image_size)
        s2 = self.pooled_size(s1)
        per_image = s0 * s0 * (self.channels + f1) + s1 * s1 * (f1 + f2) + s2 * s2 * f2 + self.dense_units
        return 4 * (4 * self.num_params + 3 * batch_size * per_image)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**d)


class Conv(NamedTuple):
    name: str  # "stage2/block1/conv1"
    bn: str  # its BatchNorm: "stage2/block1/bn1"
    kernel: int
    cin: int
    cout: int
    stride: int
    side: int  # the output's side


@dataclass(frozen=True)
class ResNetSpec:
    """The second workload: a small ResNet of basic blocks (CIFAR style) on the same images.

    A stem (3x3 conv, BatchNorm, ReLU), then one stage per width: `blocks` basic blocks of two 3x3
    convs with BatchNorm, the first of each stage after the first strided 2 with a projection
    shortcut (1x1 conv stride 2, BatchNorm); then global average pooling and a dense layer. Convs
    have no bias (BatchNorm's follows) and pad SAME as XLA and TensorFlow do: a stride-2 conv on an
    even side pads 0 before and 1 after (not PyTorch's 1 and 1).

    BatchNorm is set explicitly in every framework, since their defaults differ (Flax: momentum 0.99,
    epsilon 1e-5; Keras: 0.99, 1e-3): momentum 0.9 (running = 0.9 running + 0.1 batch), epsilon 1e-5,
    batch statistics in training, running averages in evaluation, and the running variance updated
    with the biased batch variance computed in two passes, E[(x - E[x])^2], as Keras does on both
    backends (Flax: `use_fast_variance=False`); neither framework applies n/(n-1).
    """

    image_size: int = 64
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1  # basic blocks per stage
    kernel_size: int = 3
    num_classes: int = 2
    channels: int = 3
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def __post_init__(self):
        if not (isinstance(self.image_size, int) and self.image_size >= 8):
            raise ValueError(f"image_size must be an integer >= 8, got {self.image_size!r}")
        object.__setattr__(self, "widths", tuple(self.widths))

    @property
    def variant(self) -> str:
        """What a cell id adds after the image size (nothing: one architecture per image size)."""
        return ""

    def convs(self) -> list[Conv]:
        """Every conv in order, each followed by its BatchNorm."""
        k, side, cin = self.kernel_size, self.image_size, self.widths[0]
        out = [Conv("stem/conv", "stem/bn", k, self.channels, cin, 1, side)]
        for i, w in enumerate(self.widths):
            for j in range(self.blocks):
                stride = 2 if i > 0 and j == 0 else 1
                side = -(-side // stride)  # SAME: ceil(side / stride)
                block = f"stage{i + 1}/block{j + 1}"
                out += [Conv(f"{block}/conv1", f"{block}/bn1", k, cin, w, stride, side),
                        Conv(f"{block}/conv2", f"{block}/bn2", k, w, w, 1, side)]
                if stride != 1 or cin != w:
                    out.append(Conv(f"{block}/proj", f"{block}/proj_bn", 1, cin, w, stride, side))
                cin = w
        return out

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The framework-neutral weights: conv kernels HWIO, BatchNorm "scale", "bias" (trainable) and
        "mean", "var" (the running statistics), the head's kernel (in, out) and bias."""
        out: dict[str, tuple[int, ...]] = {}
        for c in self.convs():
            out[f"{c.name}/kernel"] = (c.kernel, c.kernel, c.cin, c.cout)
            out.update({f"{c.bn}/{part}": (c.cout,) for part in ("scale", "bias", "mean", "var")})
        out["head/kernel"], out["head/bias"] = (self.widths[-1], self.num_classes), (self.num_classes,)
        return out

    @staticmethod
    def is_state(key: str) -> bool:
        """Whether a weight is non-trainable state (BatchNorm's running statistics)."""
        return key.endswith(("/mean", "/var"))

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for key, s in self.weight_shapes().items() if not self.is_state(key))

    @property
    def num_state(self) -> int:
        return sum(math.prod(s) for key, s in self.weight_shapes().items() if self.is_state(key))

    def layer_flops(self, batch_size: int) -> dict[str, int]:
        """Multiply-adds x2 of each conv and the head in one forward pass (BatchNorm, ReLU, the residual
        additions and the pooling ignored, as the origin's count ignores pools and ReLUs)."""
        out = {c.name: batch_size * 2 * c.side * c.side * c.kernel * c.kernel * c.cin * c.cout for c in self.convs()}
        out["head"] = batch_size * 2 * self.widths[-1] * self.num_classes
        return out

    def train_flops(self, batch_size: int) -> int:
        """Forward, plus every layer's weight gradient, plus every layer's input gradient but the stem's."""
        layers = self.layer_flops(batch_size)
        return 3 * sum(layers.values()) - layers["stem/conv"]

    def train_memory_bytes(self, batch_size: int) -> int:
        """Rough float32 footprint of one step: weights, gradients, two Adam moments and the state, plus
        the image and every conv's and BatchNorm's output kept for the backward pass (x3 for gradients)."""
        acts = self.image_size ** 2 * self.channels + sum(2 * c.side * c.side * c.cout for c in self.convs())
        return 4 * (4 * self.num_params + self.num_state + 3 * batch_size * acts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetSpec":
        return cls(**d)


PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and loop hyperparameters shared by every implementation.

    Adam is run in Keras's formulation everywhere (epsilon added to sqrt(v)
    before bias correction); `adam_form="optax"` selects optax's native one,
    in which epsilon is added after bias correction.
    """

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-7
    adam_form: str = "keras"
    batch_size: int = 32
    epochs: int = 10
    seed: int = 0
    # "float32"; or "bf16": compute in bfloat16 with float32 parameters, loss and optimizer (Flax
    # dtype/param_dtype, Keras's mixed_bfloat16 policy), as users train on GPUs
    precision: str = "float32"

    def __post_init__(self):
        if self.adam_form not in ("keras", "optax"):
            raise ValueError(f"adam_form must be 'keras' or 'optax', got {self.adam_form!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    def to_dict(self) -> dict:
        """Float32 leaves `precision` out: its payloads, reuse keys and the gate's older workers stay as
        they were before the field existed."""
        d = dataclasses.asdict(self)
        if d["precision"] == "float32":
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)
