"""The ResNet workload (`ResNetSpec`) in Keras 3, on either backend, on `KerasImpl`'s train loop.

BatchNorm is set as the spec fixes it: Keras's `momentum` means running = momentum * running +
(1 - momentum) * batch, as the spec's 0.9 does, and the running variance takes the biased batch
variance (`ops.moments`); epsilon is set to the spec's 1e-5 (Keras's default is 1e-3). Convs pad
"same" without bias. Initialisers, each seeded: He-normal conv kernels (ReLU networks), LeCun-normal
head kernel, zero head bias; BatchNorm keeps Keras's scale 1, bias 0, mean 0, variance 1 (Flax's too).

Keras layer names cannot hold "/": layer "stage2.block1.conv1" holds "stage2/block1/conv1/kernel".
"""

from __future__ import annotations

import math

import keras

from benchmarks.spec import Conv, ResNetSpec, TrainConfig
from impl_keras.impl import KerasImpl
from impl_keras.model import INV_255

# neutral BatchNorm key -> Keras attribute
BN_ATTRS = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}


def layer_name(path: str) -> str:
    """"stage2/block1/conv1" -> "stage2.block1.conv1"."""
    return path.replace("/", ".")


def build_resnet(spec: ResNetSpec, seed: int = 0) -> keras.Model:
    convs = {c.name: c for c in spec.convs()}
    seeds = {name: seed * 1024 + i for i, name in enumerate([*convs, "head"])}

    def conv_bn(x, c: Conv):
        x = keras.layers.Conv2D(c.cout, c.kernel, strides=c.stride, padding="same", use_bias=False,
                                kernel_initializer=keras.initializers.HeNormal(seed=seeds[c.name]),
                                name=layer_name(c.name))(x)
        return keras.layers.BatchNormalization(momentum=spec.bn_momentum, epsilon=spec.bn_epsilon,
                                               name=layer_name(c.bn))(x)

    image = keras.Input(shape=(spec.image_size, spec.image_size, spec.channels), dtype="uint8", name="image")
    x = keras.layers.Rescaling(INV_255, name="rescale")(image)
    x = keras.layers.ReLU(name="stem.relu")(conv_bn(x, convs["stem/conv"]))
    for block in dict.fromkeys(name.rsplit("/", 1)[0] for name in convs if name != "stem/conv"):
        y = keras.layers.ReLU(name=layer_name(f"{block}/relu1"))(conv_bn(x, convs[f"{block}/conv1"]))
        y = conv_bn(y, convs[f"{block}/conv2"])
        shortcut = conv_bn(x, convs[f"{block}/proj"]) if f"{block}/proj" in convs else x
        x = keras.layers.Add(name=layer_name(f"{block}/add"))([y, shortcut])
        x = keras.layers.ReLU(name=layer_name(f"{block}/relu2"))(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(spec.num_classes, kernel_initializer=keras.initializers.LecunNormal(seed=seeds["head"]),
                                bias_initializer=keras.initializers.Zeros(), name="head")(x)
    return keras.Model(image, logits, name="resnet")


class KerasResNetImpl(KerasImpl):
    """`KerasImpl` on the ResNet workload: its model and weight names; the loop, phases and the rest as is."""

    def __init__(self, name: str, spec: ResNetSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        if train.precision != "float32":
            raise ValueError(f"the resnet workload runs in float32 only, got precision {train.precision!r}")
        super().__init__(name, spec, train, seed, device)

    def _build_model(self) -> keras.Model:
        return build_resnet(self.spec, self.seed)

    def _variable(self, key: str) -> keras.Variable:
        path, attr = key.rsplit("/", 1)
        layer = self.model.get_layer(layer_name(path))
        if isinstance(layer, keras.layers.BatchNormalization):
            attr = BN_ATTRS[attr]
        return getattr(layer, attr)

    def num_params(self) -> int:
        return sum(math.prod(v.shape) for v in self.model.trainable_weights)

    def num_state(self) -> int:
        return sum(math.prod(v.shape) for v in self.model.non_trainable_weights)
