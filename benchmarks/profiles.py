"""Benchmark profiles and the matrix of cells they expand to."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from benchmarks import record, registry, workloads
from benchmarks.spec import ORIGIN_POOL_STRIDE, ModelSpec, TrainConfig


@dataclass(frozen=True)
class StepTier:
    """Step configurations that run before the next tier's: a profile with a deadline (`--xf-deadline`)
    puts what it wants most first."""

    image_sizes: tuple[int, ...]
    pool_strides: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    replicates: int | None = None  # None: the profile's
    precisions: tuple[str, ...] | None = None  # None: the profile's


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
    # the implementation copied as the A/A control (the noise floor), where it is selected; None: no control
    aa: str | None = None
    # the step cells in priority order; empty: one tier of image_sizes x pool_strides x batch_sizes
    step_tiers: tuple[StepTier, ...] = ()
    precisions: tuple[str, ...] = ("float32",)  # of the step cells (TrainConfig.precision)
    workloads: tuple[str, ...] = (workloads.ORIGIN,)  # the models it measures (`--xf-workloads` overrides)
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
        # the main job: <= 10 minutes on 2 cores, the A/A control included
        Profile(
            "default",
            image_sizes=(64,),
            pool_strides=(1, 2),
            batch_sizes=(32,),
            rounds=5,
            warmup_steps=2,
            replicates=3,
            accuracy_image_size=64,
            accuracy_batch_size=32,
            protocols=("original", "resplit"),
            augment=(False,),
            seeds=(0,),
            epochs=2,
            aa="flax",
        ),
        # the GPU run rehearsed on a CPU (benchmarks/gpu_rehearsal.sh): every path of it, tiny shapes
        Profile(
            "rehearsal",
            image_sizes=(32,),
            pool_strides=(2,),
            batch_sizes=(16,),
            rounds=3,
            warmup_steps=2,
            replicates=2,
            accuracy_image_size=64,
            accuracy_batch_size=32,
            protocols=("original",),
            augment=(False,),
            seeds=(0,),
            epochs=1,
            cell_timeout_s=300,
        ),
        # one GPU call (benchmarks/gpu_run.sh): the most wanted first, under --xf-deadline
        Profile(
            "gpu",
            image_sizes=(300,),
            pool_strides=(2,),
            batch_sizes=(256,),
            rounds=20,
            warmup_steps=5,
            replicates=2,
            accuracy_image_size=64,
            accuracy_batch_size=32,
            protocols=("original", "resplit"),
            augment=(False,),
            seeds=(0, 1, 2),
            epochs=10,
            precisions=("float32", "bf16"),
            step_tiers=(
                StepTier((300,), (2,), (256,), replicates=3),  # the headline
                StepTier((300,), (1,), (512,), precisions=("float32",)),  # the origin spec: ~53 GiB by the analytic count
                StepTier((300,), (2,), (32,)),  # a small batch: where the frameworks' overheads show
            ),
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
            workloads=tuple(workloads.BUILT_IN),
        ),
    )
}


def tiers(p: Profile) -> tuple[StepTier, ...]:
    return p.step_tiers or (StepTier(p.image_sizes, p.pool_strides, p.batch_sizes, precisions=p.precisions),)


def step_precisions(p: Profile) -> set[str]:
    """Every precision some step cell of the profile runs at."""
    return {x for t in tiers(p) for x in (t.precisions or p.precisions)}


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
    tier: int = 0  # the profile's step tier (accuracy cells: after every tier)
    workload: str = workloads.ORIGIN  # the model: `spec` is that workload's spec

    @property
    def series(self) -> str:
        """The name this cell's figures are compared under (the A/A and tuned copies are series of their own)."""
        return record.series_id(self.impl, self.aa_copy, self.tuned)

    @property
    def is_copy(self) -> bool:
        """An A/A or tuned copy: measured for its step time only, ranked with no one."""
        return self.aa_copy or self.tuned

    @property
    def worker_key(self) -> tuple:
        """Cells with the same key share one worker process: a step cell's series and replicate measures
        every configuration in turn (`setup` again); an accuracy cell's implementation trains every protocol."""
        if self.kind == "step":
            return ("step", self.series, self.device, self.replicate, self.tier)
        return ("accuracy", self.series, self.device)

    @property
    def id(self) -> str:
        return record.cell_id(self.kind, self.series, self.device, self.spec.image_size, self.spec.variant,
                              self.train.batch_size, self.train.precision, self.replicate, self.protocol, self.augment,
                              self.workload)


