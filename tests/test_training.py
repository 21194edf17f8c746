"""The framework-neutral training loop, on a tiny learnable numpy dataset (no files needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import registry
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.training import NonFiniteLoss, train

SIZE = 16
SPEC = ModelSpec(image_size=SIZE, pool_stride=2)
CFG = TrainConfig(batch_size=16, epochs=2, learning_rate=3e-3)
TIMING = ("train_time_s", "eval_time_s")


def tiny_dataset(seed: int = 0):
    """Class 1 images are brighter: learnable in a couple of epochs. 70 test images: a short last batch."""
    rng = np.random.default_rng(seed)
    n = 64 + 70
    y = rng.integers(0, 2, n).astype(np.int32)
    x = (rng.integers(0, 100, (n, SIZE, SIZE, 3)) + 100 * y[:, None, None, None]).astype(np.uint8)
    return SimpleNamespace(x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:],
                           image_size=SIZE, fingerprint="tiny")


def strip(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def check_result(r, epochs=2):
    assert len(r["history"]) == epochs
    for row in r["history"]:
        assert np.isfinite(row["train_loss"]) and np.isfinite(row["test_loss"])
        assert 0 <= row["train_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert row["steps"] == 4


PROBE = r"""
import json, sys
import numpy as np
from types import SimpleNamespace
from benchmarks import registry
from benchmarks.spec import ModelSpec, TrainConfig
from benchmarks.training import train, NonFiniteLoss
name, args = sys.argv[1], json.loads(sys.argv[2])
d = np.load(args["data"])
ds = SimpleNamespace(**{k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}, fingerprint="tiny")
initial = {k[2:]: d[k] for k in d.files if k.startswith("w:")}
spec, cfg = ModelSpec.from_dict(args["spec"]), TrainConfig.from_dict(args["cfg"])
cls = registry.load(name)
out = {"runs": []}
for _ in range(2):
    impl = cls(name, spec, cfg, seed=0)
    r = train(impl, ds, cfg, epochs=2, seed=0, initial_weights=initial, log=None)
    w = impl.get_weights()
    r["changed"] = all(not np.array_equal(w[k], initial[k]) for k in w if k.endswith("kernel"))
    r["trace_count"] = impl.trace_count()
    out["runs"].append(r)
bad = {k: v.copy() for k, v in initial.items()}
bad["dense2/bias"][:] = np.nan
try:  # the same instance: no second compile
    train(impl, ds, cfg, epochs=1, seed=0, initial_weights=bad, log=None)
    out["nan_error"] = None
except NonFiniteLoss as e:
    out["nan_error"] = str(e)
print("PROBE" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def flax_runs():
    ds = tiny_dataset()
    w0 = registry.reference_weights(SPEC, 0)
    runs = []
    for _ in range(2):
        impl = registry.load("flax")("flax", SPEC, CFG, seed=0)
        runs.append((impl, train(impl, ds, CFG, epochs=2, seed=0, initial_weights=w0, log=None)))
    return ds, w0, runs


@pytest.fixture(scope="module", params=[n for n in registry.NAMES if n != registry.REFERENCE])
def paired_runs(request, flax_runs, tmp_path_factory):
    ds, w0, _ = flax_runs
    path = tmp_path_factory.mktemp("train") / "data.npz"
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
             **{f"w:{k}": v for k, v in w0.items()})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("KERAS_BACKEND", None)
    args = json.dumps({"data": str(path), "spec": SPEC.to_dict(), "cfg": CFG.to_dict()})
    proc = subprocess.run([sys.executable, "-c", PROBE, request.param, args], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("PROBE")][-1]
    return request.param, json.loads(line[len("PROBE"):])


def test_flax_trains(flax_runs):
    ds, w0, runs = flax_runs
    impl, r = runs[0]
    check_result(r)
    assert r["paired"] and r["impl"] == "flax" and r["device"] == "cpu"
    w = impl.get_weights()
    assert all(not np.array_equal(w[k], w0[k]) for k in w if k.endswith("kernel"))
    assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]


def test_flax_same_seed_same_history(flax_runs):
    _, _, runs = flax_runs
    assert strip(runs[0][1]["history"]) == strip(runs[1][1]["history"])


def test_others_train_deterministically(paired_runs):
    name, out = paired_runs
    a, b = out["runs"]
    check_result(a)
    assert a["changed"] and a["impl"] == name
    assert strip(a["history"]) == strip(b["history"])
    assert a["trace_count"] == b["trace_count"]


def test_paired_runs_agree_across_frameworks(flax_runs, paired_runs):
    """Same initial weights, same batches, same Adam: the same training curve."""
    _, _, runs = flax_runs
    ref = runs[0][1]["history"]
    name, out = paired_runs
    for r_ref, r in zip(ref, out["runs"][0]["history"]):
        assert r["train_loss"] == pytest.approx(r_ref["train_loss"], rel=1e-4), name
        assert r["test_loss"] == pytest.approx(r_ref["test_loss"], rel=1e-4), name
        assert r["test_accuracy"] == r_ref["test_accuracy"]


def test_others_nan_raises(paired_runs):
    name, out = paired_runs
    assert out["nan_error"] and name in out["nan_error"] and "epoch 0" in out["nan_error"]


def test_flax_nan_raises_with_context():
    ds = tiny_dataset()
    w = registry.reference_weights(SPEC, 0)
    w["dense2/bias"][:] = np.nan
    impl = registry.load("flax")("flax", SPEC, CFG, seed=0)
    with pytest.raises(NonFiniteLoss, match=r"flax: non-finite training loss nan at epoch 0, step 0"):
        train(impl, ds, CFG, epochs=1, seed=0, initial_weights=w, log=None)


def test_evaluate_counts_the_short_last_batch(flax_runs):
    ds, _, runs = flax_runs
    impl = runs[0][0]
    from benchmarks.training import evaluate_split

    ev = evaluate_split(impl, ds.x_test, ds.y_test, 16)  # 70 = 4 x 16 + 6
    assert ev["count"] == 70
    logits = impl.logits(ds.x_test)
    assert ev["accuracy"] == pytest.approx(float(np.mean(logits.argmax(-1) == ds.y_test)))
