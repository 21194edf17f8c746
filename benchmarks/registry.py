"""Names -> implementations: the one list the rest of xfbench derives from.

Adding an implementation is one module plus one `Entry` line here (see the
README's "Adding an implementation"). The harness, parity, the gate, the
code fingerprint and the version list all read this table.

Each entry is loaded lazily: Keras fixes its backend at import, so a process
may import only the entries of one backend (the harness uses one process per
cell). `load(name)` sets KERAS_BACKEND before importing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

# the implementation whose initial weights every other one starts from (paired mode, parity)
REFERENCE = "flax"


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:Class", a subclass of benchmarks.contract.Implementation
    backend: str  # "jax" or "tensorflow": the runtime (benchmarks.runtimes) it runs on
    packages: tuple[str, ...]  # distributions whose versions go beside its figures
    keras_backend: str | None = None  # set for Keras entries: KERAS_BACKEND to export

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @property
    def package(self) -> str:
        """The top-level folder holding its code (part of the code fingerprint)."""
        return self.module.split(".")[0]


def _entries(*entries: Entry) -> dict[str, Entry]:
    table: dict[str, Entry] = {}
    for e in entries:
        if e.name in table:
            raise ValueError(f"duplicate implementation name {e.name!r}")
        table[e.name] = e
    return table


FLAX = ("jax", "jaxlib", "flax", "optax")
KERAS_JAX = ("keras", "jax", "jaxlib")
KERAS_TF = ("keras", "tensorflow")

REGISTRY = _entries(
    Entry("flax", "impl_flax.impl:FlaxImpl", backend="jax", packages=FLAX),
    Entry("keras-jax", "impl_keras.impl:KerasImpl", backend="jax", packages=KERAS_JAX, keras_backend="jax"),
    Entry("keras-tf", "impl_keras.impl:KerasImpl", backend="tensorflow", packages=KERAS_TF,
          keras_backend="tensorflow"),
    Entry("flax-nnx", "impl_flax.nnx:FlaxNNXImpl", backend="jax", packages=FLAX),
)

NAMES = tuple(REGISTRY)


def entry(name: str) -> Entry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown implementation {name!r}; choose one of: {', '.join(NAMES)}"
        ) from None


def code_packages() -> list[str]:
    """Top-level folders of every registered implementation's code."""
    return sorted({e.package for e in REGISTRY.values()})


def packages() -> list[str]:
    """Distributions of every registered implementation, in first-seen order."""
    return list(dict.fromkeys(p for e in REGISTRY.values() for p in e.packages))


def missing(name: str) -> list[str]:
    """The packages of the implementation that this environment lacks (keras-tf where TensorFlow is not
    installed, as on the GPU image): it cannot run here."""
    return [p for p in entry(name).packages if importlib.util.find_spec(p) is None]


def load(name: str):
    """Import and return the implementation class (sets KERAS_BACKEND first)."""
    e = entry(name)
    if e.keras_backend:
        current = os.environ.get("KERAS_BACKEND")
        if "keras" in sys.modules and current not in (None, e.keras_backend):
            raise RuntimeError(
                f"{name} needs KERAS_BACKEND={e.keras_backend}, but keras is already "
                f"imported with {current}; run it in its own process"
            )
        os.environ["KERAS_BACKEND"] = e.keras_backend
    module, cls = e.target.split(":")
    return getattr(importlib.import_module(module), cls)


def reference_weights(spec, seed: int) -> dict:
    """The reference implementation's initial weights for (spec, seed), made on the CPU.

    Call it in a process that may import the reference's framework (not a
    TensorFlow worker): `benchmarks.weights` writes them to a file for those.
    """
    from benchmarks.spec import TrainConfig

    return load(REFERENCE)(REFERENCE, spec, TrainConfig(), seed, device="cpu").get_weights()
