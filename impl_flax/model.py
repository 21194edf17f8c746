"""The origin CNN in Flax Linen, `setup` style, built from a `ModelSpec`.

Architecture only. With the default spec this is the origin model exactly as
its code runs: `nn.Conv` pads SAME, kernels are LeCun-normal except `dense1`
(He-normal), biases are zero, and the pools use `spec.pool_stride` -- 1 for
the origin, whose `nn.max_pool(x, window_shape=(2, 2))` call passes no
`strides` and therefore pools with stride 1.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from benchmarks.spec import ModelSpec


class CNN(nn.Module):
    spec: ModelSpec = ModelSpec()
    dtype: Any = jnp.float32  # what the layers compute in; parameters stay float32

    def setup(self):
        s = self.spec
        kernel = (s.kernel_size, s.kernel_size)
        dtypes = {"dtype": self.dtype, "param_dtype": jnp.float32}
        self.conv1 = nn.Conv(features=s.filters[0], kernel_size=kernel, **dtypes)
        self.pool1 = nn.max_pool
        self.conv2 = nn.Conv(features=s.filters[1], kernel_size=kernel, **dtypes)
        self.pool2 = nn.max_pool
        self.dense1 = nn.Dense(features=s.dense_units, kernel_init=nn.initializers.he_normal(), **dtypes)
        self.dense2 = nn.Dense(features=s.num_classes, **dtypes)

    def __call__(self, x_BHWC):
        """Float images in [0, 1], NHWC -> logits (N, num_classes)."""
        s = self.spec
        window = (s.pool_window, s.pool_window)
        strides = (s.pool_stride, s.pool_stride)
        x = self.pool1(nn.relu(self.conv1(x_BHWC)), window_shape=window, strides=strides)
        x = self.pool2(nn.relu(self.conv2(x)), window_shape=window, strides=strides)
        x = jnp.reshape(x, (x.shape[0], -1))
        return self.dense2(nn.relu(self.dense1(x)))
