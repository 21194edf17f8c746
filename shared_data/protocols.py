"""Split protocols.

``original``  TFDS train -> train (500 horses + 527 humans), TFDS test (the archive's
              validation/) -> test (128 + 128). The seed plays no part.
``resplit``   pool both splits and draw a new test split, stratified by class with
              ``np.random.default_rng([seed, RESPLIT_STREAM])``: the test split gets
              exactly as many images of each class as the original test split had
              (128 horses + 128 humans, so sizes stay 1027 / 256 and both classes are
              in both splits); everything else is train.

Within every split, examples are in the canonical order (label, then content key),
so a split's bytes depend only on WHICH images it holds; the training order is the
epoch iterator's job (:func:`shared_data.epoch_batches`).
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .sources import CLASS_NAMES, Raw

PROTOCOLS = ("original", "resplit")
RESPLIT_STREAM = 0x5E5F11  # separates the resplit draw from other uses of the same seed


def check_protocol(protocol) -> str:
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; pass --protocol {' or '.join(PROTOCOLS)}")
    return protocol


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. --seed 0")
    return int(seed)


def apply(raw: Raw, protocol: str, seed: int):
    """Return (x_train, y_train, x_test, y_test) for the protocol."""
    if protocol == "original":
        return raw.images["train"], raw.labels["train"], raw.images["test"], raw.labels["test"]
    x = np.concatenate([raw.images["train"], raw.images["test"]])
    y = np.concatenate([raw.labels["train"], raw.labels["test"]]).astype(np.int32)
    keys = list(raw.keys["train"]) + list(raw.keys["test"])
    rng = np.random.default_rng([seed, RESPLIT_STREAM])
    test_mask = np.zeros(len(y), dtype=bool)
    for label, cls in enumerate(CLASS_NAMES):
        members = np.flatnonzero(y == label)
        n_test = int(np.sum(raw.labels["test"] == label))
        if n_test < 1 or n_test >= len(members):
            raise DataError(f"cannot resplit: class {cls} has {len(members)} images in all, "
                            f"{n_test} in the original test split; both splits need each class")
        test_mask[rng.permutation(members)[:n_test]] = True

    def take(mask):
        idx = np.flatnonzero(mask)
        idx = np.asarray(sorted(idx, key=lambda i: (int(y[i]), keys[i])), dtype=np.int64)
        return np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])

    x_train, y_train = take(~test_mask)
    x_test, y_test = take(test_mask)
    return x_train, y_train, x_test, y_test
