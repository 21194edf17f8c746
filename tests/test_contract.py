"""Contract tests: every implementation of every workload, through the same checks.

A new implementation or workload is covered by registering it: nothing here names one.
Each implementation runs in its own processes (Keras fixes its backend at
import): one probe of the adapter itself and one worker driven over the real
pipe, each taking every workload in turn, and its row of each workload's shared
parity run (logits and trajectory against the reference, in `conftest.py`). Each runtime module is held to the `Runtime` protocol
in a process of its own too (a TensorFlow process never imports JAX).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import synthetic_cache

from benchmarks import parity, registry, runtimes, workloads
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.worker_client import Worker

# (workload, implementation); the origin's test ids are the implementation's name alone, as they were
CASES = [(w.name, name) for w in workloads.all_workloads().values() for name in w.impls]
IDS = [name if w == workloads.ORIGIN else f"{w}-{name}" for w, name in CASES]
SPECS = {w.name: w.make_spec(16, 1) for w in workloads.all_workloads().values()}

PROBE = r"""
import json, sys
import numpy as np
from benchmarks import registry
from benchmarks.contract import Implementation
from benchmarks import workloads
from benchmarks.spec import TrainConfig

def probe(name, workload, spec):
    cls = registry.load(name, workload.name)
    impl = cls(name, spec, TrainConfig(batch_size=8), seed=0)
    out = {"subclass": issubclass(cls, Implementation), "backend": impl.backend, "params": impl.num_params(),
           "state": impl.num_state(), "device": impl.device_name(), "timed_region": impl.timed_region}
    w = impl.get_weights()
    out["shapes"] = {k: list(v.shape) for k, v in w.items()}
    out["biases_zero"] = all(not np.any(v) for k, v in w.items() if k.endswith("/bias"))
    rng = np.random.default_rng(1)
    new = {k: (rng.standard_normal(v.shape) * 0.05).astype(np.float32) for k, v in w.items()}
    new.update({k: 0.5 + np.abs(v) for k, v in new.items() if k.endswith("/var")})  # a variance is positive
    impl.set_weights(new)
    back = impl.get_weights()
    out["roundtrip_exact"] = all(np.array_equal(back[k], new[k]) for k in new)
    errors = {}
    last = sorted(new)[-1]
    out["last_key"] = last
    for case, bad in (("missing", {k: v for k, v in new.items() if k != last}),
                      ("shape", {**new, last: np.zeros(3, np.float32)})):
        try:
            impl.set_weights(bad)
        except ValueError as e:
            errors[case] = str(e)
    out["errors"] = errors
    # ragged evaluation: 8 + 3 images score as 11, the same as the logits say
    x = rng.integers(0, 256, (11, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, 11).astype(np.int32)
    ev = impl.evaluate([{"image": x[:8], "label": y[:8]}, {"image": x[8:], "label": y[8:]}])
    logits = np.concatenate([impl.logits(x[:8]), impl.logits(x[8:])])
    out["eval"] = ev
    out["eval_accuracy_from_logits"] = float((logits.argmax(-1) == y).mean())
    return out

name = sys.argv[1]
out = {}
for workload_name, spec in json.loads(sys.argv[2]):
    workload = workloads.get(workload_name)
    out[workload_name] = probe(name, workload, workload.spec(spec))
print("PROBE" + json.dumps(out))
"""


# every member of a protocol, present on the runtime with the same parameters (names, kinds, defaults)
RUNTIME_CHECK = r"""
import inspect, json, sys
from benchmarks import runtimes

def parameters(fn, skip_self):
    return [(p.name, p.kind.name, repr(p.default)) for p in list(inspect.signature(fn).parameters.values())[skip_self:]]

def mismatches(protocol, provider):
    out = []
    for name in sorted({n for n in vars(protocol) if not n.startswith("_")} | set(protocol.__annotations__)):
        declared, provided = getattr(protocol, name, None), getattr(provider, name, None)
        if provided is None:
            out.append(f"{name}: missing")
        elif callable(declared) and parameters(declared, 1) != parameters(provided, 0):
            out.append(f"{name}{inspect.signature(provided)}, declared {name}{inspect.signature(declared)}")
    return out

runtime = runtimes.for_backend(sys.argv[1])
events = runtime.CompileEvents()
print("CHECK" + json.dumps(mismatches(runtimes.Runtime, runtime) + mismatches(runtimes.CompileEventLog, events)))
"""


def _probe(name: str, cases: list[str]) -> dict:
    """workload -> what the adapter says of itself, for each of `cases` (workloads), in one process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    env.pop("KERAS_BACKEND", None)
    specs = json.dumps([[w, SPECS[w].to_dict()] for w in cases])
    proc = subprocess.run([sys.executable, "-c", PROBE, name, specs], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")][-1]
    return json.loads(line[len("PROBE"):])


def _drive_worker(name: str, cases: list[str], tmp) -> dict:
    """workload -> setup, first_step, warmup, steps and finish over the real pipe, as the harness does,
    for each of `cases` in turn in one worker (as the harness's workers measure configurations)."""
    out = {}
    with Worker(tmp / f"{name}.log", registry.entry(name).keras_backend, timeout_s=600) as w:
        hello = w.call("hello")
        for workload in cases:
            out[workload] = _drive(w, workload, name, tmp) | {"hello": hello}
        # another spec in the same worker: the origin at pool stride 2 (of another workload, or not)
        stride2 = {k: v for k, v in _cell(cases[-1], name, tmp).items() if k != "workload"} | {"spec": MOVED.to_dict()}
        moved = {"moved": w.call("setup", cell=stride2), "moved_loss": w.call("steps", n=2)}
    return {workload: result | moved for workload, result in out.items()}


def _cell(workload: str, name: str, tmp) -> dict:
    spec = SPECS[workload]
    cell = {"impl": name, "device": "cpu", "spec": spec.to_dict(), "train": TrainConfig(batch_size=8).to_dict(),
            "seed": 0, "data": {"source": "synthetic", "data_dir": None, "image_size": spec.image_size,
                                "protocol": "original", "seed": 0,
                                "cache_dir": str(synthetic_cache.seeded(tmp / "cache", spec.image_size))}}
    if workload != workloads.ORIGIN:
        cell["workload"] = workload
    return cell


def _drive(w: Worker, workload: str, name: str, tmp) -> dict:
    out = {"setup": w.call("setup", cell=_cell(workload, name, tmp)), "first": w.call("first_step")}
    out["warmup"] = w.call("warmup", n=2)
    w.call("before_timing")
    out["losses"] = [w.call("steps", n=3) for _ in range(3)]
    out["finish"] = w.call("finish", flops=True, user_epoch=True)
    out["breakdown"] = w.call("breakdown", repeats=2)
    out["after_breakdown"] = w.call("steps", n=3)  # the breakdown changed nothing the step uses
    if workload in workloads.BUILT_IN:  # the gate's ops (it gates no installed workload): compile time
        out["recompile"] = w.call("recompile", n=1)  # sampled again, the self-test's extra work
        out["inject"] = w.call("inject", fraction=0.5, steps=1)
        out["injected_loss"] = w.call("steps", n=2)
    return out


MOVED = ModelSpec(image_size=16, pool_stride=2)


class _ByImplementation(dict):
    """case -> fn(name, [workload, ...], *args)[workload], run on first use for every case the session selected
    (so `-k <workload>` runs that workload's alone): one process per implementation for all its workloads,
    two implementations at a time. A failure is raised by each of its cases."""

    def __init__(self, request, fn, *args):
        super().__init__()
        self.fn, self.args = fn, args
        selected = {item.callspec.params.get("case") for item in request.session.items
                    if item.module is request.module and hasattr(item, "callspec")}
        self.todo: dict[str, list[str]] = {}
        for workload, name in CASES:
            if (workload, name) in selected:
                self.todo.setdefault(name, []).append(workload)

    def __missing__(self, case: tuple[str, str]) -> dict:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(self.fn, name, cases, *self.args) for name, cases in self.todo.items()}
            for name, future in futures.items():
                try:
                    self.update(((w, name), r) for w, r in future.result().items())
                except Exception as e:  # noqa: BLE001 -- each of its cases fails with it
                    self.update(((w, name), e) for w in self.todo[name])
        return dict.__getitem__(self, case)

    def __getitem__(self, case: tuple[str, str]) -> dict:
        value = super().__getitem__(case)
        if isinstance(value, Exception):
            raise value
        return value


@pytest.fixture(scope="module")
def probes(request):
    return _ByImplementation(request, _probe)


@pytest.fixture(scope="module")
def workers(request, tmp_path_factory):
    return _ByImplementation(request, _drive_worker, tmp_path_factory.mktemp("workers"))


@pytest.mark.parametrize("backend", runtimes.MODULES)
def test_runtime_modules_provide_the_runtime_protocol(backend):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", RUNTIME_CHECK, backend], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHECK")][-1]
    assert json.loads(line[len("CHECK"):]) == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fulfils_the_contract(probes, case):
    p = probes[case]
    assert p["subclass"] and p["backend"] == registry.entry(case[1]).backend
    assert p["device"] == "cpu" and p["timed_region"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parameter_and_state_counts(probes, parity_32, case):
    workload, name = case
    assert probes[case]["params"] == SPECS[workload].num_params
    assert probes[case]["state"] == SPECS[workload].num_state
    result = parity_32[workload]
    assert result["impls"][name]["params"] == result["expected_params"]
    assert workload != workloads.ORIGIN or result["expected_params"] == 1_848_482  # the origin at 32 px


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_weights_round_trip_in_the_neutral_layout(probes, case):
    p = probes[case]
    assert p["shapes"] == {k: list(v) for k, v in SPECS[case[0]].weight_shapes().items()}
    assert p["biases_zero"] and p["roundtrip_exact"]
    assert "weight keys differ" in p["errors"]["missing"] and p["last_key"] in p["errors"]["shape"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logits_match_the_reference(parity_32, case):
    assert parity_32[case[0]]["impls"][case[1]]["max_abs_logit_diff"] <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_short_trajectory_matches_the_reference(parity_32, case):
    result = parity_32[case[0]]
    row = result["impls"][case[1]]
    assert len(row["losses"]) == result["steps"]
    if "expected_state" not in result:
        assert row["max_rel_loss_diff"] <= 1e-5  # matched Adam: far inside the 1e-3 bound
    else:  # the first step to rounding; the drifting rest (loss, running statistics, eval logits) to its bounds
        assert row["max_rel_first_loss_diff"] <= 1e-5 and row["max_rel_first_state_diff"] <= 1e-5
        assert not [p for p in parity.violations(result) if p.startswith(case[1] + ":")]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_evaluation_counts_the_ragged_last_batch(probes, case):
    p = probes[case]
    assert p["eval"]["count"] == 11
    assert p["eval"]["accuracy"] == pytest.approx(p["eval_accuracy_from_logits"])
    assert p["eval"]["loss"] > 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_worker_protocol_and_zero_retraces(workers, case):
    workload, name = case
    w = workers[case]
    assert name in w["hello"]["impls"] and workload in w["hello"]["workloads"] and w["hello"]["protocol"] >= 1
    assert w["setup"]["params"] == SPECS[workload].num_params and w["setup"]["timed_region"]
    assert w["first"]["first_step_s"] > 0 and len(w["warmup"]) == 2
    assert all(isinstance(v, float) and v == v for v in w["losses"])
    fin = w["finish"]
    assert fin["recompiles"] == 0, f"{name} recompiled during the timed steps"
    assert len(fin["inner_call_s"]) == 3 and fin["rss_growth_bytes"] is not None
    # memory labelled with what it spans: the framework's footprint apart from training's, the peak a lifetime
    # one, each given by the process's first configuration only (later ones would count an earlier model)
    assert "lifetime" in fin["memory_source"] and fin["peak_spans_timed_steps_only"] is False
    lifetime = (fin["peak_memory_bytes"], fin["framework_rss_bytes"], fin["training_rss_bytes"])
    if fin["cells_before_in_process"] == 0:
        assert lifetime[0] > 0 and lifetime[1] > 100 * 2**20 and lifetime[2] > 0
    else:
        assert lifetime == (None, None, None)
    assert w["setup"]["threads"]["cpu_affinity"] >= 1


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_step_taken_apart(workers, case):
    """The breakdown times forward, forward + backward and the update, each compiled on its own; the
    worker trains on afterwards."""
    w = workers[case]
    assert set(w["breakdown"]) == {"forward_s", "forward_backward_s", "update_s"}
    assert all(v > 0 for v in w["breakdown"].values()), w["breakdown"]
    assert math.isfinite(w["after_breakdown"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_epoch_as_users_run_it(workers, case):
    """fit_epoch over host arrays: Keras's model.fit, the others' one-step-per-batch loop."""
    fin = workers[case]["finish"]
    assert fin["user_epoch_s"] > 0 and fin["user_images_per_s"] > 0 and fin["user_loop"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compile_time_sampled_again_and_the_gate_ops(workers, case):
    """forget_compiled makes the next step compile for real, in every framework; the self-test's
    injected work leaves the step's result alone (in every workload the gate can gate); a worker moves to
    another spec (of another workload)."""
    w = workers[case]
    if case[0] in workloads.BUILT_IN:
        assert w["recompile"]["compiles"] >= 1 and w["recompile"]["compile_s"][0] > 0
        assert w["inject"]["work_units_per_step"] >= 1 and math.isfinite(w["inject"]["injected_fraction"])
        assert math.isfinite(w["injected_loss"])
    assert w["moved"]["params"] == MOVED.num_params != SPECS[case[0]].num_params
    assert math.isfinite(w["moved_loss"])
