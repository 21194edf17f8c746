"""Contract tests: every registered implementation, through the same checks.

A new implementation is covered by registering it: nothing here names one.
Each implementation runs in its own processes (Keras fixes its backend at
import): one probe of the adapter itself, one worker driven over the real
pipe, and its row of the shared parity run (logits and trajectory against the
reference, in `conftest.py`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks import registry
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.worker_client import Worker

NAMES = registry.NAMES
SPEC = ModelSpec(image_size=16)

PROBE = r"""
import json, sys
import numpy as np
from benchmarks import registry
from benchmarks.contract import Implementation
from benchmarks.spec import ModelSpec, TrainConfig
name, spec = sys.argv[1], ModelSpec.from_dict(json.loads(sys.argv[2]))
cls = registry.load(name)
impl = cls(name, spec, TrainConfig(batch_size=8), seed=0)
out = {"subclass": issubclass(cls, Implementation), "backend": impl.backend, "params": impl.num_params(),
       "device": impl.device_name(), "timed_region": impl.timed_region}
w = impl.get_weights()
out["shapes"] = {k: list(v.shape) for k, v in w.items()}
out["biases_zero"] = all(not np.any(v) for k, v in w.items() if k.endswith("/bias"))
rng = np.random.default_rng(1)
new = {k: (rng.standard_normal(v.shape) * 0.05).astype(np.float32) for k, v in w.items()}
impl.set_weights(new)
back = impl.get_weights()
out["roundtrip_exact"] = all(np.array_equal(back[k], new[k]) for k in new)
errors = {}
for case, bad in (("missing", {k: v for k, v in new.items() if k != "dense2/bias"}),
                  ("shape", {**new, "dense2/bias": np.zeros(3, np.float32)})):
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
print("PROBE" + json.dumps(out))
"""


def _probe(name: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, name, json.dumps(SPEC.to_dict())],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")][-1]
    return json.loads(line[len("PROBE"):])


def _drive_worker(name: str, tmp) -> dict:
    """setup, first_step, warmup, steps and finish over the real pipe, as the harness does."""
    cell = {"impl": name, "device": "cpu", "spec": SPEC.to_dict(), "train": TrainConfig(batch_size=8).to_dict(),
            "seed": 0, "data": {"source": "synthetic", "data_dir": None, "image_size": SPEC.image_size,
                                "protocol": "original", "seed": 0, "cache_dir": str(tmp / "cache")}}
    with Worker(tmp / f"{name}.log", registry.entry(name).keras_backend, timeout_s=600) as w:
        out = {"hello": w.call("hello"), "setup": w.call("setup", cell=cell), "first": w.call("first_step")}
        out["warmup"] = w.call("warmup", n=2)
        w.call("before_timing")
        out["losses"] = [w.call("steps", n=3) for _ in range(3)]
        out["finish"] = w.call("finish", flops=True, user_epoch=True)
        out["breakdown"] = w.call("breakdown", repeats=2)
        out["after_breakdown"] = w.call("steps", n=3)  # the breakdown changed nothing the step uses
        # the gate's ops: compile time sampled again, the self-test's extra work, another spec in the same worker
        out["recompile"] = w.call("recompile", n=2)
        out["inject"] = w.call("inject", fraction=0.5, steps=1)
        out["injected_loss"] = w.call("steps", n=2)
        stride2 = {**cell, "spec": ModelSpec(image_size=16, pool_stride=2).to_dict()}
        out["moved"] = w.call("setup", cell=stride2)
        out["moved_loss"] = w.call("steps", n=2)
    return out


def _each(fn, *args) -> dict:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(fn, name, *args) for name in NAMES}
        return {name: f.result() for name, f in futures.items()}


@pytest.fixture(scope="module")
def probes():
    return _each(_probe)


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    return _each(_drive_worker, tmp_path_factory.mktemp("workers"))


@pytest.mark.parametrize("name", NAMES)
def test_fulfils_the_contract(probes, name):
    p = probes[name]
    assert p["subclass"] and p["backend"] == registry.entry(name).backend
    assert p["device"] == "cpu" and p["timed_region"]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(probes, parity_32, name):
    assert probes[name]["params"] == SPEC.num_params
    assert parity_32["impls"][name]["params"] == 1_848_482


@pytest.mark.parametrize("name", NAMES)
def test_weights_round_trip_in_the_neutral_layout(probes, name):
    p = probes[name]
    assert p["shapes"] == {k: list(v) for k, v in SPEC.weight_shapes().items()}
    assert p["biases_zero"] and p["roundtrip_exact"]
    assert "weight keys differ" in p["errors"]["missing"] and "dense2/bias" in p["errors"]["shape"]


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_the_reference(parity_32, name):
    assert parity_32["impls"][name]["max_abs_logit_diff"] <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_short_trajectory_matches_the_reference(parity_32, name):
    row = parity_32["impls"][name]
    assert len(row["losses"]) == parity_32["steps"]
    assert row["max_rel_loss_diff"] <= 1e-5  # matched Adam: far inside the 1e-3 bound


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_counts_the_ragged_last_batch(probes, name):
    p = probes[name]
    assert p["eval"]["count"] == 11
    assert p["eval"]["accuracy"] == pytest.approx(p["eval_accuracy_from_logits"])
    assert p["eval"]["loss"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_worker_protocol_and_zero_retraces(workers, name):
    w = workers[name]
    assert name in w["hello"]["impls"] and w["hello"]["protocol"] >= 1
    assert w["setup"]["params"] == SPEC.num_params and w["setup"]["timed_region"]
    assert w["first"]["first_step_s"] > 0 and len(w["warmup"]) == 2
    assert all(isinstance(v, float) and v == v for v in w["losses"])
    fin = w["finish"]
    assert fin["recompiles"] == 0, f"{name} recompiled during the timed steps"
    assert len(fin["inner_call_s"]) == 3 and fin["peak_memory_bytes"] > 0 and fin["rss_growth_bytes"] is not None
    # memory labelled with what it spans: the framework's footprint apart from training's, the peak a lifetime one
    assert fin["framework_rss_bytes"] > 100 * 2**20 and fin["training_rss_bytes"] > 0
    assert "lifetime" in fin["memory_source"] and fin["peak_spans_timed_steps_only"] is False
    assert w["setup"]["threads"]["cpu_affinity"] >= 1


@pytest.mark.parametrize("name", NAMES)
def test_the_step_taken_apart(workers, name):
    """The breakdown times forward, forward + backward and the update, each compiled on its own; the
    worker trains on afterwards."""
    w = workers[name]
    assert set(w["breakdown"]) == {"forward_s", "forward_backward_s", "update_s"}
    assert all(v > 0 for v in w["breakdown"].values()), w["breakdown"]
    assert math.isfinite(w["after_breakdown"])


@pytest.mark.parametrize("name", NAMES)
def test_an_epoch_as_users_run_it(workers, name):
    """fit_epoch over host arrays: Keras's model.fit, the others' one-step-per-batch loop."""
    fin = workers[name]["finish"]
    assert fin["user_epoch_s"] > 0 and fin["user_images_per_s"] > 0 and fin["user_loop"]


@pytest.mark.parametrize("name", NAMES)
def test_compile_time_sampled_again_and_the_gate_ops(workers, name):
    """forget_compiled makes the next step compile for real, in every framework; the self-test's
    injected work leaves the step's result alone; a worker moves to another spec."""
    w = workers[name]
    assert w["recompile"]["compiles"] >= 2 and all(s > 0 for s in w["recompile"]["compile_s"])
    assert w["inject"]["work_units_per_step"] >= 1 and math.isfinite(w["inject"]["injected_fraction"])
    assert math.isfinite(w["injected_loss"])
    assert w["moved"]["params"] == ModelSpec(image_size=16, pool_stride=2).num_params != SPEC.num_params
    assert math.isfinite(w["moved_loss"])
