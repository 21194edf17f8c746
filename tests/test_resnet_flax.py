"""The ResNet workload in Flax Linen and Flax NNX against an independent numpy network, BatchNorm's modes and
conventions checked in numpy, and XLA's SAME padding. (Counts, weight layout, the trajectories of loss and
running statistics against the other frameworks, and every worker call: the contract tests.)"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from benchmarks.contract import Implementation
from benchmarks.spec import ResNetSpec, TrainConfig
from impl_flax.resnet import FlaxResNetImpl
from impl_flax.resnet_nnx import FlaxNNXResNetImpl
from resnet_reference import forward

SPEC = ResNetSpec(image_size=16)
BATCH = 4
CLASSES = {"flax-resnet": FlaxResNetImpl, "flax-nnx-resnet": FlaxNNXResNetImpl}


@pytest.fixture(scope="module")
def impls() -> dict[str, Implementation]:
    return {name: cls(name, SPEC, TrainConfig(batch_size=BATCH), seed=0, device="cpu") for name, cls in CLASSES.items()}


@pytest.fixture(scope="module")
def weights(impls) -> dict[str, np.ndarray]:
    """Linen's initial weights with every BatchNorm's scale, bias and running statistics made non-trivial."""
    rng = np.random.default_rng(1)
    w = impls["flax-resnet"].get_weights()
    for key, value in w.items():
        part = key.rsplit("/", 1)[-1]
        if part in ("scale", "var"):
            w[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif part in ("bias", "mean") and not key.startswith("head/"):
            w[key] = rng.normal(0, 0.3, value.shape).astype(np.float32)
    return w


def batches(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 256, (BATCH, SPEC.image_size, SPEC.image_size, SPEC.channels), dtype=np.uint8),
             "label": rng.integers(0, SPEC.num_classes, BATCH).astype(np.int32)} for _ in range(n)]


def conv_numpy(x_NHWC: np.ndarray, kernel_HWIO: np.ndarray, stride: int, pad: tuple[int, int]) -> np.ndarray:
    """Cross-correlation as XLA's conv computes it, in float64, with `pad` (before, after) on H and W."""
    x = np.pad(np.asarray(x_NHWC, np.float64), ((0, 0), pad, pad, (0, 0)))
    k = kernel_HWIO.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", windows, np.asarray(kernel_HWIO, np.float64))


@pytest.mark.parametrize("name", CLASSES)
def test_only_float32(name):
    with pytest.raises(ValueError, match="float32 only"):
        CLASSES[name](name, SPEC, TrainConfig(precision="bf16"), seed=0)


@pytest.mark.parametrize("name", CLASSES)
def test_eval_logits_match_an_independent_numpy_network(impls, weights, name):
    impl = impls[name]
    impl.set_weights(weights)
    images = batches(1, seed=4)[0]["image"]
    np.testing.assert_allclose(impl.logits(images), forward(SPEC, weights, images), rtol=1e-5, atol=1e-5)


