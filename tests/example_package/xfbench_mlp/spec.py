"""The MLP's frozen spec: its framework-neutral weights and its analytic FLOPs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MLPSpec:
    image_size: int = 32
    hidden: int = 64
    num_classes: int = 2
    channels: int = 3

    variant = ""  # one architecture per image size: nothing after the size in a cell id
    num_state = 0

    @staticmethod
    def is_state(key: str) -> bool:
        return False

    @property
    def inputs(self) -> int:
        return self.image_size * self.image_size * self.channels

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Kernels (in, out), as Flax's Dense and Keras's Dense both store them."""
        return {"dense1/kernel": (self.inputs, self.hidden), "dense1/bias": (self.hidden,),
                "dense2/kernel": (self.hidden, self.num_classes), "dense2/bias": (self.num_classes,)}

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.weight_shapes().values())

    def train_flops(self, batch_size: int) -> int:
        """Forward (2 per multiply-add), both weight gradients, and dense2's input gradient."""
        dense1, dense2 = 2 * self.inputs * self.hidden, 2 * self.hidden * self.num_classes
        return batch_size * (3 * (dense1 + dense2) - dense1)

    def train_memory_bytes(self, batch_size: int) -> int:
        return 4 * (4 * self.num_params + 3 * batch_size * (self.inputs + 2 * self.hidden))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MLPSpec:
        return cls(**d)
