"""The ResNet workload (`ResNetSpec`) in Flax NNX, and `FlaxNNXResNetImpl`, its adapter on the contract.

The network is the Linen `impl_flax.resnet.ResNet` layer for layer, built eagerly: the same wiring
(`unit_forward`), `nnx.Conv` without bias, SAME padding, He-normal kernels; `nnx.BatchNorm` with the spec's
momentum and epsilon and `use_fast_variance=False` (why: `impl_flax.resnet`), its running statistics
`nnx.BatchStat`s; `nnx.Linear` head (LeCun-normal, zero bias). Attributes are named by the neutral keys' parts,
so the model's pure-dict state flattens onto `ResNetSpec.weight_shapes()` one to one.

The model is built in training mode (`use_running_average=False`), the mode the step's `GraphDef` holds;
predictions merge the state into a second `GraphDef`, the same graph in evaluation mode (`nnx.view` with
`use_running_average=True`). The adapter is `impl_flax.nnx.FlaxNNXImpl`'s functional loop (split once, a jitted
step over the donated pure-dict state, `nnx.Optimizer` wrt `nnx.Param`), reused as it is: its step, phases
and loss run the ResNet unchanged, and the step returns the `BatchStat`s the forward pass updated.
"""

from __future__ import annotations

import jax
from flax import nnx

from benchmarks.spec import Conv, ResNetSpec, TrainConfig
from impl_flax.nnx import FlaxNNXImpl
from impl_flax.resnet import KERNEL_INIT, check_precision, global_average_pool, leaf, stages, unit_forward


class Unit(nnx.Module):
    """The stem or one basic block: each conv and its BatchNorm an attribute named as in the neutral keys."""

    def __init__(self, spec: ResNetSpec, convs: tuple[Conv, ...], *, rngs: nnx.Rngs):
        self.convs = convs
        for c in convs:
            setattr(self, leaf(c.name), nnx.Conv(c.cin, c.cout, (c.kernel, c.kernel), strides=c.stride, padding="SAME",
                                                 use_bias=False, kernel_init=KERNEL_INIT, rngs=rngs))
            setattr(self, leaf(c.bn), nnx.BatchNorm(c.cout, use_running_average=False, momentum=spec.bn_momentum,
                                                    epsilon=spec.bn_epsilon, use_fast_variance=False, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        return unit_forward(self.convs, lambda c, x: getattr(self, leaf(c.bn))(getattr(self, leaf(c.name))(x)), x)


class Stage(nnx.Module):
    def __init__(self, spec: ResNetSpec, blocks: tuple[tuple[str, tuple[Conv, ...]], ...], *, rngs: nnx.Rngs):
        self.order = tuple(name for name, _ in blocks)
        for name, convs in blocks:
            setattr(self, name, Unit(spec, convs, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for name in self.order:
            x = getattr(self, name)(x)
        return x


class ResNet(nnx.Module):
    """`__call__` takes float images in [0, 1], NHWC, and returns logits; the mode is BatchNorm's
    `use_running_average` (training at construction)."""

    def __init__(self, spec: ResNetSpec, *, rngs: nnx.Rngs):
        self.stem = Unit(spec, spec.convs()[:1], rngs=rngs)
        self.order = tuple(stages(spec))
        for name, blocks in stages(spec).items():
            setattr(self, name, Stage(spec, blocks, rngs=rngs))
        self.head = nnx.Linear(spec.widths[-1], spec.num_classes, rngs=rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        x = self.stem(x_BHWC)
        for name in self.order:
            x = getattr(self, name)(x)
        return self.head(global_average_pool(x))


class FlaxNNXResNetImpl(FlaxNNXImpl):
    timed_region = ("one jax.jit-ed train step (forward in training mode, backward, Adam update of the nnx.Params "
                    "via nnx.Optimizer, BatchNorm's BatchStats replaced, the NNX graph merged only at trace time; "
                    "the loss out, no accuracy) on a batch already on the device; the donated state is replaced "
                    "by the new one, nothing else per step")

    def __init__(self, name: str, spec: ResNetSpec, train: TrainConfig, seed: int, device: str = "cpu"):
        check_precision(train)
        super().__init__(name, spec, train, seed, device)

    def _model(self, rngs: nnx.Rngs) -> nnx.Module:
        return ResNet(self.spec, rngs=rngs)

    def _predict_graphdef(self) -> nnx.GraphDef:
        """The same graph with BatchNorm in evaluation mode (running averages)."""
        return nnx.graphdef(nnx.view(nnx.merge(self._graphdef, self._state), use_running_average=True))