def test_training_mode_uses_batch_statistics(impls, weights):
    """Evaluation normalises with the running statistics, training with the batch's: with running statistics
    unlike the batch's, the logits differ; both frameworks agree in each mode."""
    linen, nnx_impl = impls["flax-resnet"], impls["flax-nnx-resnet"]
    for impl in (linen, nnx_impl):
        impl.set_weights(weights)
    images = batches(1, seed=6)[0]["image"]
    x = images.astype(np.float32) * np.float32(1 / 255)
    s = linen.state
    variables = {"params": s.params, "batch_stats": s.batch_stats}
    train_mode = jax.jit(lambda v, x: s.apply_fn(v, x, train=True, mutable=["batch_stats"])[0])
    train_linen = np.asarray(train_mode(variables, x))
    eval_linen = np.asarray(jax.jit(lambda v, x: s.apply_fn(v, x, train=False))(variables, x))
    graphdef = nnx_impl._graphdef  # the step's: training mode
    train_nnx = np.asarray(jax.jit(lambda state, x: nnx.merge(graphdef, state)["model"](x))(nnx_impl._state, x))
    np.testing.assert_allclose(eval_linen, linen.logits(images), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(train_nnx, train_linen, rtol=1e-5, atol=1e-5)
    assert not np.allclose(train_linen, linen.logits(images), rtol=1e-2, atol=1e-2)
    assert not np.allclose(train_nnx, nnx_impl.logits(images), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("name", CLASSES)
def test_stem_running_statistics_follow_keras_convention(impls, weights, name):
    """After one step: running = 0.9 running + 0.1 batch, with the biased batch variance, of the stem BN's input
    (the stem conv of the scaled images, SAME: padded 1 and 1), computed here in numpy."""
    impl = impls[name]
    impl.set_weights(weights)
    batch = batches(1, seed=7)[0]
    impl.sync(impl.train_step(impl.to_device(batch)))
    after = impl.get_weights()
    x = batch["image"].astype(np.float32) * np.float32(1 / 255)
    y = conv_numpy(x, weights["stem/conv/kernel"], stride=1, pad=(1, 1))
    mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))  # biased: divided by n
    m = SPEC.bn_momentum
    for part, batch_value in (("mean", mean), ("var", var)):
        np.testing.assert_allclose(after[f"stem/bn/{part}"], m * weights[f"stem/bn/{part}"] + (1 - m) * batch_value,
                                   rtol=1e-5, atol=1e-6, err_msg=part)
    n = y.size // y.shape[-1]
    unbiased = m * weights["stem/bn/var"] + (1 - m) * var * n / (n - 1)
    assert not np.allclose(after["stem/bn/var"], unbiased, rtol=1e-5, atol=0)


def test_stride2_same_pads_zero_before_one_after(impls, weights):
    """stage2/block1/conv1 (3x3, stride 2, on an even side) of the stage1 output, as numpy computes it with XLA's
    SAME padding (0 before, 1 after), in the Linen model and in the NNX one."""
    linen, nnx_impl = impls["flax-resnet"], impls["flax-nnx-resnet"]
    for impl in (linen, nnx_impl):
        impl.set_weights(weights)
    x = batches(1, seed=8)[0]["image"].astype(np.float32) * np.float32(1 / 255)
    s = linen.state
    _, captured = jax.jit(lambda v, x: s.apply_fn(v, x, train=False, capture_intermediates=True,
                                                  mutable=["intermediates"]))(
        {"params": s.params, "batch_stats": s.batch_stats}, x)
    inter = captured["intermediates"]
    stage1 = np.asarray(inter["stage1"]["__call__"][0])
    assert stage1.shape[1] % 2 == 0
    kernel = weights["stage2/block1/conv1/kernel"]
    expected = conv_numpy(stage1, kernel, stride=2, pad=(0, 1))
    assert not np.allclose(conv_numpy(stage1, kernel, stride=2, pad=(1, 1)), expected, atol=1e-3)
    np.testing.assert_allclose(np.asarray(inter["stage2"]["block1"]["conv1"]["__call__"][0]), expected,
                               rtol=1e-4, atol=1e-5)
    conv1 = nnx.merge(nnx_impl._graphdef, nnx_impl._state)["model"].stage2.block1.conv1
    np.testing.assert_allclose(np.asarray(conv1(stage1)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CLASSES)
def test_the_step_taken_apart_changes_nothing(impls, weights, name):
    """The breakdown's phases run on the live state and leave it, running statistics included, as it was."""
    impl = impls[name]
    impl.set_weights(weights)
    device_batch = impl.to_device(batches(1, seed=9)[0])
    before = impl.get_weights()
    phases = impl.phases(device_batch)
    assert set(phases) == {"forward", "forward_backward", "update"}
    for call in phases.values():
        jax.block_until_ready(call())
    after = impl.get_weights()
    assert all(np.array_equal(after[k], before[k]) for k in before)
