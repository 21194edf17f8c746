"""Framework-neutral training loop over the `benchmarks.contract.Implementation` interface.

    from benchmarks import registry
    from benchmarks.training import train
    impl = registry.load("keras-tf")("keras-tf", spec, cfg, seed=0)
    result = train(impl, dataset, cfg, epochs=10, seed=0,
                   initial_weights=registry.reference_weights(spec, 0))   # paired mode
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or inf; the run is stopped."""

    def __init__(self, impl: str, epoch: int, step: int, value: float):
        self.impl, self.epoch, self.step, self.value = impl, epoch, step, value
        super().__init__(
            f"{impl}: non-finite training loss {value!r} at epoch {epoch}, step {step} "
            f"(0-based); training stopped -- lower the learning rate or check the data"
        )


def evaluate_split(impl, images: np.ndarray, labels: np.ndarray, batch_size: int) -> dict:
    """Whole split, fixed order, last (smaller) batch included."""
    from shared_data import epoch_batches

    return impl.evaluate(
        epoch_batches(images, labels, batch_size, seed=0, epoch=0, shuffle=False, augment=False, drop_last=False)
    )


def train(
    impl,
    dataset,
    train_cfg,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    augment: bool = False,
    log: Callable[[str], Any] | None = print,
    initial_weights: dict[str, np.ndarray] | None = None,
    eval_batch_size: int | None = None,
) -> dict:
    """Train `impl` for E epochs over the shared iterator; per epoch: train loss/accuracy, test accuracy.

    - Order and augmentation come from `shared_data.epoch_batches(seed, epoch)`, so every framework
      sees the same batches; with `initial_weights` (paired mode) every framework also starts from
      the same weights (the reference's: `registry.reference_weights`).
    - No host sync inside an epoch: the per-step losses stay on the device and are read once at the
      end of the epoch, where they are checked: a NaN/inf loss raises `NonFiniteLoss`.
    - train_loss is the mean of the step losses of the epoch (weights changing under it, as `fit`
      reports it); train_accuracy/test_accuracy are measured after the epoch, in inference mode, on
      the whole unaugmented split.
    """
    from shared_data import epoch_batches

    epochs = train_cfg.epochs if epochs is None else epochs
    seed = train_cfg.seed if seed is None else seed
    bs = train_cfg.batch_size
    ebs = eval_batch_size or bs
    say = log or (lambda _msg: None)
    if initial_weights is not None:
        impl.set_weights(initial_weights)
    history = []
    t_start = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        pending = []
        for batch in epoch_batches(dataset.x_train, dataset.y_train, bs, seed=seed, epoch=epoch,
                                   shuffle=True, augment=augment, drop_last=True):
            pending.append(impl.train_step(impl.to_device(batch)))
        losses = [impl.sync(v) for v in pending]  # the epoch's one host sync
        t_train = time.perf_counter() - t0
        for step, value in enumerate(losses):
            if not math.isfinite(value):
                raise NonFiniteLoss(getattr(impl, "name", type(impl).__name__), epoch, step, value)
        t1 = time.perf_counter()
        train_eval = evaluate_split(impl, dataset.x_train, dataset.y_train, ebs)
        test_eval = evaluate_split(impl, dataset.x_test, dataset.y_test, ebs)
        t_eval = time.perf_counter() - t1
        if not (math.isfinite(train_eval["loss"]) and math.isfinite(test_eval["loss"])):
            raise NonFiniteLoss(getattr(impl, "name", type(impl).__name__), epoch, len(losses),
                                train_eval["loss"] if not math.isfinite(train_eval["loss"]) else test_eval["loss"])
        row = {
            "epoch": epoch,
            "steps": len(losses),
            "train_loss": float(np.mean(losses)),
            "train_accuracy": train_eval["accuracy"],
            "train_eval_loss": train_eval["loss"],
            "test_loss": test_eval["loss"],
            "test_accuracy": test_eval["accuracy"],
            "train_time_s": t_train,
            "eval_time_s": t_eval,
        }
        history.append(row)
        say(f"{getattr(impl, 'name', '?')} epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f} "
            f"train acc {row['train_accuracy']:.3f} test acc {row['test_accuracy']:.3f} "
            f"({t_train:.1f}s train, {t_eval:.1f}s eval)")
    return {
        "impl": getattr(impl, "name", None),
        "device": impl.device_name(),
        "seed": seed,
        "epochs": epochs,
        "augment": augment,
        "paired": initial_weights is not None,
        "train": train_cfg.to_dict(),
        "dataset": getattr(dataset, "fingerprint", None),
        "history": history,
        "final": {k: history[-1][k] for k in ("train_loss", "train_accuracy", "test_accuracy")} if history else {},
        "total_time_s": time.perf_counter() - t_start,
        "train_time_s": sum(r["train_time_s"] for r in history),
    }
