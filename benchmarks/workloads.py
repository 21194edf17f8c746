"""Workloads: a model, its input and its implementations per framework -- what xfbench compares.

A workload names
- its frozen spec, a `Spec`: the framework-neutral weight layout (`weight_shapes`) every
  implementation loads and returns, and the analytic FLOPs of one training step (`train_flops`),
  the one count every implementation is rated by;
- its input: the dataset and the image size its accuracy and parity cells use;
- its implementations: registry name (`benchmarks.registry`: backend, packages) -> "module:Class".

"origin" is the origin CNN. Its cells, payloads and results are what they were before workloads
existed, so the step-time history across commits continues. Every other workload's cells have
their own namespace: their ids start with "<workload>." (`benchmarks.record.cell_id`).

An installed package adds workloads through the `xfbench.workloads` entry-point group: each entry
point names a `Workload` object. Its distribution's name and version, and its code, enter the reuse
keys of its cells (`benchmarks.inputs.code_fingerprint`). A new framework slot for them comes through
the `xfbench.implementations` group (`benchmarks.registry`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from benchmarks.spec import ModelSpec, ResNetSpec

ORIGIN = "origin"


class Spec(Protocol):
    """What a workload's frozen spec provides (`ModelSpec` and `ResNetSpec` are two)."""

    image_size: int
    channels: int
    num_classes: int

    @property
    def variant(self) -> str:
        """What a cell id adds after the image size to tell this spec's architectures apart ("p2"; or "")."""

    @property
    def num_params(self) -> int:
        """Trainable parameters."""

    @property
    def num_state(self) -> int:
        """Non-trainable state values (BatchNorm's running statistics); 0 for none."""

    def is_state(self, key: str) -> bool:
        """Whether the weight `key` is non-trainable state."""

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The framework-neutral weights, key -> shape, non-trainable state included."""

    def train_flops(self, batch_size: int) -> int:
        """Analytic FLOPs of one training step at `batch_size`."""

    def train_memory_bytes(self, batch_size: int) -> int:
        """A rough float32 footprint of one training step, to refuse batches that cannot fit."""

    def to_dict(self) -> dict:
        """The spec as JSON for payloads and reuse keys; `from_dict` on the class reads it back."""


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    spec_class: Any  # the Spec's class: `spec_class.from_dict(d)`
    make_spec: Callable[[int, int], Spec]  # (image size, pool stride) -> the spec; strides may not apply
    impls: dict[str, str]  # registry name -> "module:Class"
    precisions: tuple[str, ...] = ("float32", "bf16")  # what its implementations can compute in
    dataset: str = "horses_or_humans"
    image_size: int = 64  # of its accuracy and parity cells
    description: str = ""
    source: str = "built-in"  # or "<distribution> <version>" for an installed package's
    package_code: tuple[str, ...] = field(default=())  # an installed package's code: its folders

    @property
    def is_origin(self) -> bool:
        return self.name == ORIGIN

    def spec(self, d: dict) -> Spec:
        return self.spec_class.from_dict(d)

    def step_specs(self, image_sizes, pool_strides) -> list[Spec]:
        """The distinct specs of a profile's step cells (a stride that does not apply gives one spec)."""
        return list(dict.fromkeys(self.make_spec(s, p) for s in image_sizes for p in pool_strides))


ORIGIN_WORKLOAD = Workload(
    ORIGIN, "The origin CNN", ModelSpec, lambda size, stride: ModelSpec(size, pool_stride=stride),
    impls={"flax": "impl_flax.impl:FlaxImpl", "keras-jax": "impl_keras.impl:KerasImpl",
           "keras-tf": "impl_keras.impl:KerasImpl", "flax-nnx": "impl_flax.nnx:FlaxNNXImpl"},
    description="conv 3x3/16, ReLU, max-pool 2, conv 3x3/32, ReLU, max-pool 2, dense 64, ReLU, dense 2 "
                "(README, \"The origin model, and its trap\")")

RESNET_WORKLOAD = Workload(
    "resnet", "A small ResNet with BatchNorm", ResNetSpec, lambda size, stride: ResNetSpec(size),
    impls={"flax": "impl_flax.resnet:FlaxResNetImpl", "keras-jax": "impl_keras.resnet:KerasResNetImpl",
           "keras-tf": "impl_keras.resnet:KerasResNetImpl", "flax-nnx": "impl_flax.resnet_nnx:FlaxNNXResNetImpl"},
    precisions=("float32",),
    description="stem conv 3x3/16 + BatchNorm, basic blocks at widths 16/32/64 (strided 3x3 convs with "
                "projection shortcuts), global average pooling, dense 2 (`benchmarks.spec.ResNetSpec`)")

BUILT_IN = {w.name: w for w in (ORIGIN_WORKLOAD, RESNET_WORKLOAD)}


WORKLOAD_GROUP = "xfbench.workloads"


def all_workloads() -> dict[str, Workload]:
    """Every workload: the built-in ones, then those of installed packages."""
    return {**BUILT_IN, **installed()}


@functools.cache
def installed() -> dict[str, Workload]:
    """The workloads installed packages register; one that cannot be loaded is left out, with a warning
    that names its entry point and package."""
    out: dict[str, Workload] = {}
    for ep in sorted(importlib.metadata.entry_points(group=WORKLOAD_GROUP), key=lambda e: e.name):
        dist = ep.dist.metadata["Name"] if ep.dist else "an unknown distribution"
        where = f"the {WORKLOAD_GROUP} entry point {ep.name} = {ep.value} of {dist}"
        try:
            w = ep.load()
        except Exception as e:  # noqa: BLE001 -- a broken package must not take xfbench down; say which
            warnings.warn(f"xfbench: {where} cannot be loaded ({type(e).__name__}: {e}); its workload is left out")
            continue
        if not isinstance(w, Workload) or w.name in BUILT_IN or w.name in out:
            why = "is not a benchmarks.workloads.Workload" if not isinstance(w, Workload) else f"reuses the name {w.name!r}"
            warnings.warn(f"xfbench: {where} {why}; it is left out")
            continue
        top = importlib.util.find_spec(ep.module.split(".")[0])
        code = tuple(top.submodule_search_locations or [top.origin]) if top else ()
        out[w.name] = dataclasses.replace(w, source=f"{dist} {ep.dist.version if ep.dist else '?'}", package_code=code)
    return out


def get(name: str) -> Workload:
    found = all_workloads()
    try:
        return found[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose one of: {', '.join(found)}") from None


def parse(value: str, default: tuple[str, ...] = (ORIGIN,)) -> tuple[str, ...]:
    """A `--xf-workloads` / `--workloads` value: names separated by commas, or "all"; each checked."""
    if not value:
        return default
    names = tuple(all_workloads()) if value.strip() == "all" else tuple(n.strip() for n in value.split(",") if n.strip())
    for n in names:
        get(n)
    return names
