"""The Keras 3 twin of the origin CNN, backend-agnostic (keras.layers/initializers only).

Keras defaults differ from Flax's on all three points that matter, so each is
set explicitly: `padding="same"` (Keras: "valid"), `MaxPooling2D(strides=
spec.pool_stride)` (Keras: strides = pool size; the origin pools with stride 1)
and LeCun-normal kernels (Keras: Glorot-uniform), He-normal for `dense1`, zero
biases. Images enter as uint8 and a `Rescaling(1/255)` layer casts and scales
them inside the compiled step. Layer names match the framework-neutral weight
keys ("conv1/kernel", ...).
"""

from __future__ import annotations

import keras

from benchmarks.spec import ModelSpec

INV_255 = 1.0 / 255.0


def build_model(spec: ModelSpec, seed: int = 0, precision: str = "float32") -> keras.Sequential:
    """`precision` "bf16": every layer after the scaling under Keras's mixed_bfloat16 policy (bfloat16
    compute, float32 variables); the scaling stays float32, as Flax scales before its layers cast."""
    k = spec.kernel_size
    mixed = {"dtype": "mixed_bfloat16"} if precision == "bf16" else {}
    pool = dict(pool_size=spec.pool_window, strides=spec.pool_stride, padding="valid", **mixed)

    def init(kind: str, offset: int):
        cls = {"lecun": keras.initializers.LecunNormal, "he": keras.initializers.HeNormal}[kind]
        return cls(seed=seed * 16 + offset)

    zeros = keras.initializers.Zeros
    return keras.Sequential(
        [
            keras.Input(shape=(spec.image_size, spec.image_size, spec.channels), dtype="uint8", name="image"),
            keras.layers.Rescaling(INV_255, name="rescale"),
            keras.layers.Conv2D(spec.filters[0], k, padding="same", kernel_initializer=init("lecun", 1),
                                bias_initializer=zeros(), name="conv1", **mixed),
            keras.layers.ReLU(name="relu1", **mixed),
            keras.layers.MaxPooling2D(**pool, name="pool1"),
            keras.layers.Conv2D(spec.filters[1], k, padding="same", kernel_initializer=init("lecun", 2),
                                bias_initializer=zeros(), name="conv2", **mixed),
            keras.layers.ReLU(name="relu2", **mixed),
            keras.layers.MaxPooling2D(**pool, name="pool2"),
            keras.layers.Flatten(name="flatten", **mixed),
            keras.layers.Dense(spec.dense_units, kernel_initializer=init("he", 3),
                               bias_initializer=zeros(), name="dense1", **mixed),
            keras.layers.ReLU(name="relu3", **mixed),
            keras.layers.Dense(spec.num_classes, kernel_initializer=init("lecun", 4),
                               bias_initializer=zeros(), name="dense2", **mixed),
        ],
        name="cnn",
    )


def compile_model(model: keras.Model, train) -> keras.Model:
    """Adam and the loss as a Keras user writes them, compiled with XLA."""
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=train.learning_rate, beta_1=train.b1, beta_2=train.b2, epsilon=train.eps
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    return model
