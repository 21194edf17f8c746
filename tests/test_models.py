"""The three implementations build the same network: parameter counts, layer configs, weights.

Keras fixes its backend at import, so the Keras checks run in one subprocess per backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import registry
from benchmarks.spec import ModelSpec, TrainConfig
from impl_flax import train as impl_train

SPECS = {
    "32-origin": (ModelSpec(image_size=32), 1_848_482),
    "64-origin": (ModelSpec(image_size=64), 7_877_794),
    "32-stride2": (ModelSpec(image_size=32, pool_stride=2), 136_354),
}
KERAS = ("keras-jax", "keras-tf")

PROBE = r"""
import json, sys
import numpy as np
from benchmarks import registry
from benchmarks.spec import ModelSpec, TrainConfig
name, specs = sys.argv[1], json.loads(sys.argv[2])
cls = registry.load(name)
out = {"params": {}, "layers": {}}
for key, d in specs.items():
    if key != "32-origin":  # the model alone: counting needs no optimizer
        from impl_keras.model import build_model
        out["params"][key] = build_model(ModelSpec.from_dict(d)).count_params()
        continue
    impl = cls(name, ModelSpec.from_dict(d), TrainConfig(), seed=0)
    out["params"][key] = impl.num_params()
    if True:
        import keras
        out["backend"] = keras.backend.backend()
        out["impl_backend"] = impl.backend
        out["device"] = impl.device_name()
        out["trace_count"] = impl.trace_count()
        for layer in impl.model.layers:
            cfg = layer.get_config()
            out["layers"][layer.name] = {
                "class": type(layer).__name__,
                "padding": cfg.get("padding"),
                "strides": cfg.get("strides"),
                "pool_size": cfg.get("pool_size"),
                "kernel_initializer": (cfg.get("kernel_initializer") or {}).get("class_name"),
                "bias_initializer": (cfg.get("bias_initializer") or {}).get("class_name"),
                "scale": cfg.get("scale"),
            }
        w = impl.get_weights()
        out["bias_abs_max"] = max(float(np.abs(v).max()) for k, v in w.items() if k.endswith("/bias"))
        # the timed calls never reset the loss tracker: before_timing does, once, as fit per epoch
        rng = np.random.default_rng(0)
        batch = impl.to_device({"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                                "label": (np.arange(8) % 2).astype(np.int32)})
        impl.sync(impl.run_steps(batch, 1))

        def metric_values():
            impl._keras_backend.sync_state()
            return [float(keras.ops.convert_to_numpy(v)) for v in impl.model.metrics_variables]

        impl.before_timing()
        out["metrics_after_reset"] = metric_values()
        for _ in range(2):
            impl.sync(impl.run_steps(batch, 2))
        out["metrics_after_two_calls"] = metric_values()
print("PROBE" + json.dumps(out))
"""


def run_probe(script: str, *args: str, timeout: float = 300) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("PROBE")][-1]
    return json.loads(line[len("PROBE"):])


@pytest.fixture(scope="module", params=KERAS)
def keras_probe(request):
    specs = {k: s.to_dict() for k, (s, _) in SPECS.items()}
    return request.param, run_probe(PROBE, request.param, json.dumps(specs))


# -- flax, in process -------------------------------------------------------------------------

@pytest.mark.parametrize("key", SPECS)
def test_flax_param_counts(key):
    spec, expected = SPECS[key]
    assert spec.num_params == expected
    if key == "32-origin":
        impl = registry.load("flax")("flax", spec, TrainConfig(), seed=0)
        assert impl.num_params() == expected
    else:  # the architecture alone, without compiling an init
        import jax

        from impl_flax.train import init_params

        shapes = jax.eval_shape(lambda: init_params(spec, 0))
        assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == expected


def test_flax_initializers_match_origin():
    """dense1 is He-normal (std sqrt(2/fan_in)), the others LeCun-normal (sqrt(1/fan_in))."""
    spec = ModelSpec(image_size=32, pool_stride=2)
    w = registry.load("flax")("flax", spec, TrainConfig(), seed=0).get_weights()
    fan_in = {"conv2/kernel": 3 * 3 * 16, "dense1/kernel": spec.flat_features}
    assert np.std(w["conv2/kernel"]) == pytest.approx(np.sqrt(1 / fan_in["conv2/kernel"]), rel=0.1)
    assert np.std(w["dense1/kernel"]) == pytest.approx(np.sqrt(2 / fan_in["dense1/kernel"]), rel=0.1)


def test_flax_pool_stride_follows_spec():
    import jax
    import jax.numpy as jnp

    from impl_flax.model import CNN

    for stride in (1, 2):
        spec = ModelSpec(image_size=16, pool_stride=stride)
        cnn = CNN(spec)
        x = jnp.zeros((2, 16, 16, 3))
        variables = jax.eval_shape(cnn.init, jax.random.PRNGKey(0), x)
        assert variables["params"]["dense1"]["kernel"].shape[0] == spec.flat_features
        assert jax.eval_shape(cnn.apply, variables, x).shape == (2, 2)


def test_flax_timed_steps_compute_no_accuracy():
    """Equal work: neither Flax step computes an argmax accuracy, which Keras's step does not."""
    import jax

    spec = ModelSpec(image_size=16)
    rng = np.random.default_rng(0)
    host = {"image": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8), "label": np.arange(4, dtype=np.int32) % 2}
    for name in ("flax", "flax-nnx"):
        impl = registry.load(name)(name, spec, TrainConfig(batch_size=4), seed=0)
        step, state = (impl._step, impl._state) if name == "flax-nnx" else (impl_train.train_step, impl.state)
        jaxpr = str(jax.make_jaxpr(step)(state, impl.to_device(host)))
        assert "dot_general" in jaxpr and "argmax" not in jaxpr and "argmin" not in jaxpr, name


def test_flax_one_step_and_flops():
    spec = ModelSpec(image_size=16)
    impl = registry.load("flax")("flax", spec, TrainConfig(), seed=0)
    rng = np.random.default_rng(0)
    batch = impl.to_device({"image": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
                            "label": np.array([0, 1, 0, 1], np.int32)})
    before = impl.get_weights()
    loss = impl.sync(impl.train_step(batch))
    assert np.isfinite(loss) and loss > 0
    assert any(not np.array_equal(before[k], v) for k, v in impl.get_weights().items())
    flops = impl.flops_per_step(batch)
    assert flops is not None and 0.5 < flops / spec.train_flops(4) < 2
    assert impl.device_name() == "cpu"
    assert impl.trace_count() is None


# -- keras, one subprocess per backend --------------------------------------------------------

@pytest.mark.parametrize("key", SPECS)
def test_keras_param_counts(keras_probe, key):
    name, probe = keras_probe
    assert probe["params"][key] == SPECS[key][1], name


def test_keras_backend(keras_probe):
    name, probe = keras_probe
    expected = {"keras-jax": "jax", "keras-tf": "tensorflow"}[name]
    assert probe["backend"] == probe["impl_backend"] == expected
    assert probe["device"] == "cpu"
    assert probe["trace_count"] == 0


def test_keras_timed_calls_do_not_reset_metrics(keras_probe):
    """Equal work: the loss tracker is reset once before timing (its total and count zero), then
    counts all 4 steps of two timed calls (4 x 8 samples), as within one epoch of `fit`."""
    name, probe = keras_probe
    assert probe["metrics_after_reset"] and not any(probe["metrics_after_reset"]), name
    assert 32.0 in probe["metrics_after_two_calls"], (name, probe["metrics_after_two_calls"])


def test_keras_layer_config(keras_probe):
    _, probe = keras_probe
    layers = probe["layers"]
    assert layers["rescale"]["class"] == "Rescaling"
    assert layers["rescale"]["scale"] == pytest.approx(1 / 255)
    for conv in ("conv1", "conv2"):
        assert layers[conv]["class"] == "Conv2D"
        assert layers[conv]["padding"] == "same"
        assert layers[conv]["kernel_initializer"] == "LecunNormal"
    for pool in ("pool1", "pool2"):
        assert layers[pool]["class"] == "MaxPooling2D"
        assert layers[pool]["padding"] == "valid"
        assert tuple(layers[pool]["strides"]) == (1, 1)  # the origin's stride-1 pools, explicit
        assert tuple(layers[pool]["pool_size"]) == (2, 2)
    assert layers["dense1"]["kernel_initializer"] == "HeNormal"
    assert layers["dense2"]["kernel_initializer"] == "LecunNormal"
    for name in ("conv1", "conv2", "dense1", "dense2"):
        assert layers[name]["bias_initializer"] == "Zeros"
    assert probe["bias_abs_max"] == 0.0


def test_unknown_impl_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown implementation 'mxnet'.*flax, keras-jax, keras-tf"):
        registry.load("mxnet")


def test_bad_device_is_a_clear_error():
    with pytest.raises(ValueError, match="device"):
        registry.load("flax")("flax", ModelSpec(image_size=16), TrainConfig(), seed=0, device="tpu")
