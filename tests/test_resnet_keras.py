"""The Keras ResNet (impl_keras/resnet.py) on both backends, against an independent numpy forward pass
and the BatchNorm conventions its spec fixes.

Keras fixes its backend at import, so each backend runs in a subprocess of its own (both at once): it
loads the same neutral weights and batches from an .npz, and writes its logits and running statistics
to another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from benchmarks.spec import ResNetSpec
from resnet_reference import conv, forward, random_weights

SPEC = ResNetSpec(image_size=16)
BATCH, STEPS = 4, 1  # counts, layout, trajectories and the worker ops: the contract tests, for every workload
BACKENDS = ("jax", "tensorflow")

PROBE = r"""
import json, sys
import numpy as np
from benchmarks.spec import ResNetSpec, TrainConfig
from impl_keras.resnet import KerasResNetImpl

spec, inputs, out_path = ResNetSpec.from_dict(json.loads(sys.argv[1])), np.load(sys.argv[2]), sys.argv[3]
w = {k[2:]: inputs[k] for k in inputs.files if k.startswith("w:")}
batches, labels = inputs["batches"], inputs["labels"]
train = TrainConfig(batch_size=len(labels[0]))
try:
    KerasResNetImpl("r", spec, TrainConfig(precision="bf16"), seed=0)
except ValueError as e:
    bf16_error = str(e)
impl = KerasResNetImpl("r", spec, train, seed=0, device="cpu")
out = {"bf16_error": bf16_error, "backend": impl.backend}
arrays = {}
first = impl.to_device({"image": batches[0], "label": labels[0]})
impl.prepare(first)
impl.set_weights(w)
arrays["logits"] = impl.logits(inputs["eval_images"])
impl.sync(impl.train_step(first))
after = impl.get_weights()
arrays["stem_mean_1"], arrays["stem_var_1"] = after["stem/bn/mean"], after["stem/bn/var"]

# the step taken apart changes nothing: not even BatchNorm's running statistics
before = impl.get_weights()
phases = impl.phases(first)
out["phases"] = sorted(phases)
for call in phases.values():
    impl._runtime.block(call())
out["phases_change_nothing"] = all(np.array_equal(v, impl.get_weights()[k]) for k, v in before.items())
np.savez(out_path, **arrays)
print("PROBE" + json.dumps(out))
"""


# -- one subprocess per backend -----------------------------------------------------------------

def _probe(backend: str, inputs, tmp) -> tuple[dict, dict]:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    out = tmp / f"{backend}.npz"
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(SPEC.to_dict()), str(inputs), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")][-1]
    with np.load(out) as arrays:
        return json.loads(line[len("PROBE"):]), dict(arrays)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = {"w": random_weights(SPEC, rng),
            "batches": rng.integers(0, 256, (STEPS, BATCH, SPEC.image_size, SPEC.image_size, 3), dtype=np.uint8),
            "labels": rng.integers(0, SPEC.num_classes, (STEPS, BATCH)).astype(np.int32),
            "eval_images": rng.integers(0, 256, (BATCH, SPEC.image_size, SPEC.image_size, 3), dtype=np.uint8)}
    path = tmp_path_factory.mktemp("resnet") / "inputs.npz"
    np.savez(path, **{"w:" + k: v for k, v in data["w"].items()}, **{k: v for k, v in data.items() if k != "w"})
    return path, data


@pytest.fixture(scope="module")
def probes(inputs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resnet-out")
    with ThreadPoolExecutor(max_workers=len(BACKENDS)) as pool:
        futures = {b: pool.submit(_probe, b, inputs[0], tmp) for b in BACKENDS}
        return {b: f.result() for b, f in futures.items()}


# -- the checks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_and_precision(probes, backend):
    p, _ = probes[backend]
    assert p["backend"] == backend and "float32 only" in p["bf16_error"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_logits_match_numpy(probes, inputs, backend):
    _, data = inputs
    expected = forward(SPEC, data["w"], data["eval_images"])
    np.testing.assert_allclose(probes[backend][1]["logits"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_step_updates_running_stats_with_biased_batch_variance(probes, inputs, backend):
    """running = 0.9 running + 0.1 batch, from the stem conv's output with the weights before the step."""
    _, data = inputs
    w, arrays = data["w"], probes[backend][1]
    z = conv(data["batches"][0].astype(np.float64) / 255, w["stem/conv/kernel"], 1).reshape(-1, SPEC.widths[0])
    m = SPEC.bn_momentum
    np.testing.assert_allclose(arrays["stem_mean_1"], m * w["stem/bn/mean"] + (1 - m) * z.mean(0), rtol=1e-5,
                               atol=1e-6)
    expected_var = m * w["stem/bn/var"] + (1 - m) * z.var(0)
    np.testing.assert_allclose(arrays["stem_var_1"], expected_var, rtol=1e-5)
    unbiased = m * w["stem/bn/var"] + (1 - m) * z.var(0, ddof=1)
    assert np.max(np.abs(unbiased / expected_var - 1)) > 1e-5  # the check tells the two apart


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_step_taken_apart_leaves_the_running_statistics_alone(probes, backend):
    p, _ = probes[backend]
    assert p["phases"] == ["forward", "forward_backward", "update"] and p["phases_change_nothing"]
