"""Names -> implementations: the one list the rest of xfbench derives from.

An entry is a framework's implementation slot: its name, runtime and packages. Which class fills
it for each model is the workload's (`benchmarks.workloads`). Adding an implementation is one
module plus one `Entry` line here and a line in each workload it implements (see the README's
"Adding an implementation"). The harness, parity, the gate, the code fingerprint and the version
list all read this table.

Each entry is loaded lazily: Keras fixes its backend at import, so a process
may import only the entries of one backend (the harness uses one process per
cell). `load(name)` sets KERAS_BACKEND before importing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass

from benchmarks import workloads

# the implementation whose initial weights every other one starts from (paired mode, parity)
REFERENCE = "flax"


@dataclass(frozen=True)
class Entry:
    name: str
    backend: str  # "jax" or "tensorflow": the runtime (benchmarks.runtimes) it runs on
    packages: tuple[str, ...]  # distributions whose versions go beside its figures
    keras_backend: str | None = None  # set for Keras entries: KERAS_BACKEND to export

    def targets(self) -> dict[str, str]:
        """Workload -> the "module:Class" implementing it (a subclass of benchmarks.contract.Implementation)."""
        return {w.name: w.impls[self.name] for w in workloads.all_workloads().values() if self.name in w.impls}

    @property
    def code_packages(self) -> set[str]:
        """The repository's top-level folders holding its code, over the built-in workloads (part of the
        code fingerprint; an installed package's code enters it through its workload)."""
        return {w.impls[self.name].split(".")[0] for w in workloads.BUILT_IN.values() if self.name in w.impls}


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

IMPLEMENTATION_GROUP = "xfbench.implementations"


def _installed() -> list[Entry]:
    """The framework slots installed packages register (each entry point names an `Entry`)."""
    out = []
    for ep in importlib.metadata.entry_points(group=IMPLEMENTATION_GROUP):
        try:
            e = ep.load()
        except Exception as exc:  # noqa: BLE001 -- a broken package must not take xfbench down; say which
            warnings.warn(f"xfbench: the {IMPLEMENTATION_GROUP} entry point {ep.name} = {ep.value} cannot be "
                          f"loaded ({type(exc).__name__}: {exc}); it is left out")
            continue
        if isinstance(e, Entry):
            out.append(e)
        else:
            warnings.warn(f"xfbench: the {IMPLEMENTATION_GROUP} entry point {ep.name} = {ep.value} is not a "
                          f"benchmarks.registry.Entry; it is left out")
    return out


REGISTRY = _entries(
    Entry("flax", backend="jax", packages=FLAX),
    Entry("keras-jax", backend="jax", packages=KERAS_JAX, keras_backend="jax"),
    Entry("keras-tf", backend="tensorflow", packages=KERAS_TF, keras_backend="tensorflow"),
    Entry("flax-nnx", backend="jax", packages=FLAX),
    *_installed(),
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
    return sorted(set().union(*(e.code_packages for e in REGISTRY.values())))


def packages() -> list[str]:
    """Distributions of every registered implementation, in first-seen order."""
    return list(dict.fromkeys(p for e in REGISTRY.values() for p in e.packages))


def missing(name: str) -> list[str]:
    """The packages of the implementation that this environment lacks (keras-tf where TensorFlow is not
    installed, as on the GPU image): it cannot run here."""
    return [p for p in entry(name).packages if importlib.util.find_spec(p) is None]


def load(name: str, workload: str = workloads.ORIGIN):
    """Import and return the class implementing `workload` for `name` (sets KERAS_BACKEND first)."""
    e = entry(name)
    w = workloads.get(workload)
    if name not in w.impls:
        raise ValueError(f"the {workload} workload has no {name} implementation; it has: {', '.join(w.impls)}")
    if e.keras_backend:
        current = os.environ.get("KERAS_BACKEND")
        if "keras" in sys.modules and current not in (None, e.keras_backend):
            raise RuntimeError(
                f"{name} needs KERAS_BACKEND={e.keras_backend}, but keras is already "
                f"imported with {current}; run it in its own process"
            )
        os.environ["KERAS_BACKEND"] = e.keras_backend
    module, cls = w.impls[name].split(":")
    return getattr(importlib.import_module(module), cls)


def reference_weights(spec, seed: int, workload: str = workloads.ORIGIN) -> dict:
    """The reference implementation's initial weights for (spec, seed), made on the CPU.

    Call it in a process that may import the reference's framework (not a
    TensorFlow worker): `benchmarks.weights` writes them to a file for those.
    """
    from benchmarks.spec import TrainConfig

    return load(REFERENCE, workload)(REFERENCE, spec, TrainConfig(), seed, device="cpu").get_weights()
