"""Benchmark profiles and the matrix of cells they expand to."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks import registry
from benchmarks.spec import ModelSpec, TrainConfig


@dataclass(frozen=True)
class Profile:
    name: str
    # step-time cells
    image_sizes: tuple[int, ...]
    pool_strides: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    rounds: int  # timed pytest-benchmark rounds per cell
    warmup_steps: int
    replicates: int  # independent worker processes per step cell (the uncertainty across processes)
    # accuracy cells
    accuracy_image_size: int
    accuracy_batch_size: int
    protocols: tuple[str, ...]
    augment: tuple[bool, ...]
    seeds: tuple[int, ...]
    epochs: int
    # seconds without an answer before a worker counts as hung
    cell_timeout_s: float = 900.0
    # a timed call lasts at least this long, so the harness overhead stays < 2%
    min_call_s: float = 0.05


PROFILES = {
    p.name: p
    for p in (
        # CI: <= 3 minutes on 2 cores with a cold data cache
        Profile(
            "quick",
            image_sizes=(32,),
            pool_strides=(1,),
            batch_sizes=(32,),
            rounds=5,
            warmup_steps=3,
            replicates=1,
            accuracy_image_size=32,
            accuracy_batch_size=32,
            protocols=("original",),
            augment=(False,),
            seeds=(0,),
            epochs=1,
            cell_timeout_s=300,
        ),
        # the main job: <= 15 minutes on 2 cores
        Profile(
            "default",
            image_sizes=(64,),
            pool_strides=(1, 2),
            batch_sizes=(32,),
            rounds=6,
            warmup_steps=3,
            replicates=3,
            accuracy_image_size=64,
            accuracy_batch_size=32,
            protocols=("original", "resplit"),
            augment=(False,),
            seeds=(0,),
            epochs=4,
        ),
        # GPUs: the origin's 300x300, both pool strides, batches 32..256
        Profile(
            "full",
            image_sizes=(300,),
            pool_strides=(1, 2),
            batch_sizes=(32, 64, 128, 256),
            rounds=20,
            warmup_steps=5,
            replicates=2,
            accuracy_image_size=64,
            accuracy_batch_size=32,
            protocols=("original", "resplit"),
            augment=(False, True),
            seeds=(0, 1, 2, 3, 4),
            epochs=10,
        ),
    )
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


@dataclass(frozen=True)
class Cell:
    kind: str  # "step" | "accuracy"
    impl: str
    device: str  # "cpu" | "gpu"
    spec: ModelSpec
    train: TrainConfig
    protocol: str = "original"
    augment: bool = False
    replicate: int = 0  # which of the step cell's independent processes
    aa_copy: bool = False  # the A/A control: a second, identical copy of `impl`
    tuned: bool = False  # a copy of `impl` run with the harness's TUNED_ENV (opt-in; the defaults stay the headline)

    @property
    def series(self) -> str:
        """The name this cell's figures are compared under (the A/A and tuned copies are series of their own)."""
        return f"{self.impl}~aa" if self.aa_copy else f"{self.impl}~tuned" if self.tuned else self.impl

    @property
    def id(self) -> str:
        base = f"{self.series}-{self.device}-s{self.spec.image_size}-p{self.spec.pool_stride}-b{self.train.batch_size}"
        if self.kind == "step":  # replicate 0 keeps the name it had before replicates existed
            return f"step-{base}" + (f"-r{self.replicate}" if self.replicate else "")
        return f"acc-{base}-{self.protocol}-{'aug' if self.augment else 'noaug'}"


def cells(p: Profile, impls=registry.NAMES, devices=("cpu",), aa: str | None = None,
          tuned: str | None = None) -> list[Cell]:
    """The matrix; `aa` adds an identical copy of that implementation's step cells (the A/A control),
    `tuned` a copy run with the tuned settings."""
    out = []
    series = ([(impl, {}) for impl in impls] + ([(aa, {"aa_copy": True})] if aa else [])
              + ([(tuned, {"tuned": True})] if tuned else []))
    for device in devices:
        for size in p.image_sizes:
            for stride in p.pool_strides:
                for bs in p.batch_sizes:
                    for r in range(p.replicates):
                        for impl, copy in series:
                            out.append(Cell("step", impl, device, ModelSpec(size, pool_stride=stride),
                                            TrainConfig(batch_size=bs), replicate=r, **copy))
        spec = ModelSpec(p.accuracy_image_size)
        train = TrainConfig(batch_size=p.accuracy_batch_size, epochs=p.epochs)
        for protocol in p.protocols:
            for augment in p.augment:
                for impl in impls:
                    out.append(Cell("accuracy", impl, device, spec, train, protocol, augment))
    return out
