"""The MLP in Keras 3 (either backend), on xfbench's Keras train loop: only the model is its own."""

from __future__ import annotations

import keras

from impl_keras.impl import KerasImpl
from impl_keras.model import INV_255


class KerasMLPImpl(KerasImpl):
    def __init__(self, name, spec, train, seed, device="cpu"):
        if train.precision != "float32":
            raise ValueError(f"the mlp workload runs in float32 only, not {train.precision}")
        super().__init__(name, spec, train, seed, device)

    def _build_model(self) -> keras.Model:
        """Layer names are the neutral keys' ("dense1/kernel"); initialisers as Flax's defaults and He-normal."""
        s = self.spec
        return keras.Sequential([
            keras.Input(shape=(s.image_size, s.image_size, s.channels), dtype="uint8", name="image"),
            keras.layers.Rescaling(INV_255, name="rescale"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(s.hidden, activation="relu", kernel_initializer=keras.initializers.HeNormal(self.seed),
                               bias_initializer="zeros", name="dense1"),
            keras.layers.Dense(s.num_classes, kernel_initializer=keras.initializers.LecunNormal(self.seed + 1),
                               bias_initializer="zeros", name="dense2"),
        ], name="mlp")
