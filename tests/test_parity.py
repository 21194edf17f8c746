"""Proof of identity: same weights -> same logits; same weights, batches, Adam -> same losses."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from benchmarks import parity
from benchmarks.registry import NAMES, REFERENCE
from benchmarks.spec import ModelSpec, TrainConfig


def test_all_impls_reported(parity_32):
    assert list(parity_32["origin"]["impls"]) == list(NAMES)
    assert parity_32["origin"]["spec"]["image_size"] == 32
    assert parity.violations(parity_32["origin"]) == []


def test_native_adam_drift_is_real_and_reported(parity_32):
    """optax.adam (eps after bias correction) drifts from Keras Adam; the matched form does not."""
    ref = parity_32["origin"]["impls"][REFERENCE]
    drift = ref["native_adam_max_rel_loss_diff"]
    matched = max(parity_32["origin"]["impls"][n]["max_rel_loss_diff"] for n in NAMES)
    assert drift > 1e-5
    assert drift > 10 * matched
    assert set(ref["native_adam_vs"]) == set(NAMES) - {REFERENCE}


def test_violations_are_detected(parity_32):
    bad = json.loads(json.dumps(parity_32["origin"]))
    bad["impls"]["keras-tf"]["max_abs_logit_diff"] = 1.0
    bad["impls"]["keras-jax"]["params"] = 5
    problems = parity.violations(bad)
    assert any("keras-tf" in p and "logit" in p for p in problems)
    assert any("keras-jax" in p and "parameters" in p for p in problems)


def test_cli_json_is_one_object(capsys):
    p = argparse.ArgumentParser()
    parity.add_arguments(p)
    args = p.parse_args(["--image-size", "16", "--pool-stride", "2", "--steps", "2", "--batch-size", "4",
                         "--impls", "flax", "--json"])
    assert parity.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spec"]["pool_stride"] == 2
    assert out["impls"]["flax"]["params"] == ModelSpec(image_size=16, pool_stride=2).num_params
    assert {"params", "max_abs_logit_diff", "max_rel_loss_diff"} <= set(out["impls"]["flax"])


def test_unknown_impl_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown implementation 'nope'"):
        parity.run_parity(ModelSpec(image_size=16), impls=["flax", "nope"])


# -- the Adam formulations, in process ---------------------------------------------------------

def _run_tx(tx, grads_seq, p0):
    import jax.numpy as jnp
    import optax

    p = {"w": jnp.asarray(p0)}
    state = tx.init(p)
    for g in grads_seq:
        u, state = tx.update({"w": jnp.asarray(g)}, state, p)
        p = optax.apply_updates(p, u)
    return np.asarray(p["w"])


def _numpy_keras_adam(grads_seq, p0, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
    """keras.optimizers.Adam.update_step, transcribed."""
    p, m, v = p0.astype(np.float64), np.zeros_like(p0, np.float64), np.zeros_like(p0, np.float64)
    for t, g in enumerate(grads_seq, start=1):
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        p -= m * alpha / (np.sqrt(v) + eps)
    return p


def test_keras_adam_form_matches_keras_formula_and_differs_from_optax():
    import optax

    from impl_flax.common import keras_adam, make_optimizer

    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(64).astype(np.float32)
    # small gradients, where the placement of epsilon matters
    grads = [(rng.standard_normal(64) * 1e-6).astype(np.float32) for _ in range(5)]
    ours = _run_tx(keras_adam(1e-3, eps=1e-7), grads, p0)
    ref = _numpy_keras_adam(grads, p0)
    native = _run_tx(optax.adam(1e-3, eps=1e-7), grads, p0)
    assert np.max(np.abs(ours - ref)) < 1e-6
    assert np.max(np.abs(native - ref)) > 1e-5  # optax's native form really is different
    cfg = TrainConfig()
    assert np.array_equal(_run_tx(make_optimizer(cfg), grads, p0), ours)
    optax_cfg = TrainConfig(adam_form="optax")
    assert np.array_equal(_run_tx(make_optimizer(optax_cfg), grads, p0), native)


# -- bf16 against the float32 reference -------------------------------------------------------------

@pytest.fixture(scope="module")
def parity_bf16():
    """Every implementation in bfloat16 (float32 parameters, loss and Adam) against flax in float32."""
    return parity.run_parity(ModelSpec(image_size=32), steps=4, batch_size=8, seed=0,
                             train=TrainConfig(precision="bf16"))


def test_bf16_stays_within_its_stated_tolerance_of_float32(parity_bf16, parity_32):
    """bf16 logits within 0.1 of the float32 reference's; bf16 trajectories within 5% of flax's in bf16."""
    assert parity_bf16["precision"] == "bf16" and parity_bf16["reference_precision"] == "float32"
    assert list(parity_bf16["impls"]) == list(NAMES)  # flax too, in bf16
    assert parity.violations(parity_bf16) == []
    for name, row in parity_bf16["impls"].items():
        # bf16 is really in effect: every implementation moved off the float32 logits by far more
        # than the float32 twins differ from each other, and its losses off the float32 ones
        assert row["max_abs_logit_diff"] > 100 * max(parity_32["origin"]["impls"][name]["max_abs_logit_diff"], 1e-7), name
        assert row["float32_max_rel_loss_diff"] > 1e-4, name
    # and a real model error would not pass: the float32 bounds are far tighter than bf16's
    assert parity.bounds("bf16")["max_abs_logit_diff"] > 1000 * parity.bounds("float32")["max_abs_logit_diff"]


def test_a_model_with_state_is_held_to_its_first_step_and_its_trajectory(parity_32):
    """resnet: counts, the first step to rounding, the drifting trajectory to its bound, which stands above
    the reference's own drift one ulp off (measured in the same run)."""
    result = parity_32["resnet"]
    assert parity.violations(result) == [] and result["expected_state"] == 672
    floor = result["noise_floor"]
    assert all(0 <= floor[k] < result["bounds"][k] for k in floor)
    bad = json.loads(json.dumps(result))
    bad["impls"]["keras-jax"]["state"] = 336
    bad["impls"]["keras-tf"]["max_rel_first_state_diff"] = 0.05  # e.g. a momentum of 0.99 for 0.9
    bad["impls"]["flax-nnx"]["max_abs_trained_logit_diff"] = 0.5
    problems = parity.violations(bad)
    assert any(p.startswith("keras-jax:") and "state values" in p for p in problems)
    assert any(p.startswith("keras-tf:") and "first step" in p for p in problems)
    assert any(p.startswith("flax-nnx:") and "after the trajectory" in p and "one ulp off" in p for p in problems)


def test_a_failed_reference_stops_the_workers_waiting_for_its_weights(monkeypatch):
    """The others start beside the reference and wait for its weights: when it fails, parity says which
    worker failed and why, and none is left waiting."""
    import subprocess
    import sys

    real, started = parity._start_worker, []

    def start(name, in_path, out_path, config):
        if name == REFERENCE and in_path.name == "in_ref.npz":
            return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('no weights here')"],
                                    stderr=subprocess.PIPE, text=True)
        started.append(real(name, in_path, out_path, config))
        return started[-1]

    monkeypatch.setattr(parity, "_start_worker", start)
    with pytest.raises(parity.ParityError, match=f"parity worker {REFERENCE} failed \\(exit 1\\):\nno weights here"):
        parity.run_parity(ModelSpec(16), steps=1, batch_size=4, impls=("flax", "keras-jax"))
    assert len(started) == 1 and started[0].poll() is not None