def cells(p: Profile, impls=registry.NAMES, devices=("cpu",), aa: str | None = None,
          tuned: str | None = None, workload_names=(workloads.ORIGIN,)) -> list[Cell]:
    """The matrix of every workload asked for, each with the implementations it has and the precisions
    they compute in; `aa` adds an identical copy of that implementation's step cells of the origin (the
    A/A control: the harness's noise floor), `tuned` a copy run with the tuned settings."""
    out = []
    for name in workload_names:
        w = workloads.get(name)
        mine = [i for i in impls if i in w.impls]
        copies = [(aa, {"aa_copy": True})] if aa in mine and w.is_origin else []
        copies += [(tuned, {"tuned": True})] if tuned in mine and w.is_origin else []
        series = [(impl, {}) for impl in mine] + copies
        for device in devices:
            for tier, t in enumerate(tiers(p)):
                precisions = [x for x in (t.precisions or p.precisions) if x in w.precisions]
                for spec, bs, precision in itertools.product(w.step_specs(t.image_sizes, t.pool_strides),
                                                             t.batch_sizes, precisions):
                    for r in range(t.replicates or p.replicates):
                        for impl, copy in series:
                            out.append(Cell("step", impl, device, spec, TrainConfig(batch_size=bs, precision=precision),
                                            replicate=r, tier=tier, workload=name, **copy))
            spec = w.make_spec(p.accuracy_image_size, ORIGIN_POOL_STRIDE)
            train = TrainConfig(batch_size=p.accuracy_batch_size, epochs=p.epochs)
            for impl in mine:
                for protocol in p.protocols:
                    for augment in p.augment:
                        out.append(Cell("accuracy", impl, device, spec, train, protocol, augment, workload=name))
    return out


def parity_spec(p: Profile, workload_name: str):
    """The spec a profile checks `workload_name`'s identity at: its accuracy cells' (64 px at most)."""
    return workloads.get(workload_name).make_spec(min(p.accuracy_image_size, 64), ORIGIN_POOL_STRIDE)


def parity_cell_id(p: Profile, workload_name: str, precision: str) -> str:
    spec = parity_spec(p, workload_name)
    return record.parity_id(spec.image_size, spec.variant, precision, workload_name)


def aa_series(p: Profile, impls, asked: str | None) -> str | None:
    """The implementation copied as the A/A control: the one asked for ("none": no control), else the
    profile's where it is selected, else the first selected one."""
    if asked == "none" or (asked is None and p.aa is None):
        return None
    return asked or (p.aa if p.aa in impls else impls[0])


def step_order(step_cells: list[Cell], seed: int) -> list[Cell]:
    """The order the step cells run in: tier by tier; within a tier the workers (series x replicate) in
    a seeded random order, each worker's configurations consecutive (one process measures them in
    turn). Within a worker the configurations rotate by replicate from a seeded start, so each comes
    first in some process: the first is the one whose memory figures are the process's own."""
    rng = random.Random(seed)
    workers: dict[tuple, list[Cell]] = {}
    for c in step_cells:
        workers.setdefault(c.worker_key, []).append(c)
    keys = list(workers)
    rng.shuffle(keys)
    keys.sort(key=lambda k: k[4])  # stable: shuffled within each tier
    start = {s: rng.randrange(1 << 16) for s in sorted({k[1] for k in keys})}
    out = []
    for key in keys:
        group = sorted(workers[key], key=lambda c: (c.workload, c.spec.image_size, c.spec.variant, c.train.batch_size,
                                                    c.train.precision))
        turn = (start[key[1]] + key[3]) % len(group)
        out.extend(group[turn:] + group[:turn])
    return out
