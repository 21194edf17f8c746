"""The benchmark matrix: `pytest --benchmark-only [--xf-profile quick|default|full]`.

Each cell runs in a fresh worker process (see worker.py); a step cell runs in
`replicates` of them, in a seeded random order. pytest-benchmark times each call to
the worker (round trip included), which runs `steps_per_call` training steps on
a batch already on the device and synchronises the last one: the same number for
every implementation and process of a configuration, at least 2 (`Session.steps_per_call`).
Its statistics are then turned into those of one step (call / steps_per_call), so
everything it prints and saves is per step, and the saved `iterations` is
`steps_per_call`, as pytest-benchmark's own convention has it: each round is one
call of that many steps, each datum its mean step.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import record
from benchmarks.harness import (
    FASTEST_MARGIN, MAX_OVERHEAD, accuracy_figures, per_step, replay_rounds, step_figures, warm_up,
)
from benchmarks.profiles import Cell, parity_cell_id, parity_spec

PARITY_S = 60.0  # what a parity check takes at most so far (4 worker processes, 64 px): the deadline's estimate


@pytest.fixture(autouse=True)
def _benchmarks_enabled(benchmark):
    if benchmark.disabled:
        pytest.skip("benchmarks are disabled (--benchmark-disable): nothing to measure")


def test_step(benchmark, xf, step_cell: Cell):
    cell, p = step_cell, xf.profile
    benchmark.group = (("" if cell.workload == "origin" else f"{cell.workload} ") + f"step {cell.device} "
                       f"{cell.spec.image_size}px {cell.spec.variant} batch{cell.train.batch_size} {cell.train.precision}")
    info = xf.base_info(cell)
    info["cell_key"] = key = xf.cell_key(cell)
    if key in xf.resumable:
        run_id, prev = xf.resumable[key]
        replay_rounds(benchmark, prev["stats"]["data"], prev["stats"].get("iterations", 1))
        info.update(prev["extra_info"], reused_from=run_id)
        xf.say(f"{cell.id}: unchanged, reusing what interrupted run {run_id} measured")
        benchmark.extra_info.update(info)
        xf.record(cell, info, stats=prev["stats"])
        return
    xf.start(cell, info)
    rate = xf.matmul_rate(cell.device)
    with xf.worker(cell, info) as w:
        setup = w.call("setup", cell=xf.payload(cell))
        first = w.call("first_step")
        steady, rtt = warm_up(w, p.warmup_steps)
        steps_per_call = xf.steps_per_call(cell, steady, rtt)
        w.call("before_timing")
        xf.say(
            f"{cell.id}: first step {first['first_step_s']:.2f} s, steady ~{steady * 1e3:.1f} ms, "
            f"round trip {rtt * 1e3:.2f} ms; timing {p.rounds} x {steps_per_call} steps"
        )
        loss = benchmark.pedantic(w.call, args=("steps",), kwargs={"n": steps_per_call}, rounds=p.rounds, iterations=1)
        outer = list(benchmark.stats.stats.data)  # the timed calls, round trip included
        # the epoch as users run it in every process; XLA's FLOP count and the step taken apart once per
        # configuration; none for the A/A and tuned copies, which are there for their step time
        once = cell.replicate == 0 and not cell.is_copy
        fin = w.call("finish", flops=once, user_epoch=not cell.is_copy)
        if once:
            fin["breakdown"] = w.call("breakdown", repeats=3)
    stats = per_step(benchmark.stats.stats, steps_per_call)
    benchmark.stats.iterations = steps_per_call
    info.update(step_figures(cell, stats, outer, steps_per_call, first, fin, setup, rate), round_trip_s=rtt)
    info["warmup_steps"] = 1 + p.warmup_steps
    warnings = []
    if info["harness_overhead"] > MAX_OVERHEAD:
        warnings.append(f"harness overhead {info['harness_overhead']:.1%} exceeds {MAX_OVERHEAD:.0%} "
                        f"(round trip {rtt * 1e3:.2f} ms): the machine was busy; the step time may read high")
    if stats.median * steps_per_call < p.min_call_s:
        warnings.append(f"a timed call lasted {stats.median * steps_per_call * 1e3:.0f} ms, under the "
                        f"{p.min_call_s * 1e3:.0f} ms aimed for: this configuration's first cell was more than "
                        f"{FASTEST_MARGIN:g}x slower than this one")
    if warnings:
        info["warnings"] = warnings
        for w in warnings:
            xf.say(f"{cell.id}: warning: {w}")
    bad = [] if math.isfinite(loss) else [f"non-finite loss {loss}"]
    if info["recompiles"]:
        bad.append(f"{info['recompiles']} recompilation(s) during the timed steps")
    benchmark.extra_info.update(info)
    xf.record(cell, info, "failed" if bad else "ok", "; ".join(bad) or None,
              dict(stats.as_dict(), data=list(stats.data), iterations=steps_per_call))
    assert not bad, f"{cell.id}: {'; '.join(bad)}"


def test_accuracy(benchmark, xf, accuracy_cell: Cell):
    cell, p = accuracy_cell, xf.profile
    info = xf.base_info(cell)
    info.update(protocol=cell.protocol, augment=cell.augment)
    info["cell_key"] = key = xf.cell_key(cell)
    cached = xf.cached_figures(key)
    if cached is not None:
        # unchanged code, data, spec and config: report the stored figures, time only the lookup
        benchmark.group = "accuracy (from cache: timing is the cache lookup)"
        benchmark.pedantic(xf.cached_figures, args=(key,), rounds=1, iterations=1)
        info.update(cached, from_cache=True)
        xf.say(f"{cell.id}: unchanged since a previous run, reusing its accuracy (cache {key})")
    else:
        xf.start(cell, info)
        benchmark.group = "accuracy (one training run per round)"
        seeds = iter(p.seeds)
        runs = []
        with xf.worker(cell, info) as w:
            device = w.call("setup", cell=xf.payload(cell))["device"]  # named as the step cells name it

            def train_next_seed():
                seed = next(seeds)  # paired mode: every implementation starts from the reference's weights
                runs.append(w.call("train", seed=seed, epochs=p.epochs, augment=cell.augment,
                                   initial_weights=xf.reference_weights(cell, seed)))

            benchmark.pedantic(train_next_seed, rounds=len(p.seeds), iterations=1)
        figures = dict(accuracy_figures(runs, p.seeds, p.epochs), device=device)
        xf.store_figures(key, figures)
        info.update(figures, from_cache=False)
    benchmark.extra_info.update(info)
    xf.record(cell, info, stats=benchmark.stats.stats.as_dict())


def test_parity(benchmark, xf, parity_case: tuple[str, str]):
    """Identity of the implementations of each workload for the profile's accuracy spec, kept beside the
    timings: float32, and each other precision the step cells run at against the float32 reference."""
    from benchmarks import workloads
    from benchmarks.parity import run_parity
    from benchmarks.spec import TrainConfig

    workload, precision = parity_case
    w = workloads.get(workload)
    xf.close_worker()  # parity starts workers of its own
    if xf.past_deadline(PARITY_S):
        pytest.skip(f"parity ({workload}, {precision}) left out by --xf-deadline: about {PARITY_S:.0f} s needed")
    spec = parity_spec(xf.profile, workload)
    train = TrainConfig(precision=precision)
    impls = [i for i in xf.impls if i in w.impls]
    cell_id = parity_cell_id(xf.profile, workload, precision)
    benchmark.group = "parity"
    key = xf.key(kind="parity", spec=spec.to_dict(), impls=impls, train=train.to_dict(),
                 **({} if w.is_origin else {"workload": workload}))
    result = xf.cached_figures(key)
    if result is None:
        result = benchmark.pedantic(run_parity, args=(spec,), kwargs={"impls": tuple(impls), "train": train,
                                                                       "workload": workload},
                                    rounds=1, iterations=1)
        xf.store_figures(key, result)
    else:
        benchmark.group = "parity (from cache: timing is the cache lookup)"
        benchmark.pedantic(xf.cached_figures, args=(key,), rounds=1, iterations=1)
        xf.say(f"{cell_id}: unchanged since a previous run, reusing its parity figures")
    info = {"kind": "parity", "status": "ok", "reason": None, "parity": result,
            **({} if w.is_origin else {"workload": workload})}
    benchmark.extra_info.update(info)
    xf.run.write_cell(record.run_file(cell_id, "parity", "ok", None, benchmark.stats.stats.as_dict(), info,
                                      name=record.test_name("parity", precision if w.is_origin
                                                            else f"{workload}-{precision}")))
