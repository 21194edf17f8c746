"""The epoch iterator: seeded order, optional seeded numpy augmentation.

Everything random here comes from numpy generators seeded by (seed, epoch), so
every framework sees the very same uint8 batches in the very same order.

* Order: ``np.random.default_rng((seed, epoch)).permutation(n)`` (or 0..n-1 when
  ``shuffle=False``).
* Last partial batch: ``drop_last=True`` (training) drops it, so every batch has
  the same shape and a compiled step never recompiles; ``drop_last=False``
  (evaluation) yields it, smaller. ``drop_last=True`` with fewer examples than
  ``batch_size`` would yield nothing and is an error.
* Augmentation (``augment=True``): a random horizontal flip (p=0.5) and a random
  shift of up to ``AUG_MAX_SHIFT`` (10%) of the side in each direction, the
  uncovered border filled by repeating the edge pixels. The parameters are drawn
  once per epoch per EXAMPLE (from ``default_rng((seed, epoch, AUG_STREAM))``,
  indexed by the example's position in ``images``), so an example's augmentation
  does not depend on batch size or order. Applied as one vectorised gather per
  batch.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .errors import DataError

AUG_MAX_SHIFT = 0.10
AUG_STREAM = 0xA06  # separates augmentation draws from the order draw


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng((int(seed), int(epoch))).permutation(n)


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def augment_params(n: int, image_size: int, *, seed: int, epoch: int):
    """(flip bool (n,), dy int (n,), dx int (n,)) for every example of an epoch."""
    rng = np.random.default_rng((int(seed), int(epoch), AUG_STREAM))
    m = int(round(AUG_MAX_SHIFT * image_size))
    flip = rng.random(n) < 0.5
    dy = rng.integers(-m, m + 1, size=n)
    dx = rng.integers(-m, m + 1, size=n)
    return flip, dy, dx


def apply_augmentation(images: np.ndarray, flip, dy, dx) -> np.ndarray:
    """out[b, y, x] = images[b, clip(y - dy), clip(x' - dx)], x' = W-1-x when flipped."""
    b, h, w = images.shape[:3]
    rows = np.clip(np.arange(h)[None, :] - np.asarray(dy)[:, None], 0, h - 1)  # (B, H)
    xs = np.where(np.asarray(flip)[:, None], np.arange(w)[::-1][None, :], np.arange(w)[None, :])
    cols = np.clip(xs - np.asarray(dx)[:, None], 0, w - 1)  # (B, W)
    return images[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def epoch_batches(images, labels, batch_size, *, seed, epoch, shuffle=True, augment=False,
                  drop_last=True) -> Iterator[dict]:
    """Yield {"image": uint8 (B,H,W,C), "label": int32 (B,)} for one epoch. See module doc."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(f"epoch_batches: images must be uint8 (N,H,W,C), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"epoch_batches: labels shape {labels.shape} does not match {images.shape[0]} images")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"epoch_batches: batch_size must be a positive integer, got {batch_size!r}")
    n = images.shape[0]
    if drop_last and n < batch_size:
        raise DataError(f"epoch_batches: batch_size {batch_size} exceeds the {n} examples, so drop_last=True "
                        f"would yield no batch; use a smaller batch size (or drop_last=False to evaluate)")
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    if augment:
        flip, dy, dx = augment_params(n, images.shape[1], seed=seed, epoch=epoch)
    labels = labels.astype(np.int32, copy=False)
    for i in range(num_batches(n, batch_size, drop_last)):
        idx = order[i * batch_size:(i + 1) * batch_size]
        x = images[idx]
        if augment:
            x = apply_augmentation(x, flip[idx], dy[idx], dx[idx])
        yield {"image": x, "label": labels[idx]}
